// GroupPeers: a group checkpoint whose members live on several nodes, as a two-phase protocol
// over the peer channel (peer_tls.h). The node where `archctl group checkpoint` runs is the
// coordinator; every [peers] node is asked for its members of the group (same owner, same
// ARCH_GROUP, from its own registry), and those that have some take part:
//   group.members  {owner, group}                   → {members: [{ns, id, key, store, ...,
//                                                      predicted_bytes}]}
//   group.freeze   {owner, group, generation, keys, [stop_dumps_in_ms]}
//                                                    → every local member locked and frozen
//   group.dump     {}                                → {members: [record entries]}; frozen
//   group.commit   {generation, keep}                → members ended (or left running)
//   group.abort    {}                                → members' generations removed, thawed
// Every node freezes before any dumps (so no message is in flight between members when the
// first dump starts; a settle pause covers the network's round trip). The coordinator
// commits the one sealed group record (store/group_record.h) in the shared store, naming
// every member's generation, MAC and node, and only then sends commit. Any failure or
// timeout before the record aborts everywhere. A participant acts only for the owner and
// group named, only on containers of its own registry that carry both; it ends its members
// only when the record of that generation is in the store and verifies. A participant that
// loses its coordinator (connection closed, or silent for [peers] timeout) decides from the
// store: the record is there → commit, otherwise abort (thaw; members keep running).
// A drain's coordinator (checkpoint_group_for_drain) adds "stop_dumps_in_ms" to group.freeze:
// a participant's dump still running that long after the request is stopped (its members
// thawed, nothing of the round committed), as the coordinator stops its own.
// While a node dumps it sends {"working": true} frames, and a coordinator waiting for the
// other nodes sends {"op": "group.keepalive"} to those that are done, so that no one times
// out on a long dump.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"
#include "config/node_config.h"
#include "container/checkpoint.h"
#include "container/group_checkpoint.h"
#include "peer/peer_tls.h"

namespace arch {

/// Where a participant's messages go (archd's log).
using PeerLogger = std::function<void(LogLevel, const std::string&)>;

/// Serves a group request on a participant: "group.members" (answered), or "group.freeze"
/// (the whole session, until commit, abort or the loss of the coordinator).
void serve_group_request(PeerConnection& conn, const nlohmann::json& request,
                         const NodeConfig& config, const std::string& runc, const PeerLogger& log);

/// One member of a cross-node group checkpoint.
struct CrossNodeMember {
  std::string node, ns, id, key;
  std::string checkpoint;  ///< Its committed generation's path.
  nlohmann::json timings_ms;
};

/// A drain's limits (container/group_checkpoint.h), enforced on every node.
using CrossNodeLimits = GroupLimits;

struct CrossNodeOutcome {
  std::string owner, name, generation;
  std::string record;              ///< The committed group record's directory.
  std::vector<std::string> nodes;  ///< The nodes that took part (this one first).
  std::vector<CrossNodeMember> members;
  double frozen_ms = 0;  ///< From the first freeze to the last member ended, all nodes.
  double total_ms = 0;
  std::vector<GroupMemberOutcome> local;  ///< This node's members, as they ended.
};

/// The coordinator: checkpoints `local` (this node's members, at least one) together with
/// the members of the same owner and group on every [peers] node. A peer that cannot be
/// reached fails the checkpoint before anything is frozen (its members cannot be known).
Result<CrossNodeOutcome> checkpoint_group_across_nodes(const NodeGroup& local,
                                                       const NodeConfig& config,
                                                       const std::string& runc,
                                                       CheckpointOptions options = {},
                                                       const CrossNodeLimits& limits = {});

/// For a drain or finalize (container/finalize.h, FinalizeOptions::group_checkpoint): the
/// group checkpointed across nodes within `deadline`, admitted as one unit by the store's
/// deadline plan (the sum of every member's predicted size on every node). The outcome
/// names this node's members; `nodes` and `remote_members` the rest.
Result<GroupCheckpointOutcome> checkpoint_group_for_drain(
    const NodeGroup& local, const NodeConfig& config, const std::string& runc,
    std::chrono::steady_clock::time_point deadline);

/// `archctl peer ping`: connects to the [peers] node `name` and asks it for its name and
/// version; the reply with "rtt_ms" added.
Result<nlohmann::json> ping_peer(const NodeConfig& config, const std::string& name);

}  // namespace arch
