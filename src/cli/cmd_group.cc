// archctl group list|checkpoint: containers of one owner that name the same ARCH_GROUP,
// checkpointed as one unit (container/group_checkpoint.h).
#include <fmt/core.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "commands.h"
#include "container/group_checkpoint.h"
#include "exit_codes.h"
#include "managed/activity_log.h"
#include "peer/group_peers.h"
#include "runtime/runc_client.h"
#include "runtime/runtime_path.h"
#include "store/group_record.h"

namespace arch::cli {
namespace {

// The newest complete group generation's directory name, or "-".
std::string latest_generation(const NodeConfig& config, const NodeGroup& g) {
  auto keys = load_node_keyring(config);
  if (!keys || g.members.empty()) return "-";
  CheckpointStore store(g.members[0].store, config.keep, g.members[0].store_root,
                        std::make_shared<const Keyring>(std::move(*keys)));
  auto records = group_records(store, g.owner, g.name);
  if (!records || records->empty()) return "-";
  const auto& path = records->front().path;
  return path.substr(path.rfind('/') + 1);
}

int run_list(bool json) {
  auto node = load_node();
  if (!node) return report_error(node.error());
  std::vector<std::string> problems;
  auto groups = node_groups(node->config, &problems);
  for (const auto& p : problems) fmt::print(stderr, "archctl: warning: {}\n", p);
  nlohmann::json out = nlohmann::json::array();
  if (!json) fmt::print("{:<20} {:<24} {:<28} {}\n", "OWNER", "GROUP", "LATEST", "MEMBERS");
  for (const auto& g : groups) {
    std::string latest = latest_generation(node->config, g);
    nlohmann::json members = nlohmann::json::array();
    std::string text;
    for (const auto& m : g.members) {
      auto st = RuncClient(node->runc, m.runc_root).state(m.id);
      std::string status = st ? st->status : "gone";
      members.push_back({{"namespace", m.ns}, {"id", m.id}, {"key", m.key}, {"status", status}});
      text += fmt::format("{}{}/{} ({})", text.empty() ? "" : ", ", m.ns, m.id, status);
    }
    if (json) {
      out.push_back({{"owner", g.owner},
                     {"group", g.name},
                     {"latest_generation", latest},
                     {"members", members}});
    } else {
      fmt::print("{:<20} {:<24} {:<28} {}\n", g.owner, g.name, latest, text);
    }
  }
  if (json) fmt::print("{}\n", out.dump(2));
  return 0;
}

// NAME or OWNER/NAME: the owner is the one of the containers naming the group on this node
// (as `container checkpoint` takes it from the container); several: give OWNER/NAME.
Result<NodeGroup> find_group(const NodeConfig& config, const std::string& ref) {
  auto slash = ref.rfind('/');
  std::string owner = slash == std::string::npos ? "" : ref.substr(0, slash);
  std::string name = slash == std::string::npos ? ref : ref.substr(slash + 1);
  if (auto ok = validate_group_name(name); !ok) return std::unexpected(ok.error());
  std::vector<NodeGroup> matches;
  for (auto& g : node_groups(config)) {
    if (g.name == name && (owner.empty() || g.owner == owner)) matches.push_back(std::move(g));
  }
  if (matches.empty()) return fail("no container group " + ref + " on this node");
  if (matches.size() > 1) return fail(ref + " is ambiguous (several owners): give OWNER/NAME");
  return matches.front();
}

// A group whose members may live on the [peers] nodes too (peer/group_peers.h).
// One activity-log record per member (archd counts them): `ms` when the group's checkpoint
// was committed, none when it failed with `detail`.
void record_group_activity(const NodeConfig& config, const NodeGroup& group,
                           std::optional<double> ms, const std::string& detail) {
  for (const auto& m : group.members) {
    (void)append_activity(config.state_dir, {.what = "checkpoint",
                                             .source = "archctl group",
                                             .outcome = ms ? "ok" : "failed",
                                             .ns = m.ns,
                                             .id = m.id,
                                             .key = m.key,
                                             .ms = ms.value_or(0),
                                             .bytes = 0,
                                             .detail = detail});
  }
}

int run_cross_node_checkpoint(const Node& node, const NodeGroup& group,
                              const CheckpointOptions& options, bool json) {
  auto out = checkpoint_group_across_nodes(group, node.config, node.runc, options);
  record_group_activity(node.config, group, out ? std::optional(out->total_ms) : std::nullopt,
                        out ? out->record : out.error().message());
  if (!out) return report_error(out.error());
  if (json) {
    nlohmann::json members = nlohmann::json::array();
    for (const auto& m : out->members) {
      members.push_back({{"node", m.node},
                         {"namespace", m.ns},
                         {"id", m.id},
                         {"key", m.key},
                         {"checkpoint", m.checkpoint},
                         {"timings_ms", m.timings_ms}});
    }
    fmt::print("{}\n", nlohmann::json{{"owner", out->owner},
                                      {"group", out->name},
                                      {"generation", out->generation},
                                      {"record", out->record},
                                      {"nodes", out->nodes},
                                      {"frozen_ms", out->frozen_ms},
                                      {"total_ms", out->total_ms},
                                      {"members", members}}
                           .dump(2));
  } else {
    fmt::print(
        "group {}/{}: checkpointed as generation {} ({} members on {} nodes, frozen "
        "{:.0f} ms)\n",
        out->owner, out->name, out->generation, out->members.size(), out->nodes.size(),
        out->frozen_ms);
    for (const auto& m : out->members) {
      fmt::print("  {} {}/{}: {}\n", m.node, m.ns, m.id, m.checkpoint);
    }
  }
  return 0;
}

int run_checkpoint(const std::string& ref, bool leave_running, bool local_only, bool json) {
  auto node = load_node();
  if (!node) return report_error(node.error());
  auto group = find_group(node->config, ref);
  if (!group) return report_error(group.error());
  CheckpointOptions options;
  options.leave_running = leave_running;
  if (!local_only && !node->config.peers.nodes.empty()) {
    return run_cross_node_checkpoint(*node, *group, options, json);
  }
  auto out = checkpoint_group(*group, node->config, node->runc, options);
  record_group_activity(node->config, *group, out ? std::optional(out->total_ms) : std::nullopt,
                        out ? out->record : out.error().message());
  if (!out) return report_error(out.error());
  if (json) {
    nlohmann::json members = nlohmann::json::array();
    for (const auto& m : out->members) {
      members.push_back({{"namespace", m.container.ns},
                         {"id", m.container.id},
                         {"key", m.container.key},
                         {"checkpoint", m.outcome.path},
                         {"timings_ms", m.outcome.timings_ms}});
    }
    fmt::print("{}\n", nlohmann::json{{"owner", out->owner},
                                      {"group", out->name},
                                      {"generation", out->generation},
                                      {"record", out->record},
                                      {"frozen_ms", out->frozen_ms},
                                      {"total_ms", out->total_ms},
                                      {"members", members}}
                           .dump(2));
  } else {
    fmt::print("group {}/{}: checkpointed as generation {} ({} members, frozen {:.0f} ms)\n",
               out->owner, out->name, out->generation, out->members.size(), out->frozen_ms);
    for (const auto& m : out->members) {
      fmt::print("  {}/{}: {}\n", m.container.ns, m.container.id, m.outcome.path);
    }
  }
  return 0;
}

}  // namespace

Handler add_group_command(CLI::App& app) {
  auto* cmd =
      app.add_subcommand("group", "Container groups (ARCH_GROUP, Kubernetes pods) on this node");
  cmd->require_subcommand(1);
  struct Opts {
    std::string ref, output;
    bool leave_running = false;
    bool local_only = false;
  };
  auto o = std::make_shared<Opts>();
  auto* list = cmd->add_subcommand("list", "Groups, their members and newest complete generation");
  add_output_option(list, o->output);
  auto* ckpt = cmd->add_subcommand("checkpoint", "Checkpoint every member as one unit");
  ckpt->add_option("group", o->ref, "NAME, or OWNER/NAME when several owners use it")->required();
  ckpt->add_flag("--leave-running", o->leave_running, "Keep the members running afterwards");
  ckpt->add_flag("--local", o->local_only,
                 "Only this node's members, even when [peers] nodes lists other nodes");
  add_output_option(ckpt, o->output);
  return [=] {
    bool json = o->output == "json";
    if (list->parsed()) return run_list(json);
    return run_checkpoint(o->ref, o->leave_running, o->local_only, json);
  };
}

}  // namespace arch::cli
