// Group checkpoint: freeze all → dump all → one sealed group record → end all; and the
// restore's choice of group generation and its wait for the other members.
#include "container/group_checkpoint.h"

#include <fcntl.h>
#include <fmt/core.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <thread>

#include "base/file_util.h"
#include "base/names.h"
#include "runtime/oci_spec.h"

namespace arch {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

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

}  // namespace

Result<std::string> container_group(const ContainerRecord& rec) {
  auto env = read_arch_env(rec.bundle);
  if (!env) return std::unexpected(env.error());
  std::string name(env->get("ARCH_GROUP"));
  if (name.empty()) return name;
  if (auto ok = validate_group_name(name); !ok) {
    return std::unexpected(ok.error().wrap("ARCH_GROUP of " + rec.ns + "/" + rec.id));
  }
  return name;
}

std::string manifest_group(const Manifest& m) {
  if (!m.extra.is_object() || !m.extra.contains("group") || !m.extra["group"].is_object())
    return {};
  const auto& g = m.extra["group"];
  return g.contains("name") && g["name"].is_string() ? g["name"].get<std::string>() : "";
}

std::vector<NodeGroup> node_groups(const NodeConfig& config, std::vector<std::string>* problems) {
  std::map<std::pair<std::string, std::string>, NodeGroup> groups;
  for (auto& rec : ContainerRegistry(config.state_dir).all()) {
    auto name = container_group(rec);
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
                                                const std::string& runc,
                                                CheckpointOptions options) {
  auto t0 = Clock::now();
  auto fail_group = [&](const Error& e) {
    return std::unexpected(e.wrap(fmt::format("group {}/{}", group.owner, group.name)));
  };
  auto run =
      GroupMembersCheckpoint::begin(group, config, runc, std::move(options), random_generation());
  if (!run) return fail_group(run.error());
  if (auto ok = run->freeze(); !ok) return fail_group(ok.error());
  auto dumped = run->dump();
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

Result<void> wait_for_group_members(const NodeConfig& config, const GroupRecord& record,
                                    const std::string& key, std::chrono::milliseconds timeout) {
  std::string dir =
      config.state_dir + "/groups/" + record.owner + "/" + record.name + "/" + record.generation;
  if (auto ok = make_private_dirs(dir); !ok) return ok;
  auto fd = open_file(dir + "/" + key, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (!fd) return std::unexpected(fd.error());
  auto deadline = Clock::now() + timeout;
  for (;;) {
    std::vector<std::string> missing;
    for (const auto& m : record.members) {
      struct stat st {};
      if (::stat((dir + "/" + m.key).c_str(), &st) != 0) missing.push_back(m.key);
    }
    if (missing.empty()) return {};
    if (Clock::now() >= deadline) {
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
