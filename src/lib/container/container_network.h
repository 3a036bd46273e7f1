// ContainerNetwork: a container's network namespace recorded at checkpoint, given back at
// restore, and checked after it.
//
// Why ARCH does this and not CRIU: runc 1.1 always asks CRIU for an *empty* network
// namespace (checkpoint.go: `nsmask := unix.CLONE_NEWNET ... opts.EmptyNs`, "runc doesn't
// manage network devices"), on dump and on restore, and CRIU's config files cannot clear
// that bit. A container that had its own namespace (no path in the spec: `ctr run`,
// plain runc) therefore came back in a fresh namespace with `lo` down and no addresses.
// So ARCH does for such a namespace what runc does for a spec with a namespace path
// (a pod sandbox, CNI): the dump marks it external (`external net[<inode>]:arch-netns` in
// the CRIU config file), and at restore ARCH makes a namespace as it was (lo and dummy
// links up, their addresses, routes), which runc hands on to CRIU (`inherit-fd`), so
// the processes and their sockets are restored into a configured network.
// Modes: "own" (as above), "external" (spec path: runc's own extRootNetNS handling; the
// new container's path is used), "host" (the host's namespace: nothing to do).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"

namespace arch {

/// One interface as `ip -j -d addr` shows it.
struct NetInterface {
  std::string name;
  std::string kind;  ///< linkinfo kind ("veth", "dummy" ...); "loopback" for lo; else "".
  bool up = false;   ///< IFF_UP.
  std::vector<std::string> addresses;  ///< "127.0.0.1/8", "fd00::1/64".
};

/// What a restore needs to know about the checkpointed container's network namespace.
struct NetworkRecord {
  std::string mode;  ///< "own" | "external" | "host".
  /// The CRIU external key the namespace was dumped under ("arch-netns" for own,
  /// "extRootNetNS" for external; empty for host).
  std::string criu_key;
  std::vector<NetInterface> interfaces;
  nlohmann::json routes = nlohmann::json::array();  ///< `ip -j route show` (main table).
};

inline constexpr const char* kArchNetnsKey = "arch-netns";
inline constexpr const char* kRuncNetnsKey = "extRootNetNS";  // runc 1.1's key
/// The fd number the restore's network namespace has in runc and in CRIU.
inline constexpr int kInheritedNetnsFd = 200;

/// The spec's network namespace: present (the container gets its own or joins one) and
/// its path (empty: a new one). From `<bundle>/config.json`.
struct SpecNetns {
  bool present = false;
  std::string path;
};
Result<SpecNetns> spec_network_namespace(const std::string& bundle);

/// The interfaces, addresses and routes of the network namespace `netns_fd`.
Result<NetworkRecord> inspect_network_namespace(int netns_fd);

/// Records the network of the container whose init is `pid` (mode from the spec in
/// `bundle` and the namespace's identity against ours).
Result<NetworkRecord> record_container_network(int pid, const std::string& bundle);

/// The CRIU config line for the dump (`external net[<inode>]:arch-netns`) for an own
/// namespace; empty otherwise.
Result<std::string> dump_criu_line(const NetworkRecord& record, int pid);

/// A new network namespace made as `record` says: lo up, dummy links re-made, the
/// addresses of the links it has, the routes over them. Links ARCH cannot make (veth,
/// macvlan: the network manager's) are left to it; the check after restore names them.
Result<UniqueFd> make_network_namespace(const NetworkRecord& record);

/// The interfaces up at the checkpoint that are not up in the namespace of `pid`, as
/// "eth0 (missing)", "lo (down)". Empty: all there.
Result<std::vector<std::string>> missing_interfaces(const NetworkRecord& record, int pid);

/// The addresses (without prefix length) present in the namespace `netns_fd`.
Result<std::vector<std::string>> namespace_addresses(int netns_fd);

nlohmann::json to_json(const NetworkRecord& record);
/// Parses the manifest's "network" object (strictly: names, kinds and addresses must look
/// like what `ip` prints; a sealed manifest is trusted, but it is still text).
Result<NetworkRecord> network_record_from_json(const nlohmann::json& j);

/// Parses `ip -j -d addr show` output.
Result<std::vector<NetInterface>> parse_ip_addr_json(const std::string& text);

}  // namespace arch
