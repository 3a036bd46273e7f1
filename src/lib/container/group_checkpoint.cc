// Group checkpoint: freeze all → dump all → one sealed group record → end all; and the
// restore's choice of group generation and its wait for the other members.
#include "container/group_checkpoint.h"

#include <fcntl.h>
#include <fmt/core.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <stop_token>
#include <thread>

#include "base/clock.h"
#include "base/file_util.h"
#include "base/names.h"
#include "container/deadline_plan.h"
#include "container/rootfs_diff.h"
#include "managed/job_identity.h"
#include "managed/owner.h"
#include "runtime/oci_spec.h"
#include "runtime/runc_client.h"

namespace arch {
namespace {

using Clock = std::chrono::steady_clock;

std::string random_generation() {
  uint64_t r[2] = {0, 0};
  if (::getrandom(r, sizeof r, 0) != sizeof r) {
    r[0] = static_cast<uint64_t>(Clock::now().time_since_epoch().count());
    r[1] = static_cast<uint64_t>(::getpid());
  }
  return fmt::format("{:016x}{:016x}", r[0], r[1]);
}

Result<void> make_private_dirs(const std::string& path) {
  for (std::size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos != path.size() && path[pos] != '/') continue;
    std::string prefix = path.substr(0, pos);
    if (::mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) return fail_errno("mkdir " + prefix);
  }
  return {};
}

// The explicit group of a container whose spec gave `env`.
Result<std::string> explicit_group(const ContainerRecord& rec, const ArchEnv& env) {
  std::string name(env.get("ARCH_GROUP"));
  if (name.empty()) return name;
  if (auto ok = validate_group_name(name); !ok) {
    return std::unexpected(ok.error().wrap("ARCH_GROUP of " + rec.ns + "/" + rec.id));
  }
  if (is_pod_group(name)) {
    // Pod groups are the kubelet's to form: a container naming one would join that pod.
    return std::unexpected(Error(fmt::format("ARCH_GROUP of {}/{}: names starting with {} are "
                                             "reserved for Kubernetes pod groups",
                                             rec.ns, rec.id, kPodGroupPrefix),
                                 EINVAL));
  }
  return name;
}

}  // namespace

bool is_pod_group(std::string_view name) {
  return name.starts_with(kPodGroupPrefix);
}

Result<std::string> container_group(const ContainerRecord& rec) {
  auto env = read_arch_env(rec.bundle);
  if (!env) return std::unexpected(env.error());
  return explicit_group(rec, *env);
}

std::optional<PodOf> pod_of(const ContainerRecord& rec, const ArchEnv& env,
                            const NodeConfig& config) {
  if (!config.groups_kubernetes_pods || rec.ns != kCriNamespace) return std::nullopt;
  if (env.annotation("io.kubernetes.cri.container-type") != "container") return std::nullopt;
  PodOf pod{std::string(env.annotation("io.kubernetes.cri.sandbox-id")),
            std::string(env.annotation("io.kubernetes.cri.sandbox-name"))};
  if (pod.sandbox_id.empty() || pod.pod_name.empty() ||
      !validate_name("sandbox id", pod.sandbox_id))
    return std::nullopt;
  return pod;
}

std::vector<Result<std::string>> effective_groups(const std::vector<ContainerRecord>& records,
                                                  const NodeConfig& config) {
  std::vector<Result<std::string>> out;
  // (owner, sandbox id) -> indices of the pod's containers without an ARCH_GROUP.
  std::map<std::pair<std::string, std::string>, std::vector<std::size_t>> pods;
  std::vector<std::optional<PodOf>> pod_of_each(records.size());
  for (std::size_t i = 0; i < records.size(); ++i) {
    auto env = read_arch_env(records[i].bundle);
    if (!env) {
      out.emplace_back(std::unexpected(env.error()));
      continue;
    }
    auto name = explicit_group(records[i], *env);
    if (name && name->empty()) {
      pod_of_each[i] = pod_of(records[i], *env, config);
      if (pod_of_each[i]) pods[{records[i].owner, pod_of_each[i]->sandbox_id}].push_back(i);
    }
    out.push_back(std::move(name));
  }
  for (const auto& [_, members] : pods) {
    if (members.size() < 2) continue;  // one container is not a group
    const std::string& pod_name = pod_of_each[members[0]]->pod_name;
    std::string name = std::string(kPodGroupPrefix) + pod_name;
    if (looks_generated_pod_name(pod_name) || !validate_group_name(name)) {
      std::vector<std::string> keys;
      for (auto i : members) keys.push_back(records[i].key);
      std::sort(keys.begin(), keys.end());
      std::string joined;
      for (const auto& k : keys) joined += k + "\n";
      name = std::string(kPodGroupPrefix) + "h" + runc_root_hash(joined);
    }
    for (auto i : members) out[i] = name;
  }
  return out;
}

Result<std::string> effective_group(const ContainerRecord& rec, const NodeConfig& config) {
  auto env = read_arch_env(rec.bundle);
  if (!env) return std::unexpected(env.error());
  auto name = explicit_group(rec, *env);
  if (!name || !name->empty() || !pod_of(rec, *env, config)) return name;
  std::vector<ContainerRecord> records;
  bool found = false;
  for (auto& r : ContainerRegistry(config.state_dir).all()) {
    if (r.owner != rec.owner) continue;
    found = found || (r.runc_root == rec.runc_root && r.id == rec.id);
    records.push_back(std::move(r));
  }
  if (!found) records.push_back(rec);
  auto groups = effective_groups(records, config);
  for (std::size_t i = 0; i < records.size(); ++i) {
    if (records[i].runc_root == rec.runc_root && records[i].id == rec.id) return groups[i];
  }
  return std::string();
}

std::string manifest_group(const Manifest& m) {
  if (!m.extra.is_object() || !m.extra.contains("group") || !m.extra["group"].is_object())
    return {};
  const auto& g = m.extra["group"];
  return g.contains("name") && g["name"].is_string() ? g["name"].get<std::string>() : "";
}

std::vector<NodeGroup> node_groups(const NodeConfig& config, std::vector<std::string>* problems) {
  std::map<std::pair<std::string, std::string>, NodeGroup> groups;
  auto records = ContainerRegistry(config.state_dir).all();
  auto names = effective_groups(records, config);
  for (std::size_t i = 0; i < records.size(); ++i) {
    auto& rec = records[i];
    const auto& name = names[i];
    if (!name) {
      if (problems != nullptr) problems->push_back(name.error().message());
      continue;
    }
    if (name->empty()) continue;
    auto& g = groups[{rec.owner, *name}];
    g.owner = rec.owner;
    g.name = *name;
    g.members.push_back(std::move(rec));
  }
  std::vector<NodeGroup> out;
  for (auto& [_, g] : groups) {
    std::sort(g.members.begin(), g.members.end(),
              [](const auto& a, const auto& b) { return a.key < b.key; });
    out.push_back(std::move(g));
  }
  return out;
}

// ------------------------------------------------------------------ checkpoint

std::string new_group_generation() {
  return random_generation();
}

struct GroupMembersCheckpoint::State {
  NodeGroup group;
  CheckpointOptions options;
  std::vector<ContainerRecord> members;
  std::vector<ContainerCheckpoint> ckpts;
  std::optional<ThawGuard> guard;
  Clock::time_point frozen_at{};
  bool done = false;
};

GroupMembersCheckpoint::GroupMembersCheckpoint(std::unique_ptr<State> s) : s_(std::move(s)) {}
GroupMembersCheckpoint::GroupMembersCheckpoint(GroupMembersCheckpoint&&) noexcept = default;
GroupMembersCheckpoint& GroupMembersCheckpoint::operator=(GroupMembersCheckpoint&&) noexcept =
    default;
GroupMembersCheckpoint::~GroupMembersCheckpoint() {
  if (s_ && !s_->done) abort();
}

const std::string& GroupMembersCheckpoint::generation() const {
  return s_->options.group_generation;
}
const std::vector<ContainerRecord>& GroupMembersCheckpoint::members() const {
  return s_->members;
}
std::chrono::steady_clock::time_point GroupMembersCheckpoint::frozen_at() const {
  return s_->frozen_at;
}

Result<GroupMembersCheckpoint> GroupMembersCheckpoint::begin(const NodeGroup& group,
                                                             const NodeConfig& config,
                                                             const std::string& runc,
                                                             CheckpointOptions options,
                                                             std::string generation) {
  // 1. Validate: one owner, one store, distinct keys, at least one member.
  if (auto ok = validate_group_name(group.name); !ok) return std::unexpected(ok.error());
  if (group.members.empty()) return fail("no member on this node");
  for (std::size_t i = 0; i < group.members.size(); ++i) {
    const auto& m = group.members[i];
    if (m.owner != group.owner) return fail(m.ns + "/" + m.id + " belongs to owner " + m.owner);
    if (m.store != group.members[0].store || m.store_root != group.members[0].store_root) {
      return fail(
          fmt::format("members use different stores ({} and {}): a group's members share one store",
                      m.store, group.members[0].store));
    }
    for (std::size_t j = 0; j < i; ++j) {
      if (group.members[j].key == m.key) return fail("two members share the key " + m.key);
    }
  }
  auto s = std::make_unique<State>();
  s->group = group;
  s->options = std::move(options);
  s->options.group = group.name;
  s->options.group_generation = std::move(generation);
  s->options.record_rate = false;
  s->options.pre_copy = false;
  // 2. Lock every key (in key order: two group checkpoints never wait on each other).
  s->members = group.members;
  std::sort(s->members.begin(), s->members.end(),
            [](const auto& a, const auto& b) { return a.key < b.key; });
  for (const auto& m : s->members) {
    auto c = ContainerCheckpoint::begin(m, config, runc, s->options);
    if (!c) {
      s->done = true;
      return std::unexpected(c.error().wrap(m.ns + "/" + m.id));
    }
    s->ckpts.push_back(std::move(*c));
  }
  return GroupMembersCheckpoint(std::move(s));
}

Result<void> GroupMembersCheckpoint::freeze() {
  State& s = *s_;
  // 3. Freeze all before any is dumped, with one guard that thaws them all should we die.
  std::vector<std::vector<std::string>> resumes;
  for (const auto& c : s.ckpts) resumes.push_back(c.resume_argv());
  auto guard = ThawGuard::arm(resumes);
  if (!guard) return std::unexpected(guard.error());
  s.guard.emplace(std::move(*guard));
  s.frozen_at = Clock::now();
  for (auto& c : s.ckpts) {
    if (auto ok = c.freeze(false); !ok) {
      for (auto& other : s.ckpts) other.abandon();
      return std::unexpected(ok.error().wrap("freeze " + c.container().ns + "/" + c.container().id +
                                             " (every member thawed)"));
    }
  }
  return {};
}

Result<std::vector<GroupMember>> GroupMembersCheckpoint::dump() {
  State& s = *s_;
  // 4. Dump all, side by side; each member's generation committed, unpruned.
  std::vector<std::optional<Result<std::string>>> staged(s.ckpts.size());
  {
    std::vector<std::jthread> threads;
    for (std::size_t i = 0; i < s.ckpts.size(); ++i) {
      threads.emplace_back([&, i] { staged[i] = s.ckpts[i].stage_group_member(); });
    }
  }
  std::string failures;
  for (std::size_t i = 0; i < s.ckpts.size(); ++i) {
    if (!*staged[i]) {
      const auto& m = s.ckpts[i].container();
      failures += fmt::format("{}{}/{}: {}", failures.empty() ? "" : "; ", m.ns, m.id,
                              staged[i]->error().message());
    }
  }
  if (!failures.empty()) return fail(failures);
  std::vector<GroupMember> out;
  for (std::size_t i = 0; i < s.ckpts.size(); ++i) {
    const std::string& path = **staged[i];
    out.push_back({s.ckpts[i].container().key, s.ckpts[i].container().id,
                   path.substr(path.rfind('/') + 1), s.ckpts[i].staged_seal_mac()});
  }
  return out;
}

void GroupMembersCheckpoint::abort() {
  State& s = *s_;
  for (auto& c : s.ckpts) c.retract_group_member();
  if (s.guard) s.guard->disarm();
  s.done = true;
}

Result<std::vector<GroupMemberOutcome>> GroupMembersCheckpoint::end(
    const std::vector<std::string>& keep_generations) {
  State& s = *s_;
  // 6. Committed: end every member (or let it go on) and prune.
  s.done = true;
  std::vector<GroupMemberOutcome> out;
  std::string end_failures;
  for (auto& c : s.ckpts) {
    auto ended = c.end_group_member(keep_generations);
    if (!ended) {
      end_failures += (end_failures.empty() ? "" : "; ") + ended.error().message();
      continue;
    }
    out.push_back({c.container(), std::move(*ended)});
  }
  if (s.guard) s.guard->disarm();
  if (!end_failures.empty()) return fail(end_failures);
  return out;
}

Result<std::vector<GroupMember>> GroupMembersCheckpoint::dump_until(
    std::optional<Clock::time_point> stop_at) {
  if (!stop_at) return dump();
  std::atomic<bool> late{false};
  Result<std::vector<GroupMember>> out = fail("not dumped");
  {
    std::mutex mutex;
    std::condition_variable_any cv;
    std::jthread watch([&](std::stop_token stop) {
      std::unique_lock lock(mutex);
      if (cv.wait_until(lock, stop, *stop_at, [] { return false; }) || stop.stop_requested()) {
        return;
      }
      late = true;
      (void)this->stop("the deadline came before the group's dumps ended");
    });
    out = dump();
    watch.request_stop();
  }
  if (late) {
    return fail("the deadline came before every member was dumped" +
                (out ? std::string() : " (" + out.error().message() + ")"));
  }
  return out;
}

std::size_t GroupMembersCheckpoint::stop(const std::string& why) {
  std::size_t n = 0;
  for (auto& c : s_->ckpts) {
    if (c.stop(why)) ++n;
  }
  return n;
}

uint64_t GroupMembersCheckpoint::predicted_bytes() const {
  uint64_t total = 0;
  for (const auto& c : s_->ckpts) total += c.predicted_bytes();
  return total;
}

uint64_t predict_member_bytes(const ContainerRecord& rec, const std::string& runc) {
  auto st = RuncClient(runc, rec.runc_root).state(rec.id);
  if (!st || st->pid <= 0) return 0;
  std::string rootfs = st->rootfs.empty() ? rec.bundle + "/rootfs" : st->rootfs;
  auto upper = overlay_upperdir(rootfs);
  return predict_checkpoint_bytes(st->pid, upper ? *upper : std::string());
}

GroupLimits drain_group_limits(const NodeConfig& config, const std::string& store,
                               Clock::time_point deadline) {
  GroupLimits limits;
  limits.deadline = deadline;
  double left = std::chrono::duration<double>(deadline - Clock::now()).count();
  limits.margin =
      std::chrono::milliseconds(static_cast<int64_t>(1000 * std::max(1.0, 0.05 * left)));
  std::string state_dir = config.state_dir;
  limits.admit = [state_dir, store, deadline](uint64_t bytes, std::size_t members) -> std::string {
    double now_left = std::chrono::duration<double>(deadline - Clock::now()).count();
    // One unit: the sum of its members' sizes (they share the store), a fixed cost each.
    auto plan = plan_dumps({bytes}, load_store_rates(state_dir, store),
                           PlanOptions{.seconds_left = now_left,
                                       .parallel = 1,
                                       .per_container_s = 0.5 * static_cast<double>(members)});
    if (plan.entries.empty() || plan.entries[0].admitted) return {};
    return fmt::format(
        "the group ({} members, {:.0f} MiB predicted) cannot finish before the "
        "deadline: {}",
        members, static_cast<double>(bytes) / (1 << 20), plan.entries[0].reason);
  };
  return limits;
}

std::vector<std::string> group_generations_to_keep(const NodeConfig& config,
                                                   const ContainerRecord& any_member,
                                                   const std::string& owner,
                                                   const std::string& name,
                                                   const std::string& generation) {
  std::vector<std::string> keep_generations;
  auto keys = load_node_keyring(config);
  if (keys) {
    CheckpointStore store(any_member.store, config.keep, any_member.store_root,
                          std::make_shared<const Keyring>(std::move(*keys)));
    if (auto records = group_records(store, owner, name)) {
      for (const auto& r : *records) keep_generations.push_back(r.generation);
    }
  }
  keep_generations.push_back(generation);
  return keep_generations;
}

Result<GroupCheckpointOutcome> checkpoint_group(const NodeGroup& group, const NodeConfig& config,
                                                const std::string& runc, CheckpointOptions options,
                                                const GroupLimits& limits) {
  auto t0 = Clock::now();
  auto fail_group = [&](const Error& e) {
    return std::unexpected(e.wrap(fmt::format("group {}/{}", group.owner, group.name)));
  };
  std::optional<Clock::time_point> stop_at;
  if (limits.deadline) stop_at = *limits.deadline - limits.margin;
  // A member's key held by another checkpoint: waited for no longer than the deadline allows.
  if (stop_at) options.lock_timeout_s = lock_timeout_before(*stop_at);
  auto run =
      GroupMembersCheckpoint::begin(group, config, runc, std::move(options), random_generation());
  if (!run) return fail_group(run.error());
  if (limits.admit) {
    if (auto why = limits.admit(run->predicted_bytes(), run->members().size()); !why.empty()) {
      run->abort();
      return fail_group(Error("not started, every member still running: " + why));
    }
  }
  if (stop_at && Clock::now() >= *stop_at) {
    run->abort();
    return fail_group(Error("not started, every member still running: the deadline had passed"));
  }
  if (auto ok = run->freeze(); !ok) return fail_group(ok.error());
  auto dumped = run->dump_until(stop_at);
  if (dumped && limits.deadline && Clock::now() >= *limits.deadline) {
    dumped = fail("the deadline came before the group record could be committed");
  }
  // 5. The commit point: the group record, naming every member's generation and seal.
  GroupRecord record;
  record.owner = group.owner;
  record.name = group.name;
  record.generation = run->generation();
  std::string failures = dumped ? "" : dumped.error().message();
  std::optional<Result<std::string>> committed;
  const ContainerRecord& first = run->members().front();
  if (failures.empty()) {
    record.members = *dumped;
    auto keys = load_node_keyring(config);
    if (!keys) {
      committed = std::unexpected(keys.error());
    } else {
      CheckpointStore sealed(first.store, config.keep, first.store_root,
                             std::make_shared<const Keyring>(std::move(*keys)));
      committed = commit_group_record(sealed, record);
    }
    if (!*committed) failures = "group record: " + committed->error().message();
  }
  if (!failures.empty()) {
    // Nothing is committed: every member's generation goes, every member is thawed.
    run->abort();
    return fail_group(
        Error("not checkpointed, every member thawed and still running: " + failures));
  }
  auto keep = group_generations_to_keep(config, first, group.owner, group.name, record.generation);
  GroupCheckpointOutcome out;
  out.owner = group.owner;
  out.name = group.name;
  out.generation = record.generation;
  out.record = **committed;
  auto ended = run->end(keep);
  out.frozen_ms = ms_since(run->frozen_at());
  out.total_ms = ms_since(t0);
  if (!ended) return fail_group(ended.error());
  out.members = std::move(*ended);
  return out;
}

// ------------------------------------------------------------------ restore

Result<GroupChoice> choose_group_generation(const CheckpointStore& store,
                                            const ContainerRecord& rec, const std::string& group,
                                            std::vector<std::string>* skipped) {
  std::vector<std::string> refused;
  auto records = group_records(store, rec.owner, group, &refused);
  if (!records) return std::unexpected(records.error());
  for (const auto& r : refused) skipped->push_back("group record " + r);
  for (const auto& r : *records) {
    const GroupMember* me = r.member(rec.key);
    std::string gen = r.path.substr(r.path.rfind('/') + 1);
    if (me == nullptr) {
      // The newest complete generation does not hold this container: nothing older may be
      // used either (its peers restore from the newest).
      return std::unexpected(Error(fmt::format("the newest group generation of {} ({}) has no "
                                               "member {}",
                                               group, gen, rec.key),
                                   ENOENT));
    }
    if (auto ok = check_group_generation(store, r, /*check_files=*/true); !ok) {
      skipped->push_back("group generation " + gen + " unusable: " + ok.error().message());
      continue;
    }
    auto m = store.read_verified(rec.owner, rec.key, me->checkpoint, /*check_files=*/false);
    if (!m) {
      skipped->push_back("group generation " + gen + ": " + m.error().message());
      continue;
    }
    GroupChoice choice;
    choice.record = r;
    choice.checkpoint.path = store.base() + "/" + rec.owner + "/" + rec.key + "/" + me->checkpoint;
    choice.checkpoint.manifest = std::move(*m);
    return choice;
  }
  std::string why = fmt::format("no complete generation of group {}", group);
  if (!skipped->empty()) why += " (" + skipped->front() + ")";
  return std::unexpected(Error(why, ENOENT));
}

namespace {

// The newest modification time of `dir` and the files in it (0 when unreadable).
time_t newest_mtime(const std::string& dir, std::size_t* looked) {
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) return 0;
  time_t newest = st.st_mtime;
  auto fd = open_file(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!fd) return newest;
  auto names = list_directory(fd->get());
  if (!names) return newest;
  for (const auto& n : *names) {
    ++*looked;
    if (::fstatat(fd->get(), n.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
      newest = std::max(newest, st.st_mtime);
    }
  }
  return newest;
}

// Removes `dir`'s files and `dir` itself (not following links); then its parent and
// grandparent (the group's and owner's directories) when they are left empty.
void remove_marker_dir(const std::string& dir) {
  (void)remove_directory_contents(dir);
  if (::rmdir(dir.c_str()) != 0) return;
  std::string name_dir = dirname_of(dir);
  if (::rmdir(name_dir.c_str()) == 0) (void)::rmdir(dirname_of(name_dir).c_str());
}

// A member that gives up leaves the marker directory: its own marker goes, and the directory
// with it when no other member's marker is left.
void leave_marker_dir(const std::string& dir, const std::string& key) {
  (void)::unlink((dir + "/" + key).c_str());
  auto fd = open_file(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!fd) return;
  auto names = list_directory(fd->get());
  if (!names) return;
  if (names->empty()) remove_marker_dir(dir);  // no other member waiting
}

}  // namespace

std::vector<ContainerRecord> restored_from_group_generation(const NodeConfig& config,
                                                            const GroupRecord& record,
                                                            const std::string& except_key) {
  std::vector<ContainerRecord> out;
  ContainerRegistry registry(config.state_dir);
  for (auto& rec : registry.all()) {
    if (rec.owner != record.owner || rec.key == except_key) continue;
    const GroupMember* m = record.member(rec.key);
    if (m == nullptr) continue;
    auto info = registry.find_restore(rec.runc_root, rec.id);
    std::string suffix = "/" + record.owner + "/" + rec.key + "/" + m->checkpoint;
    if (info && info->checkpoint.ends_with(suffix)) out.push_back(std::move(rec));
  }
  return out;
}

std::string pod_member_restore_refusal(const NodeConfig& config, const GroupRecord& record,
                                       const std::string& key, std::chrono::seconds window) {
  ContainerRegistry registry(config.state_dir);
  std::vector<std::string> elsewhere;
  time_t newest = 0;
  bool any = false;
  for (const auto& rec : registry.all()) {
    if (rec.owner != record.owner || rec.key == key) continue;
    const GroupMember* m = record.member(rec.key);
    if (m == nullptr) continue;
    any = true;
    auto info = registry.find_restore(rec.runc_root, rec.id);
    std::string suffix = "/" + record.owner + "/" + rec.key + "/" + m->checkpoint;
    struct stat st {};
    if (!info || !info->checkpoint.ends_with(suffix) ||
        ::stat(registry.path_for(rec.runc_root, rec.id, ".restore.json").c_str(), &st) != 0) {
      elsewhere.push_back(rec.ns + "/" + rec.id);
      continue;
    }
    newest = std::max(newest, st.st_mtime);
  }
  if (!elsewhere.empty()) {
    std::string names;
    for (const auto& n : elsewhere) names += (names.empty() ? "" : ", ") + n;
    return fmt::format(
        "members of group {} already run on this node, not restored from generation {} ({}): "
        "a member is not restored alone from it (re-create the whole pod)",
        record.name, record.generation, names);
  }
  if (any && ::time(nullptr) - newest > static_cast<time_t>(window.count())) {
    return fmt::format(
        "the other members of group {} were restored from generation {} more than {} s ago "
        "and have run on since: a member restarted alone is not restored from it (re-create "
        "the whole pod)",
        record.name, record.generation, window.count());
  }
  return "";
}

std::size_t sweep_group_markers(const NodeConfig& config, std::chrono::seconds stale) {
  std::string groups = config.state_dir + "/groups";
  std::size_t looked = 0, removed = 0;
  time_t cutoff = ::time(nullptr) - static_cast<time_t>(stale.count());
  auto list = [&](const std::string& dir) -> std::vector<std::string> {
    auto fd = open_file(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    if (!fd) return {};
    auto names = list_directory(fd->get());
    if (!names) return {};
    looked += names->size();
    return std::move(*names);
  };
  for (const auto& owner : list(groups)) {
    for (const auto& name : list(groups + "/" + owner)) {
      for (const auto& gen : list(groups + "/" + owner + "/" + name)) {
        if (looked > kMaxGroupMarkerSweep) return removed;
        std::string dir = groups + "/" + owner + "/" + name + "/" + gen;
        if (newest_mtime(dir, &looked) < cutoff) {
          remove_marker_dir(dir);
          ++removed;
        }
      }
      (void)::rmdir((groups + "/" + owner + "/" + name).c_str());  // empty ones only
    }
    (void)::rmdir((groups + "/" + owner).c_str());
  }
  return removed;
}

Result<void> wait_for_group_members(const NodeConfig& config, const GroupRecord& record,
                                    const std::string& key, std::chrono::milliseconds timeout) {
  // Directories left by restores that died: none of their files touched for a whole wait.
  (void)sweep_group_markers(
      config, std::chrono::duration_cast<std::chrono::seconds>(timeout) + std::chrono::seconds(60));
  std::string dir =
      config.state_dir + "/groups/" + record.owner + "/" + record.name + "/" + record.generation;
  // A member leaving (or a sweep) may remove the directory between mkdir and open: again.
  Result<UniqueFd> fd = std::unexpected(Error("not tried"));
  for (int attempt = 0; attempt < 5; ++attempt) {
    if (auto ok = make_private_dirs(dir); !ok) return ok;
    fd = open_file(dir + "/" + key, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0600);
    if (fd || fd.error().code() != ENOENT) break;
  }
  if (!fd) return std::unexpected(fd.error());
  fd->reset();
  auto deadline = Clock::now() + timeout;
  for (;;) {
    // Every member there: on we go at once. The markers stay (removing them here would
    // hold up members still looking); sweep_group_markers removes them once stale.
    std::vector<std::string> missing;
    for (const auto& m : record.members) {
      struct stat st {};
      if (::stat((dir + "/" + m.key).c_str(), &st) != 0) missing.push_back(m.key);
    }
    if (missing.empty()) return {};
    if (Clock::now() >= deadline) {
      leave_marker_dir(dir, key);
      std::string names;
      for (const auto& k : missing) names += (names.empty() ? "" : ", ") + k;
      return fail(
          fmt::format("the other members of group {} (generation {}) were not created "
                      "within {} s ([restore] group_wait): {}",
                      record.name, record.generation, timeout.count() / 1000, names));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace arch
