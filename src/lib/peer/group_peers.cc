// GroupPeers: the participant's session and the coordinator of a cross-node group
// checkpoint. See group_peers.h for the protocol.
#include "peer/group_peers.h"

#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <optional>
#include <thread>

#include "base/clock.h"
#include "base/names.h"
#include "managed/activity_log.h"
#include "peer/peer_cert.h"
#include "store/group_record.h"
#include "store/node_key.h"

namespace arch {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

std::chrono::milliseconds peer_timeout(const NodeConfig& config) {
  return std::chrono::seconds(config.peers.timeout_seconds);
}

// After every node froze: the time for what was in flight between members to land.
constexpr auto kSettle = std::chrono::milliseconds(20);

json member_json(const ContainerRecord& m, uint64_t predicted_bytes) {
  return {{"ns", m.ns},
          {"id", m.id},
          {"key", m.key},
          {"store", m.store},
          {"store_root", m.store_root},
          {"predicted_bytes", predicted_bytes}};
}

json entry_json(const GroupMember& m) {
  return {{"key", m.key},
          {"container_id", m.container_id},
          {"checkpoint", m.checkpoint},
          {"seal_mac", m.seal_mac}};
}

// The owner and group a request names, checked.
Result<std::pair<std::string, std::string>> named_group(const json& request) {
  if (!request.contains("owner") || !request["owner"].is_string() || !request.contains("group") ||
      !request["group"].is_string()) {
    return fail(ErrorKind::kInvalidInput, "owner and group are required");
  }
  std::string owner = request["owner"], group = request["group"];
  if (auto ok = validate_owner(owner); !ok) return std::unexpected(ok.error());
  if (auto ok = validate_group_name(group); !ok) return std::unexpected(ok.error());
  return std::pair{owner, group};
}

// This node's members of owner/group (from its own registry only); none: empty.
NodeGroup local_group(const NodeConfig& config, const std::string& owner, const std::string& name) {
  for (auto& g : node_groups(config)) {
    if (g.owner == owner && g.name == name) return g;
  }
  return NodeGroup{owner, name, {}};
}

// Whether the sealed record of this group generation is committed in the members' store and
// names every one of `mine` with its MAC.
bool record_committed(const NodeConfig& config, const ContainerRecord& any,
                      const std::string& owner, const std::string& name,
                      const std::string& generation, const std::vector<GroupMember>& mine) {
  auto keys = load_node_keyring(config);
  if (!keys) return false;
  CheckpointStore store(any.store, config.keep, any.store_root,
                        std::make_shared<const Keyring>(std::move(*keys)));
  auto records = group_records(store, owner, name);
  if (!records) return false;
  for (const auto& r : *records) {
    if (r.generation != generation) continue;
    return std::all_of(mine.begin(), mine.end(), [&](const GroupMember& m) {
      const GroupMember* in = r.member(m.key);
      return in != nullptr && in->checkpoint == m.checkpoint && in->seal_mac == m.seal_mac;
    });
  }
  return false;
}

void log_members(const NodeConfig& config, const std::vector<ContainerRecord>& members,
                 const std::string& coordinator, bool ok, const std::string& detail) {
  for (const auto& m : members) {
    (void)append_activity(config.state_dir, {.what = "checkpoint",
                                             .source = "peer " + coordinator,
                                             .outcome = ok ? "ok" : "failed",
                                             .ns = m.ns,
                                             .id = m.id,
                                             .key = m.key,
                                             .ms = 0,
                                             .bytes = 0,
                                             .detail = detail});
  }
}

// Runs `work` while sending {"working": true} every third of the timeout.
template <class T, class F>
T while_working(PeerConnection& conn, std::chrono::milliseconds timeout, F work) {
  auto future = std::async(std::launch::async, work);
  while (future.wait_for(timeout / 3) != std::future_status::ready) {
    (void)conn.send_json({{"working", true}});
  }
  return future.get();
}

// A participant's session after its members are frozen.
class Session {
 public:
  Session(PeerConnection& conn, const NodeConfig& config, GroupMembersCheckpoint run,
          std::string owner, std::string name, const PeerLogger& log,
          std::optional<Clock::time_point> stop_dumps_at)
      : conn_(conn),
        config_(config),
        run_(std::move(run)),
        owner_(std::move(owner)),
        name_(std::move(name)),
        log_(log),
        stop_dumps_at_(stop_dumps_at) {}

  void serve() {
    for (;;) {
      auto req = conn_.receive_json();
      if (!req) return coordinator_lost(req.error().message());
      std::string op = req->is_object() ? req->value("op", "") : "";
      if (op == "group.keepalive") continue;
      if (op == "group.dump" && !dumped_) {
        if (!dump()) return;
      } else if (op == "group.commit" && dumped_) {
        return commit(*req);
      } else if (op == "group.abort") {
        abort("the coordinator aborted");
        (void)conn_.send_json({{"aborted", true}});
        return;
      } else {
        abort("unexpected request " + op);
        (void)conn_.send_json({{"error", "unexpected request \"" + op + "\": aborted"}});
        return;
      }
    }
  }

 private:
  bool dump() {
    auto t = peer_timeout(config_);
    // The coordinator's deadline (a drain): a dump still running then is given up here.
    auto out = while_working<Result<std::vector<GroupMember>>>(
        conn_, t, [&] { return run_.dump_until(stop_dumps_at_); });
    if (!out) {
      abort("dump failed: " + out.error().message());
      (void)conn_.send_json(
          {{"error", fmt::format("node {}: not checkpointed, every member "
                                 "thawed and still running: {}",
                                 peer_node_name(config_), out.error().message())}});
      return false;
    }
    dumped_ = true;
    entries_ = std::move(*out);
    json members = json::array();
    for (const auto& e : entries_) members.push_back(entry_json(e));
    if (!conn_.send_json({{"members", members}})) {
      coordinator_lost("reply lost");
      return false;
    }
    return true;
  }

  void commit(const json& req) {
    std::string generation = req.value("generation", "");
    // Only on a record in the store that names this generation and these member generations.
    if (generation != run_.generation() ||
        !record_committed(config_, run_.members().front(), owner_, name_, generation, entries_)) {
      abort("commit without a committed group record");
      (void)conn_.send_json(
          {{"error", "no committed group record of generation " + run_.generation() +
                         " names this node's members: "
                         "aborted"}});
      return;
    }
    std::vector<std::string> keep =
        group_generations_to_keep(config_, run_.members().front(), owner_, name_, generation);
    auto ended = run_.end(keep);
    log_members(config_, run_.members(), conn_.peer_name(), true,
                "group " + name_ + " generation " + generation);
    if (!ended) {
      (void)conn_.send_json({{"error", ended.error().message()}});
      return;
    }
    json out = json::array();
    for (const auto& m : *ended) {
      out.push_back({{"ns", m.container.ns},
                     {"id", m.container.id},
                     {"key", m.container.key},
                     {"checkpoint", m.outcome.path},
                     {"timings_ms", m.outcome.timings_ms}});
    }
    log_(LogLevel::kInfo, fmt::format("group {}/{} generation {}: {} member(s) checkpointed for "
                                      "coordinator {}",
                                      owner_, name_, generation, out.size(), conn_.peer_name()));
    (void)conn_.send_json({{"ended", out}});
  }

  void abort(const std::string& why) {
    run_.abort();
    log_members(config_, run_.members(), conn_.peer_name(), false, why);
    log_(LogLevel::kWarn, fmt::format("group {}/{} generation {}: aborted, members thawed: {}",
                                      owner_, name_, run_.generation(), why));
  }

  // The coordinator is gone or silent: the store decides.
  void coordinator_lost(const std::string& why) {
    if (dumped_ && record_committed(config_, run_.members().front(), owner_, name_,
                                    run_.generation(), entries_)) {
      auto keep = group_generations_to_keep(config_, run_.members().front(), owner_, name_,
                                            run_.generation());
      (void)run_.end(keep);
      log_members(
          config_, run_.members(), conn_.peer_name(), true,
          "group " + name_ + " generation " + run_.generation() + " (committed; coordinator lost)");
      log_(LogLevel::kWarn,
           fmt::format("group {}/{}: coordinator {} lost ({}), its record is committed: "
                       "members ended",
                       owner_, name_, conn_.peer_name(), why));
      return;
    }
    abort("coordinator " + conn_.peer_name() + " lost: " + why);
  }

  PeerConnection& conn_;
  const NodeConfig& config_;
  GroupMembersCheckpoint run_;
  std::string owner_, name_;
  const PeerLogger& log_;
  std::optional<Clock::time_point> stop_dumps_at_;
  bool dumped_ = false;
  std::vector<GroupMember> entries_;
};

void reply_error(PeerConnection& conn, const Error& e) {
  (void)conn.send_json({{"error", e.message()}});
}

}  // namespace

void serve_group_request(PeerConnection& conn, const json& request, const NodeConfig& config,
                         const std::string& runc, const PeerLogger& log) {
  auto received = Clock::now();
  std::string op = request.value("op", "");
  auto named = named_group(request);
  if (!named) return reply_error(conn, named.error());
  const auto& [owner, name] = *named;
  NodeGroup group = local_group(config, owner, name);
  if (op == "group.members") {
    json members = json::array();
    for (const auto& m : group.members) {
      members.push_back(member_json(m, predict_member_bytes(m, runc)));
    }
    (void)conn.send_json({{"node", peer_node_name(config)}, {"members", members}});
    return;
  }
  if (op != "group.freeze") return reply_error(conn, Error("unknown request " + op));
  // The members the coordinator was told of must be the ones here now.
  std::vector<std::string> expected = request.value("keys", std::vector<std::string>{});
  std::vector<std::string> have;
  for (const auto& m : group.members) have.push_back(m.key);
  std::sort(expected.begin(), expected.end());
  std::sort(have.begin(), have.end());
  if (have.empty() || have != expected) {
    return reply_error(
        conn, Error(ErrorKind::kConflict, "the group's members on node " + peer_node_name(config) +
                                              " changed since they were listed"));
  }
  std::string generation = request.value("generation", "");
  if (auto ok = validate_name("group generation", generation); !ok) {
    return reply_error(conn, ok.error());
  }
  // A drain's deadline, as the time left (the nodes' clocks need not agree).
  std::optional<Clock::time_point> stop_dumps_at;
  if (request.contains("stop_dumps_in_ms") && request["stop_dumps_in_ms"].is_number()) {
    stop_dumps_at = received + std::chrono::milliseconds(std::max<int64_t>(
                                   0, request["stop_dumps_in_ms"].get<int64_t>()));
  }
  CheckpointOptions options;
  options.leave_running = request.value("leave_running", false);
  if (stop_dumps_at) options.lock_timeout_s = lock_timeout_before(*stop_dumps_at);
  auto run = GroupMembersCheckpoint::begin(group, config, runc, options, generation);
  if (!run) return reply_error(conn, run.error());
  if (auto ok = run->freeze(); !ok) return reply_error(conn, ok.error());
  log(LogLevel::kInfo, fmt::format("group {}/{} generation {}: {} member(s) frozen for "
                                   "coordinator {}",
                                   owner, name, generation, have.size(), conn.peer_name()));
  if (!conn.send_json({{"frozen", have}})) {
    run->abort();
    return;
  }
  Session(conn, config, std::move(*run), owner, name, log, stop_dumps_at).serve();
}

// ------------------------------------------------------------------ coordinator

namespace {

// The next reply that is not a "working" frame.
Result<json> await_reply(PeerConnection& conn) {
  for (;;) {
    auto j = conn.receive_json();
    if (!j) return j;
    if (j->is_object() && j->contains("working")) continue;
    if (j->is_object() && j->contains("error") && (*j)["error"].is_string()) {
      return fail(fmt::format("node {}: {}", conn.peer_name(), (*j)["error"].get<std::string>()));
    }
    return j;
  }
}

struct Participant {
  std::string node;
  std::optional<PeerConnection> conn;
  std::vector<std::string> keys;
  std::vector<GroupMember> entries;
  json ended;
  std::optional<Error> error;
  bool in_session = false;
};

// Runs `f(p)` for every participant, each in a thread of its own, and `local()` here.
template <class F, class L>
void side_by_side(std::vector<Participant>& ps, F f, L local) {
  std::vector<std::jthread> threads;
  for (auto& p : ps) threads.emplace_back([&f, &p] { f(p); });
  local();
}

std::string first_error(const std::vector<Participant>& ps, const std::string& local) {
  std::string out = local;
  for (const auto& p : ps) {
    if (p.error) out += (out.empty() ? "" : "; ") + p.error->message();
  }
  return out;
}

void abort_all(std::vector<Participant>& ps, GroupMembersCheckpoint* run) {
  side_by_side(
      ps,
      [](Participant& p) {
        if (p.in_session && p.conn) {
          p.conn->set_timeout(std::chrono::seconds(10));
          (void)p.conn->send_json({{"op", "group.abort"}});
          (void)await_reply(*p.conn);
        }
        p.in_session = false;
      },
      [&] {
        if (run != nullptr) run->abort();
      });
}

Result<SslCtxPtr> client_context(const NodeConfig& config) {
  auto id = ensure_peer_identity(config, false);
  if (!id) return std::unexpected(id.error());
  return make_peer_context(*id, false);
}

Result<PeerConnection> dial_node(const SslCtxPtr& ctx, const NodeConfig& config,
                                 const NodeConfig::Peers::Node& n) {
  return PeerConnection::connect(ctx, n.name, n.host, n.port, peer_timeout(config));
}

}  // namespace

Result<json> ping_peer(const NodeConfig& config, const std::string& name) {
  auto it = std::find_if(config.peers.nodes.begin(), config.peers.nodes.end(),
                         [&](const auto& n) { return n.name == name; });
  if (it == config.peers.nodes.end()) {
    return fail(ErrorKind::kNotFound, "no node " + name + " in [peers] nodes");
  }
  auto ctx = client_context(config);
  if (!ctx) return std::unexpected(ctx.error());
  auto t0 = Clock::now();
  auto conn = dial_node(*ctx, config, *it);
  if (!conn) return std::unexpected(conn.error());
  auto reply = conn->call({{"op", "ping"}, {"from", peer_node_name(config)}});
  if (!reply) return reply;
  (*reply)["rtt_ms"] = ms_since(t0);
  (*reply)["address"] = fmt::format("{}:{}", it->host, it->port);
  return reply;
}

Result<CrossNodeOutcome> checkpoint_group_across_nodes(const NodeGroup& local,
                                                       const NodeConfig& config,
                                                       const std::string& runc,
                                                       CheckpointOptions options,
                                                       const CrossNodeLimits& limits) {
  auto t0 = Clock::now();
  // Connecting may take no longer than the deadline leaves (an unreachable node).
  auto connect_timeout = peer_timeout(config);
  if (limits.deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*limits.deadline - t0);
    connect_timeout = std::clamp(left, std::chrono::milliseconds(100), connect_timeout);
  }
  auto fail_group = [&](const std::string& why) {
    return fail(fmt::format("group {}/{}: {}", local.owner, local.name, why));
  };
  if (local.members.empty()) return fail_group("no member on this node");
  const ContainerRecord& first = local.members.front();
  std::string self = peer_node_name(config);
  auto ctx = client_context(config);
  if (!ctx) return std::unexpected(ctx.error().wrap("peer channel"));
  // 1. Every peer's members of the group (nothing frozen yet; an unreachable peer fails it).
  std::vector<Participant> ps;
  std::vector<std::string> all_keys;
  for (const auto& m : local.members) all_keys.push_back(m.key);
  uint64_t predicted = 0;
  for (const auto& n : config.peers.nodes) {
    if (n.name == self) continue;
    auto conn = PeerConnection::connect(*ctx, n.name, n.host, n.port, connect_timeout);
    if (conn) conn->set_timeout(peer_timeout(config));
    if (!conn) {
      return fail_group(conn.error().message() +
                        (limits.deadline
                             ? " (its members cannot be known: no generation of the group is "
                               "committed, every member keeps running)"
                             : " (its members cannot be known; `--local` checkpoints this "
                               "node's only)"));
    }
    auto listed =
        conn->call({{"op", "group.members"}, {"owner", local.owner}, {"group", local.name}});
    if (!listed) return fail_group(listed.error().message());
    Participant p;
    p.node = n.name;
    for (const auto& m : listed->value("members", json::array())) {
      std::string key = m.value("key", "");
      if (m.value("store", "") != first.store || m.value("store_root", "") != first.store_root) {
        return fail_group(
            fmt::format("node {} keeps member {} in another store ({}): a group's "
                        "members share one store",
                        n.name, key, m.value("store", "")));
      }
      if (std::find(all_keys.begin(), all_keys.end(), key) != all_keys.end()) {
        return fail_group(fmt::format("two members share the key {} (node {})", key, n.name));
      }
      all_keys.push_back(key);
      p.keys.push_back(key);
      if (m.contains("predicted_bytes") && m["predicted_bytes"].is_number_unsigned()) {
        predicted += m["predicted_bytes"].get<uint64_t>();
      }
    }
    if (p.keys.empty()) continue;
    p.conn.emplace(std::move(*conn));
    ps.push_back(std::move(p));
  }
  options.group = local.name;
  if (limits.deadline)
    options.lock_timeout_s = lock_timeout_before(*limits.deadline - limits.margin);
  std::string generation = new_group_generation();
  auto run = GroupMembersCheckpoint::begin(local, config, runc, options, generation);
  if (!run) return fail_group(run.error().message());
  // Admission (a drain's plan): the whole group, every node's members, as one unit.
  if (limits.admit) {
    predicted += run->predicted_bytes();
    if (auto why = limits.admit(predicted, all_keys.size()); !why.empty()) {
      run->abort();
      return fail_group("not started, every member still running: " + why);
    }
  }
  std::optional<Clock::time_point> stop_dumps_at;
  if (limits.deadline) {
    stop_dumps_at = *limits.deadline - limits.margin;
    if (Clock::now() >= *stop_dumps_at) {
      run->abort();
      return fail_group("not started, every member still running: the deadline had passed");
    }
  }
  // 2. Freeze everywhere (each node locks and freezes all its members).
  std::optional<Error> local_error;
  side_by_side(
      ps,
      [&](Participant& p) {
        json req = {{"op", "group.freeze"}, {"owner", local.owner},
                    {"group", local.name},  {"generation", generation},
                    {"keys", p.keys},       {"leave_running", options.leave_running}};
        if (stop_dumps_at) {
          req["stop_dumps_in_ms"] =
              std::chrono::duration_cast<std::chrono::milliseconds>(*stop_dumps_at - Clock::now())
                  .count();
        }
        auto r = p.conn->call(req);
        if (r) {
          p.in_session = true;
        } else {
          p.error = r.error();
        }
      },
      [&] {
        if (auto ok = run->freeze(); !ok) local_error = ok.error();
      });
  auto frozen_at = run->frozen_at();
  std::string failures = first_error(ps, local_error ? local_error->message() : "");
  if (!failures.empty()) {
    abort_all(ps, &*run);
    return fail_group("not checkpointed, every member thawed and still running: " + failures);
  }
  std::this_thread::sleep_for(kSettle);
  // 3. Dump everywhere; a node done early is kept alive until all are.
  std::mutex mutex;
  std::condition_variable all_done_cv;
  std::size_t pending = ps.size() + 1;
  auto one_done = [&] {
    std::lock_guard lock(mutex);
    --pending;
    all_done_cv.notify_all();
  };
  std::optional<Result<std::vector<GroupMember>>> local_dump;
  // Past the deadline less the margin, this node's dumps are given up (the others give up
  // theirs at the same time, told in group.freeze).
  side_by_side(
      ps,
      [&](Participant& p) {
        auto r = p.conn->send_json({{"op", "group.dump"}});
        auto reply = r ? await_reply(*p.conn) : Result<json>(std::unexpected(r.error()));
        if (!reply) {
          p.error = reply.error();
          p.in_session = !(reply.error().text().find("not checkpointed") != std::string::npos);
        } else {
          for (const auto& e : reply->value("members", json::array())) {
            GroupMember m{e.value("key", ""), e.value("container_id", ""),
                          e.value("checkpoint", ""), e.value("seal_mac", ""), p.node};
            if (std::find(p.keys.begin(), p.keys.end(), m.key) == p.keys.end()) {
              p.error =
                  Error(fmt::format("node {} dumped {}, which it did not list", p.node, m.key));
            }
            p.entries.push_back(std::move(m));
          }
          if (p.entries.size() != p.keys.size() && !p.error) {
            p.error = Error(fmt::format("node {} dumped {} of its {} members", p.node,
                                        p.entries.size(), p.keys.size()));
          }
        }
        one_done();
        std::unique_lock lock(mutex);
        while (
            !all_done_cv.wait_for(lock, peer_timeout(config) / 3, [&] { return pending == 0; })) {
          if (p.in_session && !p.error) (void)p.conn->send_json({{"op", "group.keepalive"}});
        }
      },
      [&] {
        local_dump = run->dump_until(stop_dumps_at);
        one_done();
      });
  failures = first_error(
      ps, *local_dump ? "" : fmt::format("node {}: {}", self, local_dump->error().message()));
  if (failures.empty() && limits.deadline && Clock::now() >= *limits.deadline) {
    failures = "the deadline came before the group record could be committed";
  }
  // 4. The commit point: one sealed record naming every member on every node.
  GroupRecord record;
  record.owner = local.owner;
  record.name = local.name;
  record.generation = generation;
  std::string record_path;
  if (failures.empty()) {
    for (auto m : **local_dump) {
      m.node = self;
      record.members.push_back(std::move(m));
    }
    for (const auto& p : ps) {
      record.members.insert(record.members.end(), p.entries.begin(), p.entries.end());
    }
    std::sort(record.members.begin(), record.members.end(),
              [](const auto& a, const auto& b) { return a.key < b.key; });
    auto keys = load_node_keyring(config);
    Result<std::string> committed = keys ? Result<std::string>("") : std::unexpected(keys.error());
    if (keys) {
      CheckpointStore sealed(first.store, config.keep, first.store_root,
                             std::make_shared<const Keyring>(std::move(*keys)));
      committed = commit_group_record(sealed, record);
    }
    if (committed) {
      record_path = *committed;
    } else {
      failures = "group record: " + committed.error().message();
    }
  }
  if (!failures.empty()) {
    abort_all(ps, &*run);
    return fail_group("not checkpointed, every member thawed and still running: " + failures);
  }
  // 5. Committed: every node ends its members.
  auto keep = group_generations_to_keep(config, first, local.owner, local.name, generation);
  std::optional<Result<std::vector<GroupMemberOutcome>>> local_end;
  side_by_side(
      ps,
      [&](Participant& p) {
        auto r = p.conn->call({{"op", "group.commit"}, {"generation", generation}, {"keep", keep}});
        p.in_session = false;
        if (r) {
          p.ended = r->value("ended", json::array());
        } else {
          p.error = r.error();
        }
      },
      [&] { local_end = run->end(keep); });
  CrossNodeOutcome out;
  out.frozen_ms = ms_since(frozen_at);
  out.owner = local.owner;
  out.name = local.name;
  out.generation = generation;
  out.record = record_path;
  out.nodes.push_back(self);
  if (*local_end) {
    for (const auto& m : **local_end) {
      out.members.push_back({self, m.container.ns, m.container.id, m.container.key, m.outcome.path,
                             m.outcome.timings_ms});
    }
    out.local = std::move(**local_end);
  }
  for (const auto& p : ps) {
    out.nodes.push_back(p.node);
    for (const auto& m : p.ended) {
      out.members.push_back({p.node, m.value("ns", ""), m.value("id", ""), m.value("key", ""),
                             m.value("checkpoint", ""), m.value("timings_ms", json::object())});
    }
  }
  out.total_ms = ms_since(t0);
  failures = first_error(ps, *local_end ? "" : local_end->error().message());
  if (!failures.empty()) {
    return fail_group("committed as generation " + generation + " (" + record_path +
                      "), but ending members failed: " + failures);
  }
  return out;
}

Result<GroupCheckpointOutcome> checkpoint_group_for_drain(const NodeGroup& local,
                                                          const NodeConfig& config,
                                                          const std::string& runc,
                                                          Clock::time_point deadline) {
  const std::string store = local.members.empty() ? "" : local.members.front().store;
  auto out = checkpoint_group_across_nodes(local, config, runc, {},
                                           drain_group_limits(config, store, deadline));
  if (!out) return std::unexpected(out.error());
  GroupCheckpointOutcome g;
  g.owner = out->owner;
  g.name = out->name;
  g.generation = out->generation;
  g.record = out->record;
  g.members = std::move(out->local);
  g.frozen_ms = out->frozen_ms;
  g.total_ms = out->total_ms;
  g.nodes = out->nodes;
  g.remote_members = out->members.size() - g.members.size();
  return g;
}

}  // namespace arch
