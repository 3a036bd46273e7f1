// TcpPolicy: what happens to a container's established TCP connections across a
// checkpoint (ARCH_TCP per container, [checkpoint] tcp per node).
//   auto     dumped (CRIU --tcp-established); at restore kept where they can live (same
//            node and every local address present in the new namespace, or both ends
//            inside the checkpoint: loopback), else closed (CRIU tcp-close: the
//            application sees a reset and reconnects).
//   restore  dumped and always restored (a restore that cannot fails, normal policy).
//   close    dumped and always closed at restore.
//   fail     a container with established connections is not checkpointed.
// runc 1.1 has --tcp-established for checkpoint and restore but no --tcp-close: ARCH writes
// `tcp-close` into the CRIU config file of the restore. Only these fixed lines are ever
// written; the container's value only picks among them.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"

namespace arch {

enum class TcpPolicy { kAuto, kRestore, kClose, kFail };

/// "auto" | "restore" | "close" | "fail", exactly; anything else is an error.
Result<TcpPolicy> parse_tcp_policy(std::string_view text);
std::string_view tcp_policy_name(TcpPolicy policy);
/// ARCH_TCP when the container sets it (validated strictly), else the node's default.
Result<TcpPolicy> container_tcp_policy(std::string_view node_default, std::string_view env_value);

/// One connection: "ip:port" both ends ("[v6]:port" for IPv6).
struct TcpEndpoint {
  std::string local;
  std::string remote;
  [[nodiscard]] std::string local_ip() const;
  [[nodiscard]] std::string remote_ip() const;
};

/// Parses /proc/<pid>/net/tcp or tcp6 text: the connections (any state but LISTEN and
/// CLOSE) whose socket inode is in `inodes`.
std::vector<TcpEndpoint> parse_proc_net_tcp(const std::string& text, bool ipv6,
                                            const std::vector<unsigned long>& inodes);
/// The TCP connections the processes `pids` hold (their sockets looked up in the network
/// namespace of pids.front()).
Result<std::vector<TcpEndpoint>> container_tcp_connections(const std::vector<int>& pids);

bool is_loopback_ip(std::string_view ip);

struct TcpDecision {
  bool restore = false;  ///< true: --tcp-established; false: tcp-close.
  std::string reason;
};
/// Restore or close the dumped `connections` into a namespace holding `addresses`.
TcpDecision decide_tcp(TcpPolicy policy, const std::vector<TcpEndpoint>& connections,
                       bool same_node, const std::vector<std::string>& addresses);

}  // namespace arch
