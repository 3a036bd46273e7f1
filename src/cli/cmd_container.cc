// archctl container list|checkpoint|finalize: the node's ARCH-enabled containers, found
// through the registry arch-runc keeps, checked against `runc state`.
#include <fmt/core.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>

#include "base/clock.h"
#include "commands.h"
#include "config/node_config.h"
#include "container/checkpoint.h"
#include "container/finalize.h"
#include "exit_codes.h"
#include "managed/activity_log.h"
#include "managed/container_registry.h"
#include "peer/group_peers.h"
#include "runtime/runc_client.h"
#include "runtime/runtime_path.h"
#include "store/checkpoint_store.h"

namespace arch::cli {
namespace {

std::string status_of(const Node& node, const ContainerRecord& rec) {
  auto st = RuncClient(node.runc, rec.runc_root).state(rec.id);
  return st ? st->status : "gone";
}

std::string latest_checkpoint(const ContainerRecord& rec) {
  auto list = CheckpointStore(rec.store, 2, rec.store_root).list(rec.owner, rec.key);
  if (!list) return "-";
  // list() gives each kind newest first: the first committed one is the latest.
  for (const auto& c : *list) {
    if (c.state == CheckpointState::kCommitted || c.state == CheckpointState::kVerified) {
      return c.name;
    }
  }
  return "-";
}

int run_list(bool json) {
  auto node = load_node();
  if (!node) return report_error(node.error());
  auto records = ContainerRegistry(node->config.state_dir).all();
  std::sort(records.begin(), records.end(), [](const auto& a, const auto& b) {
    return std::tie(a.ns, a.id) < std::tie(b.ns, b.id);
  });
  nlohmann::json out = nlohmann::json::array();
  if (!json) {
    fmt::print("{:<32} {:<9} {:<20} {:<40} {:<28} {}\n", "NAMESPACE/ID", "STATUS", "OWNER",
               "KEY (FROM)", "LATEST CHECKPOINT", "STORE");
  }
  for (const auto& rec : records) {
    std::string status = status_of(*node, rec), latest = latest_checkpoint(rec);
    if (json) {
      out.push_back({{"namespace", rec.ns},
                     {"id", rec.id},
                     {"owner", rec.owner},
                     {"key", rec.key},
                     {"key_source", rec.key_source.empty() ? "container-id" : rec.key_source},
                     {"workdir", rec.workdir},
                     {"status", status},
                     {"latest_checkpoint", latest},
                     {"store", rec.store},
                     {"bundle", rec.bundle}});
    } else {
      std::string source = rec.key_source.empty() ? "container-id" : rec.key_source;
      fmt::print("{:<32} {:<9} {:<20} {:<40} {:<28} {}\n", rec.ns + "/" + rec.id, status, rec.owner,
                 rec.key + " (" + source + ")", latest, rec.store);
    }
  }
  if (json) fmt::print("{}\n", out.dump(2));
  return 0;
}

Result<ContainerRecord> find_container(const Node& node, const std::string& ref) {
  auto slash = ref.find('/');
  std::string ns = slash == std::string::npos ? "" : ref.substr(0, slash);
  std::string id = slash == std::string::npos ? ref : ref.substr(slash + 1);
  std::vector<ContainerRecord> matches;
  for (auto& rec : ContainerRegistry(node.config.state_dir).all()) {
    if (rec.id == id && (ns.empty() || rec.ns == ns)) matches.push_back(rec);
  }
  if (matches.empty()) return fail("no ARCH-enabled container " + ref + " on this node");
  if (matches.size() > 1) return fail(ref + " is ambiguous: give NAMESPACE/ID");
  return matches.front();
}

std::string timings_text(const std::map<std::string, double>& t) {
  std::string out;
  for (const char* k : {"freeze", "rootfs", "dump", "commit", "end", "total"}) {
    if (auto it = t.find(k); it != t.end()) out += fmt::format("{}={:.0f}ms ", k, it->second);
  }
  return out;
}

// Records a checkpoint's result in the node's activity log, where archd counts it (best
// effort: the metrics must never fail a checkpoint).
int run_checkpoint(const std::string& ref, bool leave_running, bool json, bool verbose) {
  auto node = load_node();
  if (!node) return report_error(node.error());
  auto rec = find_container(*node, ref);
  if (!rec) return report_error(rec.error());
  auto t0 = std::chrono::steady_clock::now();
  auto out = checkpoint_container(*rec, node->config, node->runc, {leave_running, 60});
  record_checkpoint_activity(node->config.state_dir, "archctl", *rec, out.has_value(), ms_since(t0),
                             out ? out->bytes : 0, out ? out->path : out.error().message());
  if (!out) {
    // The first line says what happened and what to do; CRIU's and runc's own lines follow
    // it, shown with --verbose (and kept in the store's failed-*/ with the log).
    Error e = out.error().wrap(rec->ns + "/" + rec->id);
    std::string text = e.message();
    if (!verbose && text.find('\n') != std::string::npos) {
      e = Error(e.kind(), text.substr(0, text.find('\n')) + " (--verbose: CRIU's lines)");
    }
    return report_error(e);
  }
  if (json) {
    fmt::print("{}\n", nlohmann::json{{"namespace", rec->ns},
                                      {"id", rec->id},
                                      {"checkpoint", out->path},
                                      {"timings_ms", out->timings_ms},
                                      {"notes", out->notes}}
                           .dump(2));
  } else {
    fmt::print("{}/{}: checkpointed to {} ({})\n", rec->ns, rec->id, out->path,
               timings_text(out->timings_ms));
  }
  return 0;
}

int run_finalize(double deadline_s, int parallel, const std::string& pre_copy,
                 const std::string& order, bool plan, bool json, bool quiet) {
  auto node = load_node();
  if (!node) return report_error(node.error());
  FinalizeOptions options;
  options.deadline_seconds = deadline_s;
  options.parallel = parallel > 0 ? parallel : node->config.agent.finalize_parallel;
  if (!pre_copy.empty()) {
    auto mode = parse_pre_copy_mode(pre_copy);
    if (!mode) return report_error(mode.error().wrap("--pre-copy"));
    options.pre_copy = *mode;
  }
  options.freeze_first = order != "one-by-one";
  options.plan = plan;
  // Progress on a terminal (stderr, so stdout stays the table or the JSON): a drain under
  // a reclaim notice must not look hung for the minute it takes.
  if (!quiet && ::isatty(STDERR_FILENO) == 1) {
    auto total = std::make_shared<std::size_t>(0);
    auto done = std::make_shared<std::size_t>(0);
    options.on_start = [total, deadline_s](const std::vector<ContainerRecord>& chosen) {
      *total = chosen.size();
      fmt::print(stderr, "finalizing {} containers, deadline {:.0f} s\n", chosen.size(),
                 deadline_s);
    };
    options.on_result = [total, done](const FinalizeResult& r) {
      fmt::print(stderr, "[{}/{}] {}/{}: {} in {:.2f} s\n", ++*done, *total, r.container.ns,
                 r.container.id, to_string(r.outcome), r.seconds);
    };
  }
  // Every result also goes to the node's activity log (archd counts them).
  options.on_result = [progress = std::move(options.on_result),
                       config = node->config](const FinalizeResult& r) {
    if (r.outcome != FinalizeOutcome::kSkipped) {
      record_checkpoint_activity(config.state_dir, "finalize", r.container,
                                 r.outcome == FinalizeOutcome::kCheckpointed, r.seconds * 1000,
                                 r.bytes, r.detail);
    }
    if (progress) progress(r);
  };
  if (!node->config.peers.nodes.empty()) {  // a group's members on other nodes: with them
    options.group_checkpoint = [&node](const NodeGroup& g,
                                       std::chrono::steady_clock::time_point deadline) {
      return checkpoint_group_for_drain(g, node->config, node->runc, deadline);
    };
  }
  FinalizeReport report = finalize_node(node->config, node->runc, options);
  std::size_t failed = report.not_checkpointed();
  if (json) {
    fmt::print("{}\n", finalize_report_json(report).dump(2));
    return failed == 0 ? kExitOk : kExitPartial;
  }
  for (const auto& [store, basis] : report.plans) fmt::print("plan for {}: {}\n", store, basis);
  fmt::print("{:<40} {:<13} {:>9} {:>10} {:>10}  {}\n", "NAMESPACE/ID", "RESULT", "SECONDS",
             "PREDICTED", "SIZE", "DETAIL");
  auto mib = [](uint64_t b) { return fmt::format("{:.0f}M", static_cast<double>(b) / (1 << 20)); };
  for (const auto& r : report.containers) {
    std::string detail = r.detail.substr(0, r.detail.find('\n'));
    std::string predicted =
        r.predicted_finish_s > 0
            ? fmt::format("{:.1f}s/{}", r.predicted_finish_s, mib(r.predicted_bytes))
            : "-";
    fmt::print("{:<40} {:<13} {:>9.2f} {:>10} {:>10}  {}\n", r.container.ns + "/" + r.container.id,
               to_string(r.outcome), r.seconds, predicted, r.bytes > 0 ? mib(r.bytes) : "-",
               detail);
    for (const auto& note : r.notes) fmt::print("{:<40} note: {}\n", "", note);
  }
  fmt::print("{} containers, {} checkpointed, {} not, in {:.2f} s ({} at once)\n",
             report.containers.size(), report.containers.size() - failed, failed,
             report.total_seconds, report.parallel);
  return failed == 0 ? kExitOk : kExitPartial;
}

}  // namespace

Handler add_container_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("container", "ARCH-enabled containers on this node");
  cmd->require_subcommand(1);
  struct Opts {
    std::string ref;
    bool leave_running = false;
    bool verbose = false;
    std::string output;
    double deadline = 110;
    int parallel = 0;
    std::string pre_copy;
    std::string order = "freeze-first";
    std::string plan = "on";
    bool quiet = false;
    std::string to;
    bool handoff = false;
  };
  auto o = std::make_shared<Opts>();
  auto* list =
      cmd->add_subcommand("list", "ARCH-enabled containers, their state and latest checkpoint");
  add_output_option(list, o->output);
  auto* ckpt = cmd->add_subcommand("checkpoint", "Checkpoint one container (it then ends)");
  ckpt->add_option("container", o->ref, "NAMESPACE/ID (or ID when unambiguous)")->required();
  ckpt->add_flag("--leave-running", o->leave_running, "Keep it running after the checkpoint");
  ckpt->add_flag("-v,--verbose", o->verbose, "On failure, also CRIU's and runc's own lines");
  add_output_option(ckpt, o->output);
  auto* fin = cmd->add_subcommand("finalize", "Checkpoint every running ARCH-enabled container");
  fin->add_option("--deadline", o->deadline, "Seconds; containers not started by then are skipped")
      ->capture_default_str();
  fin->add_option("--parallel", o->parallel,
                  "Containers dumped at once (0: [agent] finalize_parallel, else two per CPU)")
      ->capture_default_str();
  fin->add_flag("--pre-copy{on}", o->pre_copy,
                "Pre-dump running containers first, then dump what changed: --pre-copy (on), "
                "--pre-copy=off, --pre-copy=auto (when the kernel tracks dirty pages and the "
                "deadline leaves room); default: [checkpoint] pre_copy")
      ->check(CLI::IsMember({"on", "off", "auto"}));
  fin->add_option("--order", o->order,
                  "freeze-first: freeze all, then dump (default); one-by-one: freeze each "
                  "just before its dump")
      ->check(CLI::IsMember({"freeze-first", "one-by-one"}))
      ->capture_default_str();
  fin->add_option("--plan", o->plan,
                  "on: attempt only what the store's measured rate lets finish before the "
                  "deadline, smallest first (default); off: every container, in the pool")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str();
  fin->add_flag("-q,--quiet", o->quiet, "No progress lines on a terminal");
  add_output_option(fin, o->output);
  auto* mig = cmd->add_subcommand(
      "migrate", "Move one running container to another node (post-copy, over the peer channel)");
  mig->add_option("container", o->ref, "NAMESPACE/ID")->required();
  mig->add_option("--to", o->to, "The destination: a [peers] node")->required();
  mig->add_flag("--handoff", o->handoff,
                "Leave a full sealed generation on the destination for the orchestrator's "
                "reschedule instead of re-creating the container (the default for Kubernetes, "
                "ECS and AWS Batch containers)");
  add_output_option(mig, o->output);
  return [=] {
    bool json = o->output == "json";
    if (list->parsed()) return run_list(json);
    if (ckpt->parsed()) return run_checkpoint(o->ref, o->leave_running, json, o->verbose);
    if (mig->parsed()) return run_migrate(o->ref, o->to, o->handoff, json);
    return run_finalize(o->deadline, o->parallel, o->pre_copy, o->order, o->plan == "on", json,
                        o->quiet);
  };
}

}  // namespace arch::cli
