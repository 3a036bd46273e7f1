// SpecDigest: canonical JSON of each security-relevant spec field, SHA-256 over each and over
// the map; and the credentials check of restored tasks. See spec_digest.h for the fields.
#include "runtime/spec_digest.h"

#include <fmt/core.h>
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "base/hex.h"

namespace arch {
namespace {

using json = nlohmann::json;

constexpr std::array<std::string_view, 41> kCapabilities = {"CAP_CHOWN",
                                                            "CAP_DAC_OVERRIDE",
                                                            "CAP_DAC_READ_SEARCH",
                                                            "CAP_FOWNER",
                                                            "CAP_FSETID",
                                                            "CAP_KILL",
                                                            "CAP_SETGID",
                                                            "CAP_SETUID",
                                                            "CAP_SETPCAP",
                                                            "CAP_LINUX_IMMUTABLE",
                                                            "CAP_NET_BIND_SERVICE",
                                                            "CAP_NET_BROADCAST",
                                                            "CAP_NET_ADMIN",
                                                            "CAP_NET_RAW",
                                                            "CAP_IPC_LOCK",
                                                            "CAP_IPC_OWNER",
                                                            "CAP_SYS_MODULE",
                                                            "CAP_SYS_RAWIO",
                                                            "CAP_SYS_CHROOT",
                                                            "CAP_SYS_PTRACE",
                                                            "CAP_SYS_PACCT",
                                                            "CAP_SYS_ADMIN",
                                                            "CAP_SYS_BOOT",
                                                            "CAP_SYS_NICE",
                                                            "CAP_SYS_RESOURCE",
                                                            "CAP_SYS_TIME",
                                                            "CAP_SYS_TTY_CONFIG",
                                                            "CAP_MKNOD",
                                                            "CAP_LEASE",
                                                            "CAP_AUDIT_WRITE",
                                                            "CAP_AUDIT_CONTROL",
                                                            "CAP_SETFCAP",
                                                            "CAP_MAC_OVERRIDE",
                                                            "CAP_MAC_ADMIN",
                                                            "CAP_SYSLOG",
                                                            "CAP_WAKE_ALARM",
                                                            "CAP_BLOCK_SUSPEND",
                                                            "CAP_AUDIT_READ",
                                                            "CAP_PERFMON",
                                                            "CAP_BPF",
                                                            "CAP_CHECKPOINT_RESTORE"};

constexpr std::array<std::string_view, 5> kCapabilitySets = {"bounding", "effective", "inheritable",
                                                             "permitted", "ambient"};

std::string sha256_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  return to_hex(md, len);
}

std::string canonical(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

// The member at a dotted path, or nullptr when any step is missing or null.
const json* at_path(const json& root, std::string_view path) {
  const json* cur = &root;
  while (!path.empty()) {
    auto dot = path.find('.');
    std::string step(path.substr(0, dot));
    if (!cur->is_object()) return nullptr;
    auto it = cur->find(step);
    if (it == cur->end() || it->is_null()) return nullptr;
    cur = &*it;
    path = dot == std::string_view::npos ? std::string_view{} : path.substr(dot + 1);
  }
  return cur;
}

Result<json> typed(const json& root, std::string_view path, json::value_t type, json fallback) {
  const json* v = at_path(root, path);
  if (v == nullptr) return fallback;
  bool ok = v->type() == type || (type == json::value_t::number_unsigned && v->is_number_integer());
  if (!ok) return fail(fmt::format("config.json: {} has the wrong type", path));
  if (type == json::value_t::number_unsigned && v->get<int64_t>() < 0) {
    return fail(fmt::format("config.json: {} is negative", path));
  }
  return *v;
}

// An array as a sorted set (each element canonical), or [] when absent.
Result<json> as_set(const json& root, std::string_view path) {
  auto v = typed(root, path, json::value_t::array, json::array());
  if (!v) return v;
  std::vector<std::pair<std::string, json>> items;
  for (const auto& e : *v) items.emplace_back(canonical(e), e);
  std::sort(items.begin(), items.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  items.erase(std::unique(items.begin(), items.end(),
                          [](const auto& a, const auto& b) { return a.first == b.first; }),
              items.end());
  json out = json::array();
  for (auto& [_, e] : items) out.push_back(std::move(e));
  return out;
}

Result<json> namespace_types(const json& spec) {
  auto list = typed(spec, "linux.namespaces", json::value_t::array, json::array());
  if (!list) return list;
  json types = json::array();
  for (const auto& ns : *list) {
    if (!ns.is_object() || !ns.contains("type") || !ns["type"].is_string()) {
      return fail("config.json: linux.namespaces holds an entry without a type");
    }
    types.push_back(ns["type"]);  // not "path": the pod's netns differs per instance
  }
  json wrapper = {{"t", types}};
  return as_set(wrapper, "t");
}

// ID mappings without the host side (per instance); the restored tasks' host ids are
// checked against the new spec after the restore.
Result<json> mappings(const json& spec, std::string_view path) {
  auto list = typed(spec, path, json::value_t::array, json::array());
  if (!list) return list;
  json out = json::array();
  for (const auto& m : *list) {
    if (!m.is_object()) return fail(fmt::format("config.json: {} holds a non-object", path));
    out.push_back(
        {{"containerID", m.value("containerID", json())}, {"size", m.value("size", json())}});
  }
  return out;
}

Result<json> mount_shapes(const json& spec) {
  auto list = typed(spec, "mounts", json::value_t::array, json::array());
  if (!list) return list;
  json shapes = json::array();
  for (const auto& m : *list) {
    if (!m.is_object()) return fail("config.json: mounts holds a non-object");
    json opts = {{"o", m.value("options", json::array())}};
    auto sorted = as_set(opts, "o");
    if (!sorted) return std::unexpected(sorted.error().wrap("mount options"));
    shapes.push_back({{"destination", m.value("destination", json())},
                      {"type", m.value("type", json())},
                      {"options", *sorted}});  // not "source": per instance (pod volumes)
  }
  json wrapper = {{"m", shapes}};
  return as_set(wrapper, "m");
}

Result<std::map<std::string, json>> fields_of(const json& spec) {
  std::map<std::string, json> out;
  using T = json::value_t;
  std::vector<std::pair<std::string, Result<json>>> all;
  all.emplace_back("process.user.uid", typed(spec, "process.user.uid", T::number_unsigned, 0));
  all.emplace_back("process.user.gid", typed(spec, "process.user.gid", T::number_unsigned, 0));
  all.emplace_back("process.user.additionalGids", as_set(spec, "process.user.additionalGids"));
  for (auto set : kCapabilitySets) {
    std::string name = "process.capabilities." + std::string(set);
    all.emplace_back(name, as_set(spec, name));
  }
  all.emplace_back("process.noNewPrivileges",
                   typed(spec, "process.noNewPrivileges", T::boolean, false));
  all.emplace_back("process.apparmorProfile",
                   typed(spec, "process.apparmorProfile", T::string, ""));
  all.emplace_back("process.selinuxLabel", typed(spec, "process.selinuxLabel", T::string, ""));
  all.emplace_back("process.rlimits", as_set(spec, "process.rlimits"));
  all.emplace_back("linux.seccomp", typed(spec, "linux.seccomp", T::object, nullptr));
  all.emplace_back("linux.devices", as_set(spec, "linux.devices"));
  all.emplace_back("linux.resources.devices",  // in order: later rules override earlier ones
                   typed(spec, "linux.resources.devices", T::array, json::array()));
  all.emplace_back("linux.namespaces", namespace_types(spec));
  all.emplace_back("linux.uidMappings", mappings(spec, "linux.uidMappings"));
  all.emplace_back("linux.gidMappings", mappings(spec, "linux.gidMappings"));
  all.emplace_back("linux.maskedPaths", as_set(spec, "linux.maskedPaths"));
  all.emplace_back("linux.readonlyPaths", as_set(spec, "linux.readonlyPaths"));
  all.emplace_back("linux.mountLabel", typed(spec, "linux.mountLabel", T::string, ""));
  all.emplace_back("root.readonly", typed(spec, "root.readonly", T::boolean, false));
  all.emplace_back("mounts", mount_shapes(spec));
  for (auto& [name, v] : all) {
    if (!v) return std::unexpected(v.error());
    out[name] = *v;  // a copy: g++ 12 -O3 warns (falsely) on moving out of the expected
  }
  return out;
}

Result<json> parse_spec(std::string_view config_json) {
  json spec = json::parse(config_json, nullptr, /*allow_exceptions=*/false);
  if (spec.is_discarded() || !spec.is_object()) return fail("config.json is not a JSON object");
  return spec;
}

uint64_t cap_mask(const json& set) {
  uint64_t mask = 0;
  for (const auto& name : set) {
    int bit = name.is_string() ? capability_bit(name.get<std::string>()) : -1;
    if (bit >= 0) mask |= uint64_t{1} << bit;
  }
  return mask;
}

// The host id of a container id through a user namespace mapping (identity without one).
std::optional<uint32_t> to_host(const json& spec, std::string_view path, uint64_t id) {
  const json* list = at_path(spec, path);
  if (list == nullptr || !list->is_array() || list->empty()) return static_cast<uint32_t>(id);
  for (const auto& m : *list) {
    uint64_t cid = m.value("containerID", uint64_t{0}), hid = m.value("hostID", uint64_t{0}),
             size = m.value("size", uint64_t{0});
    if (id >= cid && id - cid < size) return static_cast<uint32_t>(hid + (id - cid));
  }
  return std::nullopt;
}

// The value of a "Name:\t..." line of /proc/<pid>/status.
std::optional<std::string_view> status_field(std::string_view status, std::string_view name) {
  std::size_t pos = 0;
  while (pos < status.size()) {
    auto end = status.find('\n', pos);
    if (end == std::string_view::npos) end = status.size();
    auto line = status.substr(pos, end - pos);
    if (line.size() > name.size() && line.starts_with(name) && line[name.size()] == ':') {
      auto v = line.substr(name.size() + 1);
      while (!v.empty() && (v.front() == '\t' || v.front() == ' ')) v.remove_prefix(1);
      return v;
    }
    pos = end + 1;
  }
  return std::nullopt;
}

std::string cap_names(uint64_t mask) {
  std::string out;
  for (std::size_t bit = 0; bit < 64; ++bit) {
    if ((mask & (uint64_t{1} << bit)) == 0) continue;
    if (!out.empty()) out += ",";
    out += bit < kCapabilities.size() ? std::string(kCapabilities[bit]) : fmt::format("cap{}", bit);
  }
  return out;
}

}  // namespace

int capability_bit(std::string_view name) {
  for (std::size_t i = 0; i < kCapabilities.size(); ++i) {
    if (kCapabilities[i] == name) return static_cast<int>(i);
  }
  return -1;
}

Result<SpecDigest> spec_digest(std::string_view config_json) {
  auto spec = parse_spec(config_json);
  if (!spec) return std::unexpected(spec.error());
  auto fields = fields_of(*spec);
  if (!fields) return std::unexpected(fields.error());
  SpecDigest out;
  for (const auto& [name, value] : *fields) out.fields[name] = sha256_hex(canonical(value));
  out.digest = sha256_hex("arch-spec-digest-v1\n" + canonical(json(out.fields)));
  return out;
}

Result<SpecDigest> bundle_spec_digest(const std::string& bundle) {
  auto text = read_file(bundle + "/config.json");
  if (!text) return std::unexpected(text.error());
  auto d = spec_digest(*text);
  if (!d) return std::unexpected(d.error().wrap(bundle));
  return d;
}

std::vector<std::string> differing_spec_fields(const std::map<std::string, std::string>& a,
                                               const std::map<std::string, std::string>& b) {
  std::vector<std::string> out;
  for (const auto& [name, digest] : a) {
    auto it = b.find(name);
    if (it == b.end() || it->second != digest) out.push_back(name);
  }
  for (const auto& [name, _] : b) {
    if (!a.contains(name)) out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

Result<SpecCredentials> spec_credentials(std::string_view config_json) {
  auto spec = parse_spec(config_json);
  if (!spec) return std::unexpected(spec.error());
  auto fields = fields_of(*spec);  // type checks
  if (!fields) return std::unexpected(fields.error());
  auto& f = *fields;
  SpecCredentials c;
  c.bounding = cap_mask(f["process.capabilities.bounding"]);
  c.ambient = cap_mask(f["process.capabilities.ambient"]);
  for (auto set : kCapabilitySets)
    c.granted |= cap_mask(f["process.capabilities." + std::string(set)]);
  c.no_new_privileges = f["process.noNewPrivileges"].get<bool>();
  c.seccomp = !f["linux.seccomp"].is_null();
  // Without noNewPrivileges a setuid binary may change ids legitimately.
  auto fixed = [&](int cap) {
    return c.no_new_privileges && (c.granted & (uint64_t{1} << cap)) == 0;
  };
  if (fixed(capability_bit("CAP_SETUID"))) {
    c.uid = to_host(*spec, "linux.uidMappings", f["process.user.uid"].get<uint64_t>());
    if (!c.uid) return fail("config.json: process.user.uid is outside linux.uidMappings");
  }
  if (fixed(capability_bit("CAP_SETGID"))) {
    c.gid = to_host(*spec, "linux.gidMappings", f["process.user.gid"].get<uint64_t>());
    if (!c.gid) return fail("config.json: process.user.gid is outside linux.gidMappings");
  }
  return c;
}

std::vector<std::string> credential_excess(std::string_view status, const SpecCredentials& spec) {
  std::vector<std::string> out;
  auto mask_of = [&](std::string_view name) -> std::optional<uint64_t> {
    auto v = status_field(status, name);
    uint64_t mask = 0;
    if (!v || std::from_chars(v->data(), v->data() + v->size(), mask, 16).ec != std::errc()) {
      return std::nullopt;
    }
    return mask;
  };
  struct Check {
    const char* field;
    uint64_t allowed;
  };
  for (auto [field, allowed] : {Check{"CapBnd", spec.bounding}, Check{"CapEff", spec.granted},
                                Check{"CapPrm", spec.granted}, Check{"CapInh", spec.granted},
                                Check{"CapAmb", spec.ambient | spec.granted}}) {
    auto mask = mask_of(field);
    if (!mask) {
      out.push_back(fmt::format("{} unreadable", field));
    } else if ((*mask & ~allowed) != 0) {
      out.push_back(
          fmt::format("{} has {} (spec does not grant)", field, cap_names(*mask & ~allowed)));
    }
  }
  auto ids = [&](const char* field, std::optional<uint32_t> want) {
    if (!want) return;
    auto v = status_field(status, field);
    if (!v) {
      out.push_back(fmt::format("{} unreadable", field));
      return;
    }
    std::string_view rest = *v;
    while (!rest.empty()) {
      uint32_t id = 0;
      auto r = std::from_chars(rest.data(), rest.data() + rest.size(), id);
      if (r.ec != std::errc()) break;
      if (id != *want) {
        out.push_back(fmt::format("{} {} (spec: {})", field, *v, *want));
        return;
      }
      rest.remove_prefix(static_cast<std::size_t>(r.ptr - rest.data()));
      while (!rest.empty() && (rest.front() == '\t' || rest.front() == ' ')) rest.remove_prefix(1);
    }
  };
  ids("Uid", spec.uid);
  ids("Gid", spec.gid);
  if (spec.seccomp) {
    auto v = status_field(status, "Seccomp");
    if (!v || *v != "2") {
      out.push_back(fmt::format("Seccomp {} (spec requires a filter, mode 2)", v ? *v : "?"));
    }
  }
  if (spec.no_new_privileges) {
    auto v = status_field(status, "NoNewPrivs");
    if (!v || *v != "1") {
      out.push_back(fmt::format("NoNewPrivs {} (spec requires 1)", v ? *v : "?"));
    }
  }
  return out;
}

}  // namespace arch
