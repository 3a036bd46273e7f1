// TcpPolicy: the policy's names, the container's connections from /proc, the restore-or-
// close decision.
#include "container/tcp_policy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <sstream>

#include "base/file_util.h"

namespace arch {

Result<TcpPolicy> parse_tcp_policy(std::string_view text) {
  if (text == "auto") return TcpPolicy::kAuto;
  if (text == "restore") return TcpPolicy::kRestore;
  if (text == "close") return TcpPolicy::kClose;
  if (text == "fail") return TcpPolicy::kFail;
  return fail("ARCH_TCP must be auto, restore, close or fail");
}

std::string_view tcp_policy_name(TcpPolicy policy) {
  switch (policy) {
    case TcpPolicy::kAuto:
      return "auto";
    case TcpPolicy::kRestore:
      return "restore";
    case TcpPolicy::kClose:
      return "close";
    case TcpPolicy::kFail:
      return "fail";
  }
  return "auto";
}

Result<TcpPolicy> container_tcp_policy(std::string_view node_default, std::string_view env_value) {
  if (!env_value.empty()) return parse_tcp_policy(env_value);
  auto node = parse_tcp_policy(node_default);
  return node ? node : TcpPolicy::kAuto;
}

namespace {

std::string ip_of(const std::string& endpoint) {
  auto colon = endpoint.rfind(':');
  std::string ip = endpoint.substr(0, colon);
  if (ip.size() >= 2 && ip.front() == '[') ip = ip.substr(1, ip.size() - 2);
  return ip;
}

// "0100007F:1F90" (or 32 hex digits for IPv6) as "127.0.0.1:8080".
std::string decode_endpoint(const std::string& hex, bool ipv6) {
  auto colon = hex.find(':');
  if (colon == std::string::npos) return {};
  std::string addr = hex.substr(0, colon);
  unsigned port = static_cast<unsigned>(std::stoul(hex.substr(colon + 1), nullptr, 16));
  unsigned char bytes[16] = {};
  std::size_t words = ipv6 ? 4 : 1;
  if (addr.size() != words * 8) return {};
  for (std::size_t w = 0; w < words; ++w) {
    // Each 32-bit word is printed in host (little-endian) order.
    uint32_t v = static_cast<uint32_t>(std::stoul(addr.substr(w * 8, 8), nullptr, 16));
    std::memcpy(bytes + w * 4, &v, 4);
  }
  char text[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(ipv6 ? AF_INET6 : AF_INET, bytes, text, sizeof text);
  return ipv6 ? fmt::format("[{}]:{}", text, port) : fmt::format("{}:{}", text, port);
}

}  // namespace

std::string TcpEndpoint::local_ip() const {
  return ip_of(local);
}
std::string TcpEndpoint::remote_ip() const {
  return ip_of(remote);
}

std::vector<TcpEndpoint> parse_proc_net_tcp(const std::string& text, bool ipv6,
                                            const std::vector<unsigned long>& inodes) {
  std::vector<TcpEndpoint> out;
  std::istringstream in(text);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string sl, local, remote, state, queues, timer, retr, uid, timeout;
    unsigned long inode = 0;
    if (!(fields >> sl >> local >> remote >> state >> queues >> timer >> retr >> uid >> timeout >>
          inode)) {
      continue;
    }
    if (state == "0A" || state == "07") continue;  // LISTEN, CLOSE
    if (inode == 0 || std::find(inodes.begin(), inodes.end(), inode) == inodes.end()) continue;
    try {
      TcpEndpoint e{decode_endpoint(local, ipv6), decode_endpoint(remote, ipv6)};
      if (!e.local.empty() && !e.remote.empty()) out.push_back(std::move(e));
    } catch (const std::exception&) {
      continue;  // not hex: not a line the kernel wrote
    }
  }
  return out;
}

Result<std::vector<TcpEndpoint>> container_tcp_connections(const std::vector<int>& pids) {
  std::vector<TcpEndpoint> out;
  if (pids.empty()) return out;
  std::vector<unsigned long> inodes;
  for (int pid : pids) {
    std::string dir = "/proc/" + std::to_string(pid) + "/fd";
    auto fd = open_file(dir, O_RDONLY | O_DIRECTORY);
    if (!fd) continue;  // exited meanwhile
    auto names = list_directory(fd->get());
    if (!names) continue;
    for (const auto& n : *names) {
      char target[64] = {};
      ssize_t len = ::readlinkat(fd->get(), n.c_str(), target, sizeof target - 1);
      if (len <= 0) continue;
      std::string_view t(target, static_cast<std::size_t>(len));
      if (!t.starts_with("socket:[")) continue;
      inodes.push_back(std::stoul(std::string(t.substr(8))));
    }
  }
  for (bool v6 : {false, true}) {
    std::string path = "/proc/" + std::to_string(pids.front()) + "/net/tcp" + (v6 ? "6" : "");
    auto text = read_file(path, 64 << 20);
    if (!text) continue;  // no IPv6
    auto found = parse_proc_net_tcp(*text, v6, inodes);
    out.insert(out.end(), found.begin(), found.end());
  }
  return out;
}

bool is_loopback_ip(std::string_view ip) {
  return ip.starts_with("127.") || ip == "::1" || ip.starts_with("::ffff:127.");
}

TcpDecision decide_tcp(TcpPolicy policy, const std::vector<TcpEndpoint>& connections,
                       bool same_node, const std::vector<std::string>& addresses) {
  if (policy == TcpPolicy::kRestore) return {true, "ARCH_TCP=restore"};
  if (policy == TcpPolicy::kClose) return {false, "ARCH_TCP=close"};
  for (const auto& c : connections) {
    std::string local = c.local_ip();
    if (local.starts_with("::ffff:")) local = local.substr(7);
    bool present = std::find(addresses.begin(), addresses.end(), local) != addresses.end() ||
                   std::find(addresses.begin(), addresses.end(), c.local_ip()) != addresses.end();
    if (!present) return {false, "address " + c.local_ip() + " is not in the new namespace"};
    bool inside = is_loopback_ip(c.local_ip()) && is_loopback_ip(c.remote_ip());
    if (!same_node && !inside) return {false, "rescheduled to another node"};
  }
  return {true, same_node ? "same node, same addresses" : "loopback connections only"};
}

}  // namespace arch
