// NodeConfig: parsing (inih), trust checks and in-place edits of the node config.
#include "config/node_config.h"

#include <fcntl.h>
#include <ini.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <limits>

#include "base/duration.h"
#include "base/enum_names.h"
#include "base/file_util.h"
#include "base/host.h"
#include "base/names.h"
#include "base/suggest.h"

namespace arch {

namespace {

constexpr EnumNames<LogLevel, 5> kLogLevels{{{{LogLevel::kError, "error"},
                                              {LogLevel::kWarn, "warning"},
                                              {LogLevel::kWarn, "warn"},
                                              {LogLevel::kInfo, "info"},
                                              {LogLevel::kDebug, "debug"}}}};

}  // namespace

Result<LogLevel> parse_log_level(std::string_view text) {
  if (auto level = kLogLevels.parse(text)) return *level;
  return fail(ErrorKind::kInvalidInput,
              "unknown log level '" + std::string(text) + "' (want error, warn, info or debug)");
}

std::string_view log_level_name(LogLevel level) {
  return kLogLevels.name(level, "info");
}

std::string config_path_from_env() {
  const char* env = std::getenv("ARCH_CONFIG");
  if (env != nullptr && *env != '\0') return env;
  return kDefaultConfigPath;
}

namespace {

struct ParseState {
  NodeConfig config;
  std::string error;
};

// An integer in [lo, hi], or an error naming the key.
bool parse_int_in(ParseState* state, std::string_view key, std::string_view v, int lo, int hi,
                  int& out, std::string_view section = "agent") {
  char* end = nullptr;
  std::string text(v);
  long n = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || n < lo || n > hi) {
    state->error = "[" + std::string(section) + "] " + std::string(key) +
                   " must be a whole number from " + std::to_string(lo) + " to " +
                   std::to_string(hi);
    return false;
  }
  out = static_cast<int>(n);
  return true;
}

// "4096" or "64G": a whole number with an optional binary suffix K, M, G or T (then
// optionally "B" or "iB"); at least 1.
bool parse_byte_size(std::string_view v, uint64_t& out) {
  uint64_t n = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || end == v.data() || n == 0) return false;
  std::string_view unit(end, static_cast<size_t>(v.data() + v.size() - end));
  int shift = 0;
  if (!unit.empty()) {
    constexpr std::string_view kUnits = "KMGT";
    auto at = kUnits.find(static_cast<char>(std::toupper(static_cast<unsigned char>(unit[0]))));
    if (at == std::string_view::npos) return false;
    shift = 10 * static_cast<int>(at + 1);
    unit.remove_prefix(1);
    if (unit != "" && unit != "B" && unit != "iB") return false;
  }
  if (n > (std::numeric_limits<uint64_t>::max() >> shift)) return false;
  out = n << shift;
  return true;
}

int on_restore_limit(ParseState* state, std::string_view k, std::string_view v) {
  auto& l = state->config.limits;
  if (k == "max_entries") {
    bool digits = !v.empty() && std::all_of(v.begin(), v.end(), [](char c) {
      return std::isdigit(static_cast<unsigned char>(c)) != 0;
    });
    if (!digits || !parse_byte_size(v, l.max_entries)) {
      state->error = "[restore] max_entries must be a positive whole number";
      return 0;
    }
    return 1;
  }
  uint64_t* field = k == "max_rootfs_bytes"    ? &l.max_rootfs_bytes
                    : k == "max_archive_bytes" ? &l.max_archive_bytes
                                               : nullptr;
  if (field == nullptr) return 1;
  if (!parse_byte_size(v, *field)) {
    state->error = "[restore] " + std::string(k) +
                   " must be a positive number of bytes (K, M, G, T suffixes allowed)";
    return 0;
  }
  return 1;
}

int on_agent_entry(ParseState* state, std::string_view k, std::string_view v) {
  auto& a = state->config.agent;
  auto path = [&](std::string& out) {
    if (!v.empty() && v.front() != '/') {
      state->error = "[agent] " + std::string(k) + " must be an absolute path";
      return 0;
    }
    out = v;
    return 1;
  };
  if (k == "socket") return path(a.socket);
  if (k == "state_file") return path(a.state_file);
  if (k == "event_log") return path(a.event_log);
  if (k == "containerd_address") return path(a.containerd_address);
  if (k == "metrics_address") {
    a.metrics_address = v;
    return 1;
  }
  if (k == "imds_endpoint") {
    if (!v.empty() && !v.starts_with("http://") && !v.starts_with("https://")) {
      state->error = "[agent] imds_endpoint must be an http:// or https:// URL";
      return 0;
    }
    a.imds_endpoint = v;
    return 1;
  }
  if (k == "rebalance_action") {
    if (v != "none" && v != "drain") {
      state->error = "[agent] rebalance_action must be none or drain";
      return 0;
    }
    a.rebalance_action = v;
    return 1;
  }
  if (k == "imds_poll_seconds") return parse_int_in(state, k, v, 1, 60, a.imds_poll_seconds);
  if (k == "imds_token_ttl_seconds") {
    return parse_int_in(state, k, v, 1, 21600, a.imds_token_ttl_seconds);
  }
  if (k == "safety_margin_seconds")
    return parse_int_in(state, k, v, 0, 600, a.safety_margin_seconds);
  if (k == "finalize_parallel") return parse_int_in(state, k, v, 0, 256, a.finalize_parallel);
  if (k == "metrics_max_keys") return parse_int_in(state, k, v, 0, 10000, a.metrics_max_keys);
  if (k == "status_page") {
    if (v != "true" && v != "false") {
      state->error = "[agent] status_page must be true or false";
      return 0;
    }
    a.status_page = v == "true";
    return 1;
  }
  return 1;
}

int on_checkpoint_entry(ParseState* state, std::string_view k, std::string_view v) {
  auto& c = state->config.checkpoint;
  auto one_of = [&](std::string& out, std::initializer_list<std::string_view> allowed) {
    for (auto a : allowed) {
      if (v == a) {
        out = v;
        return 1;
      }
    }
    std::string names;
    for (auto a : allowed) names += (names.empty() ? "" : " or ") + std::string(a);
    state->error = "[checkpoint] " + std::string(k) + " must be " + names;
    return 0;
  };
  if (k == "rootfs_compression") return one_of(c.rootfs_compression, {"none", "zstd"});
  if (k == "pre_copy") return one_of(c.pre_copy, {"off", "on", "auto"});
  if (k == "network_lock") return one_of(c.network_lock, {"skip", "iptables", "nftables"});
  if (k == "tcp") return one_of(c.tcp, {"auto", "restore", "close", "fail"});
  if (k == "pages_at_rest") return one_of(c.pages_at_rest, {"plain", "streamed", "encrypted"});
  if (k == "zstd_level") return parse_int_in(state, k, v, 1, 19, c.zstd_level, "checkpoint");
  if (k == "zstd_threads") return parse_int_in(state, k, v, 0, 64, c.zstd_threads, "checkpoint");
  if (k == "failed_dumps_kept")
    return parse_int_in(state, k, v, 0, 100, c.failed_dumps_kept, "checkpoint");
  if (k == "priority_max")
    return parse_int_in(state, k, v, 0, 1000000, c.priority_max, "checkpoint");
  if (k == "interval" || k == "min_interval") {
    auto& out = k == "interval" ? c.interval : c.min_interval;
    if (k == "interval" && v == "off") {
      out = std::chrono::seconds(0);
      return 1;
    }
    auto d = parse_duration(v);
    if (!d || d->count() <= 0) {
      state->error = "[checkpoint] " + std::string(k) + " must be a duration (90s, 15m, 1h)" +
                     (k == "interval" ? std::string(" or off") : std::string());
      return 0;
    }
    out = *d;
    return 1;
  }
  if (k == "container_interval") {
    if (v != "allow" && v != "deny") {
      state->error = "[checkpoint] container_interval must be allow or deny";
      return 0;
    }
    c.container_interval = v == "allow";
    return 1;
  }
  if (k == "workdir_capture") {
    if (v == "off") {
      c.workdir_capture = 0;
      return 1;
    }
    if (!parse_byte_size(v, c.workdir_capture)) {
      state->error = "[checkpoint] workdir_capture must be a number of bytes (K, M, G) or off";
      return 0;
    }
    return 1;
  }
  if (k == "ghost_limit") {
    // CRIU's own limit is a 64-bit byte count; 0 would refuse every deleted file.
    if (!parse_byte_size(v, c.ghost_limit) || c.ghost_limit == 0) {
      state->error = "[checkpoint] ghost_limit must be a positive number of bytes (K, M, G, T)";
      return 0;
    }
    return 1;
  }
  return 1;
}

int on_jobs_entry(ParseState* state, std::string_view k, std::string_view v) {
  auto& j = state->config.jobs;
  if (k == "dump_dir") {
    if (!v.empty() && v.front() != '/') {
      state->error = "[jobs] dump_dir must be an absolute path";
      return 0;
    }
    j.dump_dir = v;
    return 1;
  }
  if (k == "compression") {
    if (v != "zstd" && v != "none") {
      state->error = "[jobs] compression must be zstd or none";
      return 0;
    }
    j.compress = v == "zstd";
    return 1;
  }
  if (k == "compression_level") {
    if (!parse_int_in(state, k, v, 1, 19, j.compression_level)) {
      state->error = "[jobs] compression_level must be a whole number from 1 to 19";
      return 0;
    }
    return 1;
  }
  if (k == "leave_running") {
    if (v != "true" && v != "false") {
      state->error = "[jobs] leave_running must be true or false";
      return 0;
    }
    j.leave_running = v == "true";
    return 1;
  }
  if (k == "stream_images") {
    if (v != "true" && v != "false") {
      state->error = "[jobs] stream_images must be true or false";
      return 0;
    }
    j.stream_images = v == "true";
    return 1;
  }
  if (k == "stream_compression") {
    if (v != "auto" && v != "off" && v != "zstd") {
      state->error = "[jobs] stream_compression must be auto, off or zstd";
      return 0;
    }
    j.stream_compression = v;
    return 1;
  }
  if (k == "stream_compression_level") {
    if (!parse_int_in(state, k, v, 0, 19, j.stream_compression_level)) {
      state->error = "[jobs] stream_compression_level must be a whole number from 0 to 19";
      return 0;
    }
    return 1;
  }
  return 1;
}

// [roots] <name> = <path>: a valid name other than "local", an absolute path without '.'
// or '..' components (repeated and trailing '/' dropped).
int on_roots_entry(ParseState* state, std::string_view k, std::string_view v) {
  if (auto ok = validate_name("[roots] name", k); !ok) {
    state->error = ok.error().message();
    return 0;
  }
  if (k == kLocalRootName) {
    state->error = "[roots] local is the [store] path; choose another name";
    return 0;
  }
  if (v.empty() || v.front() != '/') {
    state->error = "[roots] " + std::string(k) + " must be an absolute path";
    return 0;
  }
  std::string clean;
  std::size_t pos = 0;
  while (pos < v.size()) {
    std::size_t next = v.find('/', pos);
    if (next == std::string_view::npos) next = v.size();
    std::string_view part = v.substr(pos, next - pos);
    if (part == "." || part == "..") {
      state->error = "[roots] " + std::string(k) + " must not contain '.' or '..'";
      return 0;
    }
    if (!part.empty()) clean += "/" + std::string(part);
    pos = next + 1;
  }
  if (clean.empty()) {
    state->error = "[roots] " + std::string(k) + " must not be /";
    return 0;
  }
  for (auto& r : state->config.roots) {
    if (r.name == k) {
      r.path = clean;
      return 1;
    }
  }
  state->config.roots.push_back({std::string(k), clean});
  return 1;
}

// [peers] nodes: "name=host:port, name=[v6]:port, ...".
bool parse_peer_nodes(ParseState* state, std::string_view v) {
  std::vector<NodeConfig::Peers::Node> out;
  std::size_t pos = 0;
  while (pos <= v.size()) {
    auto comma = v.find(',', pos);
    if (comma == std::string_view::npos) comma = v.size();
    std::string item(v.substr(pos, comma - pos));
    pos = comma + 1;
    while (!item.empty() && item.front() == ' ') item.erase(0, 1);
    while (!item.empty() && item.back() == ' ') item.pop_back();
    if (item.empty()) continue;
    auto eq = item.find('=');
    auto colon = item.rfind(':');
    if (eq == std::string::npos || colon == std::string::npos || colon < eq) {
      state->error = "[peers] nodes: \"" + item + "\" is not name=host:port";
      return false;
    }
    NodeConfig::Peers::Node n;
    n.name = item.substr(0, eq);
    n.host = item.substr(eq + 1, colon - eq - 1);
    if (n.host.size() > 2 && n.host.front() == '[' && n.host.back() == ']') {
      n.host = n.host.substr(1, n.host.size() - 2);
    }
    std::string port = item.substr(colon + 1);
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), n.port);
    if (auto ok = validate_node_name(n.name); !ok) {
      state->error = "[peers] nodes: " + ok.error().message();
      return false;
    }
    if (n.host.empty() || ec != std::errc() || end != port.data() + port.size() || n.port < 1 ||
        n.port > 65535) {
      state->error = "[peers] nodes: \"" + item + "\" is not name=host:port (port 1-65535)";
      return false;
    }
    for (const auto& other : out) {
      if (other.name == n.name) {
        state->error = "[peers] nodes: " + n.name + " twice";
        return false;
      }
    }
    out.push_back(std::move(n));
  }
  state->config.peers.nodes = std::move(out);
  return true;
}

int on_peers_entry(ParseState* state, std::string_view k, std::string_view v) {
  auto& p = state->config.peers;
  if (k == "dir") {
    if (v.empty() || v.front() != '/') {
      state->error = "[peers] dir must be an absolute path";
      return 0;
    }
    p.dir = v;
    return 1;
  }
  if (k == "node_name") {
    if (!v.empty()) {
      if (auto ok = validate_node_name(v); !ok) {
        state->error = "[peers] node_name: " + ok.error().message();
        return 0;
      }
    }
    p.node_name = v;
    return 1;
  }
  if (k == "listen") {
    if (!v.empty() && (v.rfind(':') == std::string_view::npos || v.rfind(':') == 0)) {
      state->error = "[peers] listen must be host:port (or empty: off)";
      return 0;
    }
    p.listen = v;
    return 1;
  }
  if (k == "nodes") return parse_peer_nodes(state, v) ? 1 : 0;
  if (k == "timeout") return parse_int_in(state, k, v, 1, 600, p.timeout_seconds, "peers") ? 1 : 0;
  if (k == "cert_days") return parse_int_in(state, k, v, 1, 3650, p.cert_days, "peers") ? 1 : 0;
  if (k == "migrate_ctr" || k == "migrate_runtime" || k == "migrate_runc_root" ||
      k == "migrate_cgroup_parent") {
    if (!v.empty() && v.front() != '/') {
      state->error = "[peers] " + std::string(k) + " must be an absolute path";
      return 0;
    }
    (k == "migrate_ctr"         ? p.migrate_ctr
     : k == "migrate_runtime"   ? p.migrate_runtime
     : k == "migrate_runc_root" ? p.migrate_runc_root
                                : p.migrate_cgroup_parent) = v;
    return 1;
  }
  if (k == "migrate_docker") {
    if (v.empty() || v.front() != '/') {
      state->error = "[peers] migrate_docker must be an absolute path";
      return 0;
    }
    p.migrate_docker = v;
    return 1;
  }
  if (k == "migrate_docker_host") {
    if (!(v.starts_with("unix:///") || v.starts_with("tcp://"))) {
      state->error = "[peers] migrate_docker_host must be unix:///path or tcp://host:port";
      return 0;
    }
    p.migrate_docker_host = v;
    return 1;
  }
  if (k == "migrate_docker_runtime") {
    if (v.empty() || v.size() > 64 ||
        v.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") !=
            std::string_view::npos ||
        v.front() == '-') {
      state->error = "[peers] migrate_docker_runtime must be a Docker runtime name";
      return 0;
    }
    p.migrate_docker_runtime = v;
    return 1;
  }
  return 1;
}

// The sections and keys this version knows: those of default_node_config_text(), which
// shows every key ([roots] takes any name). Anything else is a typo or a newer version's
// key, and either way the operator must hear of it rather than have it silently ignored.
struct KnownKeys {
  std::vector<std::string> sections;
  std::vector<std::pair<std::string, std::string>> keys;  // (section, key)
};

const KnownKeys& known_keys() {
  static const KnownKeys known = [] {
    KnownKeys k;
    std::string text = default_node_config_text();
    std::string section;
    for (std::size_t pos = 0; pos < text.size();) {
      auto nl = text.find('\n', pos);
      if (nl == std::string::npos) nl = text.size();
      std::string_view line(text.data() + pos, nl - pos);
      pos = nl + 1;
      if (line.empty() || line.front() == '#' || line.front() == ';') continue;
      if (line.front() == '[') {
        section = std::string(line.substr(1, line.find(']') - 1));
        k.sections.push_back(section);
        continue;
      }
      auto eq = line.find('=');
      if (eq == std::string_view::npos) continue;
      auto key = line.substr(0, eq);
      while (!key.empty() && key.back() == ' ') key.remove_suffix(1);
      k.keys.emplace_back(section, std::string(key));
    }
    return k;
  }();
  return known;
}

// Refuses a section or key this version does not know, naming the closest known one.
bool check_known(ParseState* state, std::string_view s, std::string_view k) {
  const KnownKeys& known = known_keys();
  if (std::find(known.sections.begin(), known.sections.end(), s) == known.sections.end()) {
    state->error = "unknown section [" + std::string(s) + "]" + did_you_mean(s, known.sections);
    return false;
  }
  if (s == "roots") return true;  // any root name
  std::vector<std::string> in_section;
  for (const auto& [sec, key] : known.keys) {
    if (sec != s) continue;
    if (key == k) return true;
    in_section.push_back(key);
  }
  state->error =
      "[" + std::string(s) + "] " + std::string(k) + ": unknown key" + did_you_mean(k, in_section);
  return false;
}

int on_ini_entry(void* user, const char* section, const char* name, const char* value) {
  auto* state = static_cast<ParseState*>(user);
  std::string_view s(section), k(name), v(value);
  if (!check_known(state, s, k)) return 0;
  auto need_absolute = [&](std::string& out) {
    if (!v.empty() && v.front() != '/') {
      state->error = "[" + std::string(s) + "] " + std::string(k) + " must be an absolute path";
      return 0;
    }
    out = v;
    return 1;
  };
  if (s == "runtime" && k == "runc") return need_absolute(state->config.runc);
  if (s == "runtime" && k == "criu") return need_absolute(state->config.criu);
  if (s == "runtime" && k == "criu_trial") return need_absolute(state->config.criu_trial);
  if (s == "log" && k == "file") return need_absolute(state->config.log_file);
  if (s == "store" && k == "path") return need_absolute(state->config.store_path);
  if (s == "state" && k == "dir") return need_absolute(state->config.state_dir);
  if (s == "keys" && k == "dir") return need_absolute(state->config.keys.dir);
  if (s == "keys" && k == "active") {
    state->config.keys.active = v;
    return 1;
  }
  if (s == "store" && k == "on_disallowed") {
    if (v != "fail" && v != "unmanaged") {
      state->error = "[store] on_disallowed must be fail or unmanaged";
      return 0;
    }
    state->config.disallowed_unmanaged = v == "unmanaged";
    return 1;
  }
  if (s == "roots") return on_roots_entry(state, k, v);
  if (s == "owners" && k == "ecs") {
    if (v != "true" && v != "false") {
      state->error = "[owners] ecs must be true or false";
      return 0;
    }
    state->config.owners_ecs = v == "true";
    return 1;
  }
  if (s == "docker" && k == "data_root") {
    if (v.empty()) {
      state->error = "[docker] data_root must be an absolute path";
      return 0;
    }
    return need_absolute(state->config.docker_data_root);
  }
  if (s == "store" && k == "keep") {
    int keep = std::atoi(std::string(v).c_str());
    if (keep < 1 || keep > 100) {
      state->error = "[store] keep must be between 1 and 100";
      return 0;
    }
    state->config.keep = keep;
    return 1;
  }
  if (s == "restore" && k == "on_failure") {
    if (v != "fresh" && v != "fail") {
      state->error = "[restore] on_failure must be fresh or fail";
      return 0;
    }
    state->config.restore_failure_fails = v == "fail";
    return 1;
  }
  if (s == "restore" && k == "lazy_pages") {
    if (v != "true" && v != "false") {
      state->error = "[restore] lazy_pages must be true or false";
      return 0;
    }
    state->config.restore_lazy_pages = v == "true";
    return 1;
  }
  if (s == "restore" && k == "group_wait") {
    int wait = 0;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), wait);
    if (ec != std::errc() || end != v.data() + v.size() || wait < 1 || wait > 600) {
      state->error = "[restore] group_wait must be a whole number of seconds, 1-600";
      return 0;
    }
    state->config.restore_group_wait_seconds = wait;
    return 1;
  }
  if (s == "restore" && k == "group_member_failure") {
    if (v != "stop" && v != "keep") {
      state->error = "[restore] group_member_failure must be stop or keep";
      return 0;
    }
    state->config.restore_group_member_failure_stops = v == "stop";
    return 1;
  }
  if (s == "restore" && k.starts_with("max_")) return on_restore_limit(state, k, v);
  if (s == "groups" && k == "kubernetes_pods") {
    if (v != "true" && v != "false") {
      state->error = "[groups] kubernetes_pods must be true or false";
      return 0;
    }
    state->config.groups_kubernetes_pods = v == "true";
    return 1;
  }
  if (s == "agent") return on_agent_entry(state, k, v);
  if (s == "jobs") return on_jobs_entry(state, k, v);
  if (s == "checkpoint") return on_checkpoint_entry(state, k, v);
  if (s == "peers") return on_peers_entry(state, k, v);
  if (s == "log" && k == "level") {
    auto level = parse_log_level(v);
    if (!level) {
      state->error = "[log] level: " + level.error().message();
      return 0;
    }
    state->config.log_level = *level;
  }
  return 1;
}

// `text` with inline comments removed: a '#' or ';' after a space or tab starts a
// comment to the end of the line (inih alone knows only ';'). Whole-line comments and
// the line count stay as they were, so errors name the operator's line numbers.
std::string strip_inline_comments(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t pos = 0; pos < text.size();) {
    auto nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = text.substr(pos, nl - pos);
    for (std::size_t i = 1; i < line.size(); ++i) {
      if ((line[i] == '#' || line[i] == ';') && (line[i - 1] == ' ' || line[i - 1] == '\t')) {
        auto first = line.find_first_not_of(" \t");
        if (first != i) line = line.substr(0, i);  // else a whole-line comment: inih skips it
        break;
      }
    }
    out.append(line);
    if (nl < text.size()) out += '\n';
    pos = nl + 1;
  }
  return out;
}

}  // namespace

Result<NodeConfig> parse_node_config(std::string_view text) {
  ParseState state;
  std::string copy = strip_inline_comments(text);
  int line = ini_parse_string(copy.c_str(), on_ini_entry, &state);
  if (line != 0) {
    std::string why = state.error.empty() ? "syntax error" : state.error;
    return fail("line " + std::to_string(line) + ": " + why);
  }
  return state.config;
}

Result<void> check_trusted_file(int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return fail_errno("fstat " + path);
  if (!S_ISREG(st.st_mode)) return fail(path + " is not a regular file");
  if (st.st_uid != 0) return fail(path + " is not owned by root");
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
    return fail(path + " is writable by group or others");
  std::string dir = dirname_of(path);
  if (::stat(dir.c_str(), &st) != 0) return fail_errno("stat " + dir);
  if (st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return fail("directory " + dir + " is not owned by root or is writable by group or others");
  }
  return {};
}

LoadedConfig load_node_config(const std::string& path, bool must_exist) {
  LoadedConfig loaded;
  loaded.path = path;
  auto refuse = [&](const std::string& why) {
    loaded.error = "node config " + path + " not used: " + why;
    return loaded;
  };
  auto fd = open_file(path, O_RDONLY | O_NOFOLLOW);
  if (!fd) {
    if (fd.error().code() == ENOENT && !must_exist) return loaded;  // defaults apply
    if (fd.error().code() == ENOENT) {
      return refuse("no such file (ARCH_CONFIG names it; unset ARCH_CONFIG for " +
                    std::string(kDefaultConfigPath) + ")");
    }
    if (fd.error().code() == ELOOP) return refuse("it is a symlink (give the file itself)");
    return refuse(fd.error().message());
  }
  if (auto trusted = check_trusted_file(fd->get(), path); !trusted) {
    return refuse(trusted.error().message() +
                  " (fix: chown root:root it and its directory, chmod go-w both)");
  }
  auto text = read_all(fd->get(), 1 << 20);
  if (!text) return refuse(text.error().message());
  auto config = parse_node_config(*text);
  if (!config) return refuse(config.error().message());
  loaded.config = std::move(*config);
  loaded.from_file = true;
  return loaded;
}

LoadedConfig load_node_config_from_env() {
  const char* env = std::getenv("ARCH_CONFIG");
  bool named = env != nullptr && *env != '\0';
  return load_node_config(named ? std::string(env) : std::string(kDefaultConfigPath), named);
}

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

// The section name if `line` is a section header, else empty.
std::string_view section_of(std::string_view line) {
  line = trim(line);
  if (line.size() < 2 || line.front() != '[') return {};
  auto end = line.find(']');
  if (end == std::string_view::npos) return {};
  return trim(line.substr(1, end - 1));
}

bool is_key_line(std::string_view line, std::string_view key) {
  line = trim(line);
  auto eq = line.find_first_of("=:");
  if (eq == std::string_view::npos) return false;
  return trim(line.substr(0, eq)) == key;
}

}  // namespace

std::string set_config_value(std::string_view text, std::string_view section, std::string_view key,
                             std::string_view value) {
  std::vector<std::string_view> lines;
  for (std::size_t pos = 0; pos < text.size();) {
    auto nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    lines.push_back(text.substr(pos, nl - pos));
    pos = nl + 1;
  }
  std::string entry = std::string(key) + " = " + std::string(value);
  std::string current;
  long insert_after = -1;  // Last non-blank line of the wanted section.
  bool in_section = false;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    auto name = section_of(lines[i]);
    if (!name.empty()) {
      in_section = name == section;
      if (in_section) insert_after = static_cast<long>(i);
      continue;
    }
    if (!in_section) continue;
    if (is_key_line(lines[i], key)) {
      std::string out;
      for (std::size_t j = 0; j < lines.size(); ++j) {
        out += j == i ? std::string_view(entry) : lines[j];
        out += '\n';
      }
      return out;
    }
    if (!trim(lines[i]).empty()) insert_after = static_cast<long>(i);
  }
  std::string out;
  for (std::size_t j = 0; j < lines.size(); ++j) {
    out += lines[j];
    out += '\n';
    if (static_cast<long>(j) == insert_after) out += entry + '\n';
  }
  if (insert_after < 0) {
    if (!out.empty() && out.size() >= 2 && out[out.size() - 2] != '\n') out += '\n';
    out += "[" + std::string(section) + "]\n" + entry + '\n';
  }
  return out;
}

}  // namespace arch

namespace arch {

std::vector<StoreRoot> allowed_roots(const NodeConfig& c) {
  std::vector<StoreRoot> out = {{kLocalRootName, c.store_path}};
  out.insert(out.end(), c.roots.begin(), c.roots.end());
  return out;
}

std::string default_node_config_text() {
  return R"(# ARCH node config (INI). Written by `archctl config init`; every key shows its default.
# This file and its directory must be owned by root and not writable by group or others,
# or ARCH ignores the whole file. Comments go on their own lines.

[runtime]
# The real runc that arch-runc execs (empty: /usr/sbin/runc, /usr/bin/runc, ...).
runc =
# CRIU for ARCH's own checkpoints and for process jobs (empty: runc's default /
# /opt/arch/criu/bin/criu for jobs).
criu =
# Where setup records its functional CRIU trial (root-owned JSON; archctl version shows it).
criu_trial = /var/lib/arch/criu-trial.json

[log]
# error | warn | info | debug
level = info
file = /var/log/arch/arch.log

[store]
# Checkpoints of containers without ARCH_CHECKPOINT_HOST_PATH, and of process jobs
# (namespace "jobs").
path = /var/lib/arch/checkpoints
# Committed generations kept per container or job (1-100).
keep = 2
# fail | unmanaged: a container whose ARCH_STORE / ARCH_SHAREDFS / ARCH_CHECKPOINT_HOST_PATH /
# ARCH_SHAREDFS_HOST_PATH names no allowed root (the path above, named "local", or one
# under [roots]) either fails to create, with the reason in the engine's log (fail), or
# runs without ARCH, with a warning (unmanaged).
on_disallowed = fail

[roots]
# Further directories where root may keep checkpoints, one "name = path" line each (for
# example the node's EFS or JuiceFS mount). A container picks one by name: ARCH_STORE=<name>
# (its checkpoints in <path>/<owner>/<key>) or ARCH_SHAREDFS=<name> (shared mode:
# <path>/checkpoint and <path>/work). ARCH_CHECKPOINT_HOST_PATH and ARCH_SHAREDFS_HOST_PATH
# must name an allowed root or a directory under one. Every root, and every directory
# from it down to a key, must be owned by root and not writable by group or others; no
# symlink is followed below a root.
# shared = /mnt/shared

[owners]
# true: on an ECS (or AWS Batch on ECS) host, a Docker container the ECS agent created is
# owned by "ecs+<cluster>+<task definition family>", from the agent's labels in Docker's
# own record of the container; its keys are scoped to that owner. false: every Docker
# container is owned by "moby". Turn it on only where Docker's API is the ECS agent's.
ecs = false

[docker]
# dockerd's --data-root: where ARCH reads <data_root>/containers/<id>/config.v2.json.
data_root = /var/lib/docker

[state]
# The registry of ARCH-enabled containers and the draining flag (tmpfs).
dir = /run/arch

[keys]
# The node keys that seal checkpoints (root-only; `archctl key init|list|rotate|export|
# import|rm`). Nodes that share a store share the key.
dir = /etc/arch/keys
# The key that seals new checkpoints (empty: the one `archctl key rotate` made active, or
# the only key). Every key in dir still verifies.
active =

[restore]
# fresh | fail: what a container create does when its restore fails.
on_failure = fresh
# true: restore with CRIU lazy pages (memory served on demand; a container's
# ARCH_LAZY_RESTORE=1 or 0 wins).
lazy_pages = false
# Seconds a member of a container group (ARCH_GROUP) being restored waits for the other
# members of its group checkpoint to be created on this node (1-600), else on_failure.
group_wait = 60
# stop | keep: a group on several nodes whose member fails to restore: stop, the other
# members' restores, held at the release, fail too (their tasks killed, on_failure follows:
# the group restarts together); keep, they go on from the group generation.
group_member_failure = stop
# Caps on what a checkpoint may expand to when it is unpacked (K, M, G, T suffixes).
# A rootfs diff also stops at the bytes and entries its capture counted (in the
# manifest), a job archive at the files its manifest lists: the tighter limit wins.
# File data of a rootfs diff:
max_rootfs_bytes = 64G
# Files of an imported job archive:
max_archive_bytes = 256G
# Entries (files, directories, links, ...) of either:
max_entries = 4000000

[groups]
# true: the application containers of one Kubernetes pod (two or more ARCH-enabled ones on
# this node, a stable pod name, no ARCH_GROUP of their own) form one group, "pod.<pod name>".
kubernetes_pods = true

[checkpoint]
# none | zstd: compression of the rootfs diff (CRIU's page images are never compressed).
rootfs_compression = none
# zstd level (1-19) and threads (0: one per CPU).
zstd_level = 3
zstd_threads = 0
# off | on | auto: pre-copy (a CRIU pre-dump, then a final dump of what changed) in
# finalize; needs the kernel's soft-dirty tracking, else a plain dump.
pre_copy = auto
# skip | iptables | nftables: CRIU's network lock during a dump (skip saves four
# iptables-restore runs per dump; a dump with TCP connections always locks, iptables then).
network_lock = skip
# auto | restore | close | fail: established TCP connections (ARCH_TCP per container).
# auto: dumped; restored on the same node where their addresses exist, else closed (the
# application sees a reset and reconnects). fail: such a container is not checkpointed.
tcp = auto
# The largest deleted-but-open file a dump stores (CRIU's ghost limit; K, M, G suffixes).
# Such files are stored in the checkpoint and count in its size.
ghost_limit = 64M
# Failed dumps whose CRIU logs are kept per key as failed-*/ (0: none kept).
failed_dumps_kept = 3
# plain | streamed | encrypted: how the pages images (the container's memory) reach the
# store. plain: CRIU writes them. streamed: CRIU sends them through ARCH's page-server
# receiver (one pass, digested as they pass), stored plain. encrypted: the same, stored as
# AES-256-GCM chunks with a key from the node key; such a checkpoint is restored only
# lazily through ARCH's page server (whatever [restore] lazy_pages says).
pages_at_rest = plain
# ARCH_PRIORITY (a whole number per container) in finalize's deadline plan: 0 ignores it
# (the plan saves the most containers); N > 0 maximises the total priority saved, each
# container's value clamped to 1..N (a tenant cannot claim more than N).
priority_max = 0
# Periodic checkpoints by archd (the container keeps running; a node lost without notice
# resumes from the newest): the interval of managed containers that set none
# (ARCH_CHECKPOINT_INTERVAL per container), or off.
interval = off
# The shortest interval a container may ask for (shorter values are raised to it).
min_interval = 5m
# allow: a container's ARCH_CHECKPOINT_INTERVAL sets its own interval (within
# min_interval); deny: only the node's interval applies (a container may still say off).
container_interval = allow
# Shared mode's work directory is captured with each checkpoint while its files total at
# most this much (K, M, G; off: never), and a restore from that generation puts it back as
# it was then, so a job restored from an older generation does not find (and repeat) what
# it wrote after it. A larger work directory is left as it is (the checkpoint says so).
workdir_capture = 64M

[agent]
# archd's local API (root only).
socket = /run/arch/archd.sock
# archd's state; process jobs and their logs live in jobs/ beside it.
state_file = /var/lib/arch/agent/state.json
event_log = /var/log/arch/events.jsonl
# Prometheus metrics; empty: off.
metrics_address = 127.0.0.1:9477
# EC2 metadata service for reclaim notices; empty: no watcher.
imds_endpoint = http://169.254.169.254
imds_poll_seconds = 2
imds_token_ttl_seconds = 21600
# Kept free before a reclaim time.
safety_margin_seconds = 15
# none | drain: what a rebalance recommendation does.
rebalance_action = none
# Containers checkpointed at once in a drain (0: two per CPU).
finalize_parallel = 0
# Keys whose newest checkpoint's age is exported (arch_newest_checkpoint_age_seconds):
# this node's containers first, then the oldest; 0: none.
metrics_max_keys = 100
# GET /status on the metrics address: a read-only HTML view of the node (containers, drains,
# recent events) for whoever can reach that address; false: only /metrics.
status_page = true
containerd_address = /run/containerd/containerd.sock

[jobs]
# Every `archctl job checkpoint` also exports <name>_<UTC time>.tar.zst here
# (empty: only with --export DIR).
dump_dir =
# zstd | none: compression of exported archives.
compression = zstd
# zstd level, 1 (fastest; ~0.27 s per 256 MiB of incompressible memory here, level 3
# ~0.43 s) to 19 (smallest).
compression_level = 1
# true | false: `archctl job checkpoint` leaves the job running after the dump
# (false: the job stops once it is checkpointed; --leave-running overrides).
leave_running = false
# true | false: CRIU hands the images to ARCH (criu --stream) instead of writing files; ARCH
# stores them encrypted (AES-256-GCM chunks, key derived from the node key) in one pass and
# verifies every chunk before CRIU reads it on restore. Jobs only: runc cannot stream.
stream_images = false
# auto | off | zstd: each streamed chunk compressed (zstd, multithreaded) before it is
# encrypted. auto: only where the store is slower than the compressor (the store's kept
# write rate against the compressor's measured throughput; raw where not smaller);
# zstd: always tried; off: never (chunk lengths then reveal nothing of the contents).
stream_compression = auto
# 0: the level chosen from the measured rates; 1-19: a fixed zstd level.
stream_compression_level = 0

[peers]
# The authenticated channel between archd instances (mutual TLS 1.3; certificates from a CA
# derived from the node key, so only nodes holding it are trusted) and the nodes a group
# checkpoint asks for their members of the group. Off unless listen or nodes is set.
# Root-only directory of this node's TLS key and certificate (`archctl peer cert`).
dir = /etc/arch/peers
# This node's name in its certificate and in group records (empty: the host name).
node_name =
# host:port of archd's TLS listener for its peers (empty: no listener).
listen =
# The known peers: name=host:port, comma-separated (the name must be the one in its cert).
nodes =
# Seconds: connect and read timeout; a node whose group checkpoint coordinator stays silent
# this long aborts on its own (thaws its members). 1-600.
timeout = 30
# Days a node certificate issued by `archctl peer cert` (or archd at start) is valid.
cert_days = 365
# Live migration to this node (`archctl container migrate`): containerd's ctr, the runtime
# binary (arch-runc) and runc root the re-created task gets (empty root: containerd's).
migrate_ctr = /usr/bin/ctr
migrate_runtime = /usr/local/bin/arch-runc
migrate_runc_root =
# Parent of the re-created task's cgroup (empty: containerd's default, /<namespace>/<id>).
migrate_cgroup_parent =
# Docker containers (containerd namespace moby with a record under [docker] data_root) are
# re-created through Docker: this node's docker CLI, its dockerd (--host) and the Docker
# runtime name that is arch-runc here (`archctl install docker` names it "arch").
migrate_docker = /usr/bin/docker
migrate_docker_host = unix:///var/run/docker.sock
migrate_docker_runtime = arch
)";
}

std::string peer_node_name(const NodeConfig& c) {
  return c.peers.node_name.empty() ? host_name() : c.peers.node_name;
}

Result<void> validate_node_name(std::string_view name) {
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  bool ok = !name.empty() && name.size() <= 63 && alnum(name.front()) && alnum(name.back()) &&
            std::all_of(name.begin(), name.end(),
                        [&](char c) { return alnum(c) || c == '-' || c == '.'; });
  if (!ok) {
    return fail(ErrorKind::kInvalidInput,
                "invalid node name \"" + std::string(name) +
                    "\": 1-63 characters of a-z, 0-9, '-' and '.', starting and ending with a "
                    "letter or digit");
  }
  return {};
}

}  // namespace arch
