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
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"
#include "config/node_config.h"
#include "container/checkpoint.h"
#include "managed/container_registry.h"
#include "runtime/oci_spec.h"
#include "store/checkpoint_store.h"
#include "store/group_record.h"

namespace arch {

/// Group names starting with this are pod groups (below): an ARCH_GROUP may not.
inline constexpr std::string_view kPodGroupPrefix = "pod.";

/// The group a container names itself: its ARCH_GROUP (validated, never a pod group's
/// name), or "" when none.
Result<std::string> container_group(const ContainerRecord& rec);

/// Pod groups ([groups] kubernetes_pods, on by default): the application containers of one
/// Kubernetes pod form one group when two or more of them run under ARCH on this node and
/// none names an ARCH_GROUP of its own (an explicit ARCH_GROUP wins: that container is in
/// its own group and the rest of the pod forms the pod group). A pod with one such container
/// is not a group: its container is checkpointed alone, as without groups.
/// Membership comes only from what containerd's CRI plugin writes into the spec from the
/// kubelet's request (namespace k8s.io; io.kubernetes.cri.container-type = container and
/// io.kubernetes.cri.sandbox-id, the pod), never from the container's environment. The name
/// is "pod.<pod name>" for a stable pod name (a StatefulSet's web-0: the name the job
/// identity key uses too, so the next pod of the job finds its group), else "pod.h<FNV-1a 64
/// of the members' sorted keys>" (a generated name: stable when the keys are, ARCH_JOB_ID).
struct PodOf {
  std::string sandbox_id;  ///< io.kubernetes.cri.sandbox-id
  std::string pod_name;    ///< io.kubernetes.cri.sandbox-name
};

/// The pod of an application container of a Kubernetes pod on a node that groups pods,
/// else nullopt (not CRI, the sandbox itself, annotations missing, [groups] off).
std::optional<PodOf> pod_of(const ContainerRecord& rec, const ArchEnv& env,
                            const NodeConfig& config);

/// True for a pod group's name (kPodGroupPrefix).
bool is_pod_group(std::string_view name);

/// The group of each of `records`, in the same order: its ARCH_GROUP when set, else its
/// pod group (above) when two or more of `records` share its pod and owner, else "". An
/// error for a malformed ARCH_GROUP or an unreadable spec.
std::vector<Result<std::string>> effective_groups(const std::vector<ContainerRecord>& records,
                                                  const NodeConfig& config);

/// effective_groups for one container, its pod's other members taken from the node's
/// registry.
Result<std::string> effective_group(const ContainerRecord& rec, const NodeConfig& config);

/// The members on this node of one group (owner and name).
struct NodeGroup {
  std::string owner, name;
  std::vector<ContainerRecord> members;  ///< Sorted by key.
};

/// The node's groups, from the registry: containers of one owner in the same group
/// (effective_groups: ARCH_GROUP or their pod). A container whose ARCH_GROUP is malformed
/// is left out with the reason in `*problems`.
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
  /// A group whose members span nodes (peer/group_peers.h): the nodes that took part (this
  /// one first) and how many members the other nodes checkpointed. `members` holds this
  /// node's only.
  std::vector<std::string> nodes{};
  std::size_t remote_members = 0;
};

/// The predicted checkpoint size of a registered container that runs (its runc state read
/// with `runc`); 0 when it cannot be known. For a peer's answer about its members.
uint64_t predict_member_bytes(const ContainerRecord& rec, const std::string& runc);

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
  /// dump(), but a dump still running at `stop_at` (a drain's deadline less its margin) is
  /// stopped (ContainerCheckpoint::stop: CRIU ended, the member thawed) and the result is an
  /// error saying so (then call abort()). A dump that can no longer be stopped (CRIU's
  /// network lock) runs on: the caller commits nothing after its deadline.
  Result<std::vector<GroupMember>> dump_until(
      std::optional<std::chrono::steady_clock::time_point> stop_at);
  /// From another thread while dump() runs: every member's dump that can still be given up
  /// is stopped, so dump() fails soon; the caller then aborts. How many were stopped.
  std::size_t stop(const std::string& why);
  /// The predicted size of every member's checkpoint (deadline_plan.h), for admission.
  [[nodiscard]] uint64_t predicted_bytes() const;

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

/// What a drain or finalize asks of a group checkpoint (checkpoint_group, and across nodes
/// peer/group_peers.h).
struct GroupLimits {
  /// The group must be committed by then: a dump still running at `deadline` less `margin`
  /// is stopped (on every node), and after `deadline` no record is committed; either way
  /// every member is thawed and nothing of this round is committed. Unset: no deadline.
  std::optional<std::chrono::steady_clock::time_point> deadline{};
  std::chrono::milliseconds margin{1000};
  /// Called with the predicted size of every member (on every node) and their count once
  /// they are locked, before any is frozen: a non-empty reason not to start (every member
  /// keeps running, nothing is committed).
  std::function<std::string(uint64_t bytes, std::size_t members)> admit{};
};

/// A drain's limits for a group of `store` due by `deadline`: admitted as one unit by the
/// store's deadline plan (deadline_plan.h: the sum of its members' sizes, one stream, a
/// fixed cost per member), dumps stopped at the deadline less max(1 s, 5% of the time left).
GroupLimits drain_group_limits(const NodeConfig& config, const std::string& store,
                               std::chrono::steady_clock::time_point deadline);

/// A new random group generation id (32 hex digits).
std::string new_group_generation();

/// Checkpoints the group as one unit (see above). `options.leave_running` keeps the members
/// running after the commit. All members must use the same store.
Result<GroupCheckpointOutcome> checkpoint_group(const NodeGroup& group, const NodeConfig& config,
                                                const std::string& runc,
                                                CheckpointOptions options = {},
                                                const GroupLimits& limits = {});

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

/// Marks `key` as being restored from `record` (an arrival marker under
/// <state dir>/groups/<owner>/<name>/<generation>/) and waits until every member of it is,
/// at most `timeout`. The error names those missing. A member that gives up removes its own
/// marker (and the directory when it was the last). Markers of a group that came together
/// stay until stale (removing them at once would hold up members still looking, and so
/// separate the members' restores): sweep_group_markers, run here and by archd, removes a
/// generation's directory once none of its files was touched for `timeout` + 60 s.
Result<void> wait_for_group_members(const NodeConfig& config, const GroupRecord& record,
                                    const std::string& key, std::chrono::milliseconds timeout);

/// The containers on this node, other than those keyed `except_key`, that were restored
/// from a member generation of `record` (the registry's restore records): when one member's
/// restore from it failed, these run from a generation the failed one does not.
std::vector<ContainerRecord> restored_from_group_generation(const NodeConfig& config,
                                                            const GroupRecord& record,
                                                            const std::string& except_key);

/// For a pod group's member `key` about to restore from `record` (pod groups do not wait for
/// each other): "" when it may, else why not. It may when every other member of `record`
/// already on this node was restored from `record` and the newest of those restores ended
/// less than `window` ago (the kubelet re-creating the pod, one container after another).
/// A member on the node that runs from anything else, or a pod restored long ago (one
/// container restarted alone while the others go on), would mix generations: refused.
std::string pod_member_restore_refusal(const NodeConfig& config, const GroupRecord& record,
                                       const std::string& key, std::chrono::seconds window);

/// The most entries of <state dir>/groups one sweep looks at.
inline constexpr std::size_t kMaxGroupMarkerSweep = 1000;

/// Removes the arrival-marker directories under <state dir>/groups whose newest file is
/// older than `stale` (at most kMaxGroupMarkerSweep entries looked at); returns how many
/// generation directories went.
std::size_t sweep_group_markers(const NodeConfig& config, std::chrono::seconds stale);

/// The group a checkpoint's manifest names (extra.group.name), or "".
std::string manifest_group(const Manifest& m);

}  // namespace arch
