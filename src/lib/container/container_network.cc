// ContainerNetwork: network namespaces read and made through iproute2 (`ip -j`), run in
// the namespace by a thread that setns()/unshare()s into it first (a fork inherits the
// forking thread's namespaces, so nothing else of ours changes namespace).
#include "container/container_network.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <regex>
#include <thread>

#include "base/file_util.h"
#include "base/process.h"

namespace arch {
namespace {

using json = nlohmann::json;

Result<std::string> ip_binary() {
  for (const char* p : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
    if (::access(p, X_OK) == 0) return std::string(p);
  }
  return fail(
      "iproute2's ip is not installed (/usr/sbin/ip): it reads and makes the "
      "container's network namespace");
}

// Runs `fn` on a new thread (so that namespace changes stay on it) and returns its result.
template <typename Fn>
auto on_own_thread(Fn fn) -> decltype(fn()) {
  std::optional<decltype(fn())> out;
  std::thread([&] { out.emplace(fn()); }).join();
  return std::move(*out);
}

Result<std::string> ip_in_current_netns(const std::vector<std::string>& args) {
  auto ip = ip_binary();
  if (!ip) return std::unexpected(ip.error());
  std::vector<std::string> argv = {*ip};
  argv.insert(argv.end(), args.begin(), args.end());
  ProcessOptions opts;
  opts.timeout = std::chrono::seconds(20);
  auto r = run_process(argv, opts);
  if (!r) return std::unexpected(r.error());
  if (!r->ok()) {
    std::string err = r->err.substr(0, r->err.find('\n'));
    return fail(join_argv(argv) + ": " + (err.empty() ? "failed" : err));
  }
  return r->out;
}

Result<std::string> ip_in_netns(int netns_fd, const std::vector<std::string>& args) {
  return on_own_thread([&]() -> Result<std::string> {
    if (::setns(netns_fd, CLONE_NEWNET) != 0) return fail_errno("setns into the network namespace");
    return ip_in_current_netns(args);
  });
}

bool valid_name(const std::string& s) {
  static const std::regex re("[A-Za-z0-9_.:@][A-Za-z0-9_.:@-]{0,14}");
  return std::regex_match(s, re);
}
bool valid_cidr(const std::string& s) {
  static const std::regex re("[0-9a-fA-F:.]{2,45}/[0-9]{1,3}");
  return std::regex_match(s, re);
}
bool valid_route_value(const std::string& s) {
  static const std::regex re("[0-9a-zA-Z:./_]{1,64}");
  return std::regex_match(s, re) && s.front() != '-';
}

Result<ino_t> netns_inode(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return fail_errno("stat " + path);
  return st.st_ino;
}

bool auto_address(const NetInterface& i, const std::string& a) {
  if (i.name == "lo" && (a == "127.0.0.1/8" || a == "::1/128")) return true;
  return a.starts_with("fe80:");  // link-local: the kernel makes it
}

// The `ip route replace` arguments of one recorded route, or empty when ARCH does not
// remake it (made by the kernel, or over a link the namespace does not have).
std::vector<std::string> route_args(const json& r, const std::vector<std::string>& links) {
  if (!r.is_object() || r.value("protocol", "") == "kernel") return {};
  std::string dev = r.value("dev", "");
  if (std::find(links.begin(), links.end(), dev) == links.end()) return {};
  std::vector<std::string> args = {"route", "replace", r.value("dst", "")};
  if (r.contains("gateway")) args.insert(args.end(), {"via", r.value("gateway", "")});
  args.insert(args.end(), {"dev", dev});
  if (r.contains("scope")) args.insert(args.end(), {"scope", r.value("scope", "")});
  if (r.contains("prefsrc")) args.insert(args.end(), {"src", r.value("prefsrc", "")});
  if (r.contains("metric") && r["metric"].is_number_unsigned())
    args.insert(args.end(), {"metric", std::to_string(r["metric"].get<uint64_t>())});
  for (std::size_t i = 2; i < args.size(); ++i) {
    if (!valid_route_value(args[i])) return {};
  }
  return args;
}

}  // namespace

Result<SpecNetns> spec_network_namespace(const std::string& bundle) {
  auto text = read_file(bundle + "/config.json", 64 << 20);
  if (!text) return std::unexpected(text.error());
  auto spec = json::parse(*text, nullptr, false);
  if (spec.is_discarded() || !spec.is_object()) return fail("config.json: not valid JSON");
  SpecNetns out;
  auto linux_it = spec.find("linux");
  if (linux_it == spec.end() || !linux_it->is_object()) return out;
  auto list = linux_it->find("namespaces");
  if (list == linux_it->end() || !list->is_array()) return out;
  for (const auto& ns : *list) {
    if (!ns.is_object() || ns.value("type", "") != "network") continue;
    out.present = true;
    if (ns.contains("path") && ns["path"].is_string()) out.path = ns["path"].get<std::string>();
  }
  return out;
}

Result<std::vector<NetInterface>> parse_ip_addr_json(const std::string& text) {
  auto doc = json::parse(text, nullptr, false);
  if (doc.is_discarded() || !doc.is_array()) return fail("ip -j addr: output is not a JSON array");
  std::vector<NetInterface> out;
  for (const auto& link : doc) {
    if (!link.is_object() || !link.contains("ifname") || !link["ifname"].is_string()) continue;
    NetInterface i;
    i.name = link["ifname"].get<std::string>();
    if (link.value("link_type", "") == "loopback") i.kind = "loopback";
    if (auto li = link.find("linkinfo"); li != link.end() && li->is_object())
      i.kind = li->value("info_kind", i.kind);
    if (auto flags = link.find("flags"); flags != link.end() && flags->is_array()) {
      for (const auto& f : *flags) i.up = i.up || (f.is_string() && f.get<std::string>() == "UP");
    }
    if (auto ai = link.find("addr_info"); ai != link.end() && ai->is_array()) {
      for (const auto& a : *ai) {
        if (!a.is_object() || !a.contains("local") || !a["local"].is_string()) continue;
        i.addresses.push_back(a["local"].get<std::string>() + "/" +
                              std::to_string(a.value("prefixlen", 0)));
      }
    }
    out.push_back(std::move(i));
  }
  return out;
}

Result<NetworkRecord> inspect_network_namespace(int netns_fd) {
  NetworkRecord rec;
  auto addr = ip_in_netns(netns_fd, {"-j", "-d", "addr", "show"});
  if (!addr) return std::unexpected(addr.error());
  auto links = parse_ip_addr_json(*addr);
  if (!links) return std::unexpected(links.error());
  rec.interfaces = std::move(*links);
  auto routes = ip_in_netns(netns_fd, {"-j", "route", "show"});
  if (!routes) return std::unexpected(routes.error());
  auto doc = json::parse(*routes, nullptr, false);
  if (!doc.is_discarded() && doc.is_array()) rec.routes = std::move(doc);
  return rec;
}

Result<NetworkRecord> record_container_network(int pid, const std::string& bundle) {
  auto spec = spec_network_namespace(bundle);
  if (!spec) return std::unexpected(spec.error());
  std::string path = "/proc/" + std::to_string(pid) + "/ns/net";
  auto theirs = netns_inode(path);
  auto ours = netns_inode("/proc/self/ns/net");
  if (!theirs || !ours) return std::unexpected((theirs ? ours : theirs).error());
  NetworkRecord rec;
  if (!spec->present || *theirs == *ours) {
    rec.mode = "host";
    return rec;
  }
  auto fd = open_file(path, O_RDONLY);
  if (!fd) return std::unexpected(fd.error());
  auto inspected = inspect_network_namespace(fd->get());
  if (!inspected) return std::unexpected(inspected.error().wrap("read the container's network"));
  rec = std::move(*inspected);
  rec.mode = spec->path.empty() ? "own" : "external";
  rec.criu_key = spec->path.empty() ? kArchNetnsKey : kRuncNetnsKey;
  return rec;
}

Result<std::string> dump_criu_line(const NetworkRecord& record, int pid) {
  if (record.mode != "own") return std::string();
  auto ino = netns_inode("/proc/" + std::to_string(pid) + "/ns/net");
  if (!ino) return std::unexpected(ino.error());
  return "external net[" + std::to_string(*ino) + "]:" + kArchNetnsKey;
}

Result<UniqueFd> make_network_namespace(const NetworkRecord& record) {
  return on_own_thread([&]() -> Result<UniqueFd> {
    if (::unshare(CLONE_NEWNET) != 0) return fail_errno("unshare a network namespace");
    auto fd = open_file("/proc/thread-self/ns/net", O_RDONLY);
    if (!fd) return std::unexpected(fd.error());
    std::vector<std::string> made;
    for (const auto& i : record.interfaces) {
      if (i.name != "lo" && i.kind != "dummy") continue;  // the network manager's links
      if (i.name != "lo") {
        auto added = ip_in_current_netns({"link", "add", i.name, "type", "dummy"});
        if (!added) return std::unexpected(added.error());
      }
      if (i.up) {
        auto up = ip_in_current_netns({"link", "set", i.name, "up"});
        if (!up) return std::unexpected(up.error());
      }
      for (const auto& a : i.addresses) {
        if (auto_address(i, a)) continue;
        auto added = ip_in_current_netns({"addr", "replace", a, "dev", i.name});
        if (!added) return std::unexpected(added.error());
      }
      made.push_back(i.name);
    }
    for (const auto& r : record.routes) {
      auto args = route_args(r, made);
      if (args.empty()) continue;
      auto added = ip_in_current_netns(args);
      if (!added) return std::unexpected(added.error());
    }
    return std::move(*fd);
  });
}

Result<std::vector<std::string>> missing_interfaces(const NetworkRecord& record, int pid) {
  std::vector<std::string> missing;
  if (record.mode == "host") return missing;
  auto fd = open_file("/proc/" + std::to_string(pid) + "/ns/net", O_RDONLY);
  if (!fd) return std::unexpected(fd.error());
  auto now = inspect_network_namespace(fd->get());
  if (!now) return std::unexpected(now.error());
  for (const auto& want : record.interfaces) {
    if (!want.up) continue;
    auto it = std::find_if(now->interfaces.begin(), now->interfaces.end(),
                           [&](const NetInterface& i) { return i.name == want.name; });
    if (it == now->interfaces.end()) {
      missing.push_back(want.name + " (missing)");
    } else if (!it->up) {
      missing.push_back(want.name + " (down)");
    }
  }
  return missing;
}

Result<std::vector<std::string>> namespace_addresses(int netns_fd) {
  auto rec = inspect_network_namespace(netns_fd);
  if (!rec) return std::unexpected(rec.error());
  std::vector<std::string> out;
  for (const auto& i : rec->interfaces) {
    for (const auto& a : i.addresses) out.push_back(a.substr(0, a.find('/')));
  }
  return out;
}

json to_json(const NetworkRecord& record) {
  json interfaces = json::array();
  for (const auto& i : record.interfaces) {
    interfaces.push_back(
        {{"name", i.name}, {"kind", i.kind}, {"up", i.up}, {"addresses", i.addresses}});
  }
  return {{"mode", record.mode},
          {"criu_key", record.criu_key},
          {"interfaces", interfaces},
          {"routes", record.routes}};
}

Result<NetworkRecord> network_record_from_json(const json& j) {
  if (!j.is_object()) return fail("manifest: network is not an object");
  NetworkRecord rec;
  rec.mode = j.value("mode", "");
  if (rec.mode != "own" && rec.mode != "external" && rec.mode != "host")
    return fail("manifest: network.mode must be own, external or host");
  rec.criu_key = j.value("criu_key", "");
  if (rec.mode == "own" && rec.criu_key != kArchNetnsKey)
    return fail("manifest: network.criu_key of an own namespace must be arch-netns");
  if (rec.mode == "external" && rec.criu_key != kRuncNetnsKey)
    return fail("manifest: network.criu_key of an external namespace must be extRootNetNS");
  if (auto list = j.find("interfaces"); list != j.end() && list->is_array()) {
    for (const auto& e : *list) {
      if (!e.is_object()) return fail("manifest: network.interfaces holds a non-object");
      NetInterface i;
      i.name = e.value("name", "");
      i.kind = e.value("kind", "");
      i.up = e.value("up", false);
      if (!valid_name(i.name) || (!i.kind.empty() && !valid_name(i.kind)))
        return fail("manifest: network interface name or kind is malformed");
      if (auto a = e.find("addresses"); a != e.end() && a->is_array()) {
        for (const auto& s : *a) {
          if (!s.is_string() || !valid_cidr(s.get<std::string>()))
            return fail("manifest: network address is malformed");
          i.addresses.push_back(s.get<std::string>());
        }
      }
      rec.interfaces.push_back(std::move(i));
    }
  }
  if (auto r = j.find("routes"); r != j.end() && r->is_array()) rec.routes = *r;
  return rec;
}

}  // namespace arch
