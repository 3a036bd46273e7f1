// RestoreBarrier: the members of a group spread over nodes are released together at the
// end of their restores, so that no member runs (and sends) before every other member's
// sockets exist again.
//
// How: the restore's CRIU config says `leave-stopped`, so CRIU restores every task and
// socket and leaves the tasks stopped (SIGSTOP) instead of resuming them. Once runc restore
// returned, this process marks the member's arrival in the shared store, next to the group
// record (<group key dir>/arrivals.<generation>/<key>, an entry the store's listings
// ignore), waits until every member of the generation has arrived (at most the timeout,
// [restore] group_wait), and then continues every task of the container (SIGCONT). A
// member whose restore fails marks itself failed, which releases the others at once; one
// that waited in vain is released all the same (its note says so) rather than failing a
// restore that worked. The connections it restores are held meanwhile: CRIU's dump lifted
// its network lock (the tasks stayed, to be ended after the commit), so a member restored
// first would meet a reset from a node where its peer's socket does not exist yet (its
// kernel retransmits the restored send queue). Before runc restore, every dumped connection
// of the member gets a DROP rule in each direction (iptables INPUT, OUTPUT and FORWARD,
// tagged with a comment naming the group generation); they are removed at the release. A
// node without iptables restores without the hold (the note says so). (CRIU's post-restore action
// script, the natural point, cannot be used under runc: runc's RPC notifications exclude shell
// action scripts.) Markers older than the timeout + 60 s are swept by the next barrier of the
// group. Each rule's tag carries its expiry; rules of a restore killed before its release are
// removed once expired (sweep_expired_holds).
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "base/error.h"
#include "store/group_record.h"

namespace arch {

class RestoreBarrier {
 public:
  /// For member `key` of `record` (its members on every node), waiting at most `timeout`.
  RestoreBarrier(GroupRecord record, std::string key, std::chrono::milliseconds timeout);

  RestoreBarrier(const RestoreBarrier&) = delete;
  RestoreBarrier& operator=(const RestoreBarrier&) = delete;
  ~RestoreBarrier();

  /// Before runc restore: the connections (IPv4 "a.b.c.d:port" pairs, local and remote)
  /// are held (DROP rules) until release() or failed().
  void hold(const std::vector<std::pair<std::string, std::string>>& connections);
  /// The line the restore's CRIU config gets.
  [[nodiscard]] static std::string criu_line() { return "leave-stopped"; }
  struct Released {
    std::string note;
    std::string failed_member;  ///< A member that failed to restore, else empty.
  };
  /// After runc restore succeeded: waits for the other members, then continues every one of
  /// `pids` (the container's processes) — unless a member failed and `stop_on_failure`:
  /// then they stay stopped (the caller fails this restore and kills them).
  Released release(const std::vector<int>& pids, bool stop_on_failure);
  /// The restore failed: the others are released at once.
  void failed();

  /// The member's side of the barrier without CRIU (for tests): marks `key` arrived and
  /// waits until every member of `record` has (or one failed, or the timeout); the note.
  static std::string arrive_and_wait(const GroupRecord& record, const std::string& key,
                                     std::chrono::milliseconds timeout);
  /// Before the restore, for a group on several nodes: marks `key` as being created (in the
  /// shared store, whichever node it is on) and waits until every member of `record` is, at
  /// most `timeout`. The error names those missing (this member's mark is then removed).
  /// Members may come back on any nodes (swapped, or all on one new node).
  static Result<void> wait_for_creation(const GroupRecord& record, const std::string& key,
                                        std::chrono::milliseconds timeout);
  /// Marks `key` failed in `record`'s arrivals.
  static void mark_failed(const GroupRecord& record, const std::string& key);

  /// Removes the connection holds a barrier left behind (its restore killed between hold
  /// and release): every iptables rule whose tag says its expiry (the hold's start + its
  /// wait + kHoldSlack) is before `now` (seconds since the epoch). Returns how many rules
  /// went. Each hold() sweeps first; archd sweeps every minute. Nothing without iptables.
  static std::size_t sweep_expired_holds(long now);
  /// The `iptables -D` arguments that remove the rule `line` of `iptables -S` when it is a
  /// hold tagged to expire before `now`, else empty.
  static std::vector<std::string> expired_hold_rule(const std::string& line, long now);
  /// How long a hold may outlast its wait (the restore itself, before the release).
  static constexpr std::chrono::minutes kHoldSlack{15};

 private:
  void unhold();

  GroupRecord record_;
  std::string key_;
  std::chrono::milliseconds timeout_;
  std::vector<std::vector<std::string>> rules_;  // iptables rule specs added by hold()
  std::string hold_note_;
};

}  // namespace arch
