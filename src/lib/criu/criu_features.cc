// CriuFeatures: `criu check --feature` runs, cached per CRIU binary.
#include "criu/criu_features.h"

#include <unistd.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <sstream>

#include "base/process.h"

namespace arch {
namespace {

// What runc runs when it is given no --criu: "criu" found on PATH.
std::string criu_on_path() {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path != nullptr ? path : "/usr/local/sbin:/usr/sbin:/sbin:/usr/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    std::string candidate = dir + "/criu";
    if (!dir.empty() && dir[0] == '/' && ::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return {};
}

}  // namespace

std::string criu_check_reason(const std::string& output, int exit_code) {
  std::istringstream in(output);
  std::string reason;
  for (std::string line; std::getline(in, line);) {
    if (line.find("Warn") == std::string::npos && line.find("Error") == std::string::npos) {
      continue;
    }
    // CRIU's start-up complaints on every run, not about the feature asked.
    if (line.find("Hardware breakpoints") != std::string::npos ||
        line.find("RLIMIT_NOFILE") != std::string::npos) {
      continue;
    }
    // "Warn  (criu/cr-check.c:824): Dirty tracking is OFF." -> the text after "): ".
    auto pos = line.find("): ");
    std::string text = pos == std::string::npos ? line : line.substr(pos + 3);
    reason += (reason.empty() ? "" : "; ") + text;
  }
  return reason.empty() ? "criu check exited with status " + std::to_string(exit_code) : reason;
}

CriuFeature criu_dirty_tracking(const std::string& criu) {
  return criu_feature(criu, "mem_dirty_track");
}

CriuFeature criu_feature(const std::string& criu, const std::string& name) {
  static std::mutex mutex;
  static std::map<std::pair<std::string, std::string>, CriuFeature> cache;
  std::lock_guard lock(mutex);
  auto key = std::pair{criu, name};
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  std::string binary = criu.empty() ? criu_on_path() : criu;
  CriuFeature f;
  if (binary.empty()) {
    f.reason = "no criu binary configured or on PATH";
    cache[key] = f;
    return f;
  }
  auto r = run_process({binary, "check", "--feature", name}, {.stdin_fd = -1,
                                                              .stdout_fd = -1,
                                                              .stderr_fd = -1,
                                                              .timeout = std::chrono::seconds(20),
                                                              .cwd = {}});
  if (!r) {
    f.reason = "cannot run " + binary + ": " + r.error().message();
  } else if (r->ok()) {
    f.supported = true;
  } else {
    f.reason = criu_check_reason(r->out + r->err, r->exit_code);
  }
  cache[key] = f;
  return f;
}

}  // namespace arch
