// CriuReport: the trial record (trusted only when root-owned and not writable by others)
// and the feature probes, as JSON and as archctl's text.
#include "criu/criu_report.h"

#include <fcntl.h>
#include <fmt/core.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <mutex>

#include "base/file_util.h"
#include "base/host.h"
#include "base/process.h"
#include "criu/criu_features.h"

namespace arch {
namespace {

// The capabilities the probes tell, with the CRIU feature each asks.
struct Probe {
  const char* name;
  const char* feature;
  const char* what;
};
constexpr Probe kProbes[] = {
    {"dirty_tracking", "mem_dirty_track", "dirty tracking (pre-copy)"},
    {"lazy_pages", "uffd-noncoop", "lazy pages (userfaultfd)"},
    {"file_locks", "fdinfo_lock", "file locks (fdinfo)"},
    {"tcp_half_closed", "tcp_half_closed", "half-closed TCP"},
    {"nftables_network_lock", "network_lock_nftables", "nftables network lock"},
};

// What the trial's checks stand for, in the record's key order.
constexpr std::pair<const char*, const char*> kTrialChecks[] = {
    {"listen", "listening TCP"},
    {"established", "established TCP"},
    {"unix", "unix socket pair"},
};

// j[key], or null when j is no object or has no such key (operator[] on a const json
// must not be asked for a missing key).
const nlohmann::json& member(const nlohmann::json& j, const char* key) {
  static const nlohmann::json null;
  if (!j.is_object()) return null;
  auto it = j.find(key);
  return it == j.end() ? null : *it;
}

std::string criu_version_uncached(const std::string& criu) {
  if (criu.empty()) return "unknown";
  auto r = run_process({criu, "--version"}, {.stdin_fd = -1,
                                             .stdout_fd = -1,
                                             .stderr_fd = -1,
                                             .timeout = std::chrono::seconds(10),
                                             .cwd = {}});
  if (!r || !r->ok()) return "unknown";
  std::string text = r->out;
  auto pos = text.find("Version:");
  if (pos == std::string::npos) return text.substr(0, text.find('\n'));
  text = text.substr(pos + 8);
  auto start = text.find_first_not_of(" \t");
  return start == std::string::npos ? "unknown" : text.substr(start, text.find('\n') - start);
}

// Asked once per binary and process (archd answers every status call with it).
std::string criu_version(const std::string& criu) {
  static std::mutex mutex;
  static std::map<std::string, std::string> cache;
  std::lock_guard lock(mutex);
  auto it = cache.find(criu);
  if (it == cache.end()) it = cache.emplace(criu, criu_version_uncached(criu)).first;
  return it->second;
}

}  // namespace

nlohmann::json read_criu_trial(const std::string& path, const std::string& criu,
                               const std::string& kernel) {
  nlohmann::json out = {{"path", path}, {"trusted", false}};
  auto fd = open_file(path, O_RDONLY | O_NOFOLLOW);
  if (!fd) {
    out["why"] = fd.error().code() == ENOENT ? "no trial recorded (run scripts/setup.sh)"
                                             : fd.error().message();
    return out;
  }
  struct stat st {};
  if (::fstat(fd->get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != 0 ||
      (st.st_mode & 022) != 0) {
    out["why"] = "not a root-owned file writable only by root: ignored";
    return out;
  }
  auto text = read_all(fd->get(), 1 << 16);
  auto doc = text ? nlohmann::json::parse(*text, nullptr, false) : nlohmann::json();
  if (!doc.is_object() || !doc.contains("checks") || !doc["checks"].is_object()) {
    out["why"] = "not a trial record";
    return out;
  }
  out["trusted"] = true;
  // Only the types ARCH wrote are taken (json::value() would throw on others).
  for (const char* k : {"criu", "version", "kernel", "time"}) {
    const auto& v = member(doc, k);
    out[k] = v.is_string() ? v.get<std::string>() : std::string();
  }
  out["passed"] = member(doc, "passed") == true;
  out["checks"] = nlohmann::json::object();
  for (const auto& [k, v] : doc["checks"].items()) {
    if (v.is_boolean()) out["checks"][k] = v;
  }
  bool stale = (!criu.empty() && out["criu"] != criu) || out["kernel"] != kernel;
  out["stale"] = stale;
  if (stale) {
    out["why"] = fmt::format("recorded for {} on kernel {}, now {} on kernel {}: run setup again",
                             out["criu"].get<std::string>(), out["kernel"].get<std::string>(),
                             criu.empty() ? "runc's default CRIU" : criu, kernel);
  }
  return out;
}

nlohmann::json criu_report(const NodeConfig& config) {
  nlohmann::json r = {{"path", config.criu.empty() ? "" : config.criu},
                      {"version", criu_version(config.criu)}};
  r["trial"] = read_criu_trial(config.criu_trial, config.criu, kernel_release());
  for (const auto& p : kProbes) {
    auto f = criu_feature(config.criu, p.feature);
    r["features"][p.name] = {
        {"supported", f.supported}, {"reason", f.reason}, {"probe", p.feature}};
  }
  return r;
}

std::string criu_report_text(const nlohmann::json& r) {
  std::string path = r.value("path", "");
  std::string out = fmt::format("criu:    {} (version {})\n",
                                path.empty() ? "(runc's default)" : path, r.value("version", ""));
  const auto& t = member(r, "trial");
  if (!t.is_object() || !t.value("trusted", false)) {
    out += fmt::format("  trial: none ({}: {})\n", t.is_object() ? t.value("path", "") : "",
                       t.is_object() ? t.value("why", "") : "not recorded");
  } else {
    std::string passed, failed;
    for (const auto& [key, what] : kTrialChecks) {
      const auto& check = member(member(t, "checks"), key);
      if (check.is_null()) continue;
      std::string& into = check == true ? passed : failed;
      into += (into.empty() ? "" : ", ") + std::string(what);
    }
    out += fmt::format("  trial: {} dump+restore at {}: passed: {}; failed: {}{}\n",
                       t.value("version", ""), t.value("time", ""),
                       passed.empty() ? "none" : passed, failed.empty() ? "none" : failed,
                       t.value("stale", false) ? " (stale: " + t.value("why", "") + ")" : "");
  }
  for (const auto& p : kProbes) {
    const auto& f = member(member(r, "features"), p.name);
    if (!f.is_object()) continue;
    out += fmt::format("  {:<28} {}\n", p.what,
                       f.value("supported", false) ? "yes" : "no (" + f.value("reason", "") + ")");
  }
  return out;
}

}  // namespace arch
