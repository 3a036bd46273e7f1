// Group checkpoint: the containers of one owner that name the same ARCH_GROUP, checkpointed
// as one unit and restored from the same group generation.
//
// Checkpoint (one node): validate → lock every member's key (sorted) → freeze all → dump all
// (side by side; each member's generation committed unpruned, its sealed manifest naming the
// group generation) → commit the group record (store/group_record.h: the commit point) →
// end every member (TCP sockets silenced, tasks killed) → prune. Any failure before the
// record is committed removes the members' generations and thaws every member: they keep
// running and the group has no new generation.
// Restore: a member restores only from the newest group generation whose record verifies
// and every one of whose member generations is there, sealed and the one recorded; it waits
// (bounded, [restore] group_wait) until every member of that generation is being created on
// this node, so that the members come back together.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/error.h"
#include "config/node_config.h"
#include "container/checkpoint.h"
#include "managed/container_registry.h"
#include "store/checkpoint_store.h"
#include "store/group_record.h"

namespace arch {

/// The group a container belongs to: its ARCH_GROUP (validated), or "" when none.
Result<std::string> container_group(const ContainerRecord& rec);

/// The members on this node of one group (owner and name).
struct NodeGroup {
  std::string owner, name;
  std::vector<ContainerRecord> members;  ///< Sorted by key.
};

/// The node's groups, from the registry: containers of one owner naming the same group.
/// A container whose ARCH_GROUP is malformed is left out with the reason in `*problems`.
std::vector<NodeGroup> node_groups(const NodeConfig& config,
                                   std::vector<std::string>* problems = nullptr);

struct GroupMemberOutcome {
  ContainerRecord container;
  CheckpointOutcome outcome;
};

struct GroupCheckpointOutcome {
  std::string owner, name, generation;
  std::string record;  ///< The committed group record's directory.
  std::vector<GroupMemberOutcome> members;
  /// From the first member's freeze to the last member's end: how long the group stood still.
  double frozen_ms = 0;
  double total_ms = 0;
};

/// The phases of a group checkpoint on this node, for checkpoint_group() and for a
/// coordinator whose group spans nodes (peer/group_peers.h): begin() (validate, lock every
/// key in key order) → freeze() (all members, one ThawGuard) → dump() (side by side, each
/// member's generation committed unpruned) → [the group record committed] → end(); abort()
/// at any point before end() removes the members' generations and thaws them (so does the
/// destructor). Move-only.
class GroupMembersCheckpoint {
 public:
  static Result<GroupMembersCheckpoint> begin(const NodeGroup& group, const NodeConfig& config,
                                              const std::string& runc, CheckpointOptions options,
                                              std::string generation);
  GroupMembersCheckpoint(GroupMembersCheckpoint&&) noexcept;
  GroupMembersCheckpoint& operator=(GroupMembersCheckpoint&&) noexcept;
  ~GroupMembersCheckpoint();

  /// Freezes every member (a failure thaws them all).
  Result<void> freeze();
  /// Dumps every member; their record entries (sorted by key), or an error listing each
  /// member that failed ("ns/id: why; ..."): then call abort().
  Result<std::vector<GroupMember>> dump();
  /// After the group record is committed: ends every member (or lets it run on with
  /// leave_running) and prunes, keeping the member generations of `keep_generations`.
  Result<std::vector<GroupMemberOutcome>> end(const std::vector<std::string>& keep_generations);
  /// Nothing is committed: every member's new generation goes, every member is thawed.
  void abort();

  [[nodiscard]] const std::string& generation() const;
  /// The members (sorted by key).
  [[nodiscard]] const std::vector<ContainerRecord>& members() const;
  /// When the first member began to freeze.
  [[nodiscard]] std::chrono::steady_clock::time_point frozen_at() const;

 private:
  struct State;
  explicit GroupMembersCheckpoint(std::unique_ptr<State> s);
  std::unique_ptr<State> s_;
};

/// The store keys of the committed group generations of group.owner/group.name, plus
/// `generation`: what end() keeps.
std::vector<std::string> group_generations_to_keep(const NodeConfig& config,
                                                   const ContainerRecord& any_member,
                                                   const std::string& owner,
                                                   const std::string& name,
                                                   const std::string& generation);

/// A new random group generation id (32 hex digits).
std::string new_group_generation();

/// Checkpoints the group as one unit (see above). `options.leave_running` keeps the members
/// running after the commit. All members must use the same store.
Result<GroupCheckpointOutcome> checkpoint_group(const NodeGroup& group, const NodeConfig& config,
                                                const std::string& runc,
                                                CheckpointOptions options = {});

/// The group generation a member restores from, with its own generation in it.
struct GroupChoice {
  GroupRecord record;
  CommittedCheckpoint checkpoint;
};

/// The newest group generation of `group` that names `rec`'s key and whose every member
/// verifies (check_group_generation; every member's files hashed: members must agree).
/// Older or broken ones passed over go into `*skipped`. ENOENT when there is none.
Result<GroupChoice> choose_group_generation(const CheckpointStore& store,
                                            const ContainerRecord& rec, const std::string& group,
                                            std::vector<std::string>* skipped);

/// Marks `key` as being restored from `record` (in the node's state directory) and waits
/// until every member of it is, at most `timeout`. The error names those missing.
Result<void> wait_for_group_members(const NodeConfig& config, const GroupRecord& record,
                                    const std::string& key, std::chrono::milliseconds timeout);

/// The group a checkpoint's manifest names (extra.group.name), or "".
std::string manifest_group(const Manifest& m);

}  // namespace arch
