// RuncClient: runc invocations through run_process, errors carrying runc's own words.
#include "runtime/runc_client.h"

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/file_util.h"

namespace arch {

Result<RuncState> parse_runc_state(std::string_view json_text) {
  auto doc = nlohmann::json::parse(json_text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return fail("runc state: output is not JSON");
  RuncState s;
  s.id = doc.value("id", "");
  s.status = doc.value("status", "");
  s.pid = doc.value("pid", 0);
  s.bundle = doc.value("bundle", "");
  s.rootfs = doc.value("rootfs", "");
  if (s.id.empty() || s.status.empty()) return fail("runc state: id or status missing");
  return s;
}

Result<std::vector<RuncState>> parse_runc_list(std::string_view json_text) {
  auto doc = nlohmann::json::parse(json_text, nullptr, false);
  if (doc.is_discarded()) return fail("runc list: output is not JSON");
  std::vector<RuncState> out;
  if (doc.is_null()) return out;
  if (!doc.is_array()) return fail("runc list: output is not a JSON array");
  for (const auto& item : doc) {
    if (!item.is_object()) return fail("runc list: an entry is not an object");
    auto s = parse_runc_state(item.dump());
    if (!s) return std::unexpected(s.error());
    out.push_back(std::move(*s));
  }
  return out;
}

std::vector<std::string> RuncClient::base_argv(const std::string& log_file) const {
  std::vector<std::string> argv = {runc_, "--root", root_};
  if (!criu_.empty()) {
    argv.push_back("--criu");
    argv.push_back(criu_);
  }
  if (!log_file.empty()) {
    argv.insert(argv.end(), {"--log", log_file, "--log-format", "json"});
  }
  return argv;
}

std::string runc_criu_path_env(const std::string& criu, const char* path) {
  auto slash = criu.rfind('/');
  if (slash == std::string::npos || slash == 0 || criu.substr(slash + 1) != "criu") return {};
  std::string rest =
      path != nullptr && *path != '\0'
          ? std::string(path)
          : std::string("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  return "PATH=" + criu.substr(0, slash) + ":" + rest;
}

std::vector<std::string> RuncClient::criu_argv(const std::string& log_file,
                                               const std::string& criu_config) const {
  std::vector<std::string> env;
  if (!criu_config.empty()) env.push_back("CRIU_CONFIG_FILE=" + criu_config);
  if (auto path = runc_criu_path_env(criu_, std::getenv("PATH")); !path.empty()) {
    env.push_back(std::move(path));
  }
  auto argv = base_argv(log_file);
  if (!env.empty()) {
    env.insert(env.begin(), "/usr/bin/env");
    argv.insert(argv.begin(), env.begin(), env.end());
  }
  return argv;
}

namespace {

// runc's error: the msg of the last error line of its output or JSON/text log, else the
// last line, else the exit status.
std::string runc_error_text(const ProcessResult& r) {
  std::istringstream in(r.err);
  std::string last, last_error;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    last = line;
    if (line.find("\"level\":\"error\"") != std::string::npos ||
        line.find("level=error") != std::string::npos) {
      last_error = line;
    }
  }
  std::string pick = last_error.empty() ? last : last_error;
  auto doc = nlohmann::json::parse(pick, nullptr, false);
  if (!doc.is_discarded() && doc.is_object() && doc.contains("msg")) return doc.value("msg", pick);
  auto pos = pick.find("msg=\"");
  if (pos != std::string::npos) {
    // logrus text format: a Go-quoted string; undo the escapes that matter for reading.
    std::string raw = pick.substr(pos + 5, pick.size() - pos - 6), msg;
    for (std::size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '\\' && i + 1 < raw.size()) {
        char next = raw[++i];
        msg += next == 'n' ? '\n' : next == 't' ? '\t' : next;
      } else {
        msg += raw[i];
      }
    }
    return msg;
  }
  return pick.empty() ? "exit status " + std::to_string(r.exit_code) : pick;
}

}  // namespace

Result<ProcessResult> RuncClient::run(std::vector<std::string> argv,
                                      const std::string& what) const {
  ProcessOptions opts;
  opts.timeout = std::chrono::minutes(10);
  auto r = run_process(argv, opts);
  if (!r) return std::unexpected(r.error().wrap(what));
  if (!r->ok()) {
    return fail(what + ": " + (r->timed_out ? std::string("timed out") : runc_error_text(*r)));
  }
  return r;
}

Result<RuncState> RuncClient::state(const std::string& id) const {
  auto argv = base_argv();
  argv.insert(argv.end(), {"state", id});
  auto r = run(argv, "runc state " + id);
  if (!r) return std::unexpected(r.error());
  return parse_runc_state(r->out);
}

Result<std::vector<RuncState>> RuncClient::list() const {
  auto argv = base_argv();
  argv.insert(argv.end(), {"list", "--format", "json"});
  auto r = run(argv, "runc list");
  if (!r) return std::unexpected(r.error());
  return parse_runc_list(r->out);
}

Result<void> RuncClient::pause(const std::string& id) const {
  auto argv = base_argv();
  argv.insert(argv.end(), {"pause", id});
  auto r = run(argv, "runc pause " + id);
  if (!r) return std::unexpected(r.error());
  return {};
}

std::vector<std::string> RuncClient::resume_argv(const std::string& id) const {
  auto argv = base_argv();
  argv.insert(argv.end(), {"resume", id});
  return argv;
}

Result<void> RuncClient::resume(const std::string& id) const {
  auto argv = base_argv();
  argv.insert(argv.end(), {"resume", id});
  auto r = run(argv, "runc resume " + id);
  if (!r) return std::unexpected(r.error());
  return {};
}

Result<void> RuncClient::kill(const std::string& id, const std::string& signal) const {
  auto argv = base_argv();
  argv.insert(argv.end(), {"kill", id, signal});
  auto r = run(argv, "runc kill " + id + " " + signal);
  if (!r) return std::unexpected(r.error());
  return {};
}

Result<std::vector<int>> RuncClient::pids(const std::string& id) const {
  auto argv = base_argv();
  argv.insert(argv.end(), {"ps", "--format", "json", id});
  auto r = run(argv, "runc ps " + id);
  if (!r) return std::unexpected(r.error());
  auto j = nlohmann::json::parse(r->out, nullptr, /*allow_exceptions=*/false);
  std::vector<int> out;
  if (j.is_null()) return out;
  if (!j.is_array()) return fail("runc ps " + id + ": not a JSON array");
  for (const auto& pid : j) {
    if (!pid.is_number_integer()) return fail("runc ps " + id + ": not a list of pids");
    out.push_back(pid.get<int>());
  }
  return out;
}

Result<void> RuncClient::checkpoint(const std::string& id, const std::string& images,
                                    const std::string& work, const std::vector<std::string>& extra,
                                    const std::string& criu_config) const {
  // runc hands its environment to `criu swrk`, which reads criu_config (CRIU's documented
  // CRIU_CONFIG_FILE) *before* runc's RPC options: it sets what runc leaves unset
  // (network-lock, external, tcp-close ...), and cannot undo what runc sets (runc 1.1
  // always asks for an empty network namespace). env(1) sets it for this call only.
  auto argv = criu_argv({}, criu_config);
  argv.insert(argv.end(), {"checkpoint", "--image-path", images, "--work-path", work});
  argv.insert(argv.end(), extra.begin(), extra.end());
  argv.push_back(id);
  auto r = run(argv, "runc checkpoint " + id);
  if (!r) {
    std::string excerpt = criu_log_excerpt(work + "/dump.log");
    return fail(r.error().message() + (excerpt.empty() ? "" : "\nCRIU dump.log:\n" + excerpt));
  }
  return {};
}

Result<void> RuncClient::restore(const std::string& id, const std::string& images,
                                 const std::string& work, const std::vector<std::string>& flags,
                                 const std::string& log_file) const {
  auto argv = criu_argv(log_file, restore_criu_config_);
  argv.insert(argv.end(), {"restore", "--detach", "--image-path", images, "--work-path", work});
  argv.insert(argv.end(), flags.begin(), flags.end());
  argv.push_back(id);
  // The restored processes get runc's stdio in place of the ones they were dumped with:
  // runc must run on the engine's stdio (ours), never on pipes we would wait on forever.
  ProcessOptions opts;
  opts.stdin_fd = 0;
  opts.stdout_fd = 1;
  opts.stderr_fd = 2;
  opts.timeout = std::chrono::minutes(10);
  opts.inherit_fd = restore_fd_;
  opts.inherit_as = restore_fd_as_;
  auto r = run_process(argv, opts);
  if (!r) return std::unexpected(r.error().wrap("runc restore " + id));
  if (r->ok()) return {};
  std::string why = r->timed_out ? "timed out" : "exit status " + std::to_string(r->exit_code);
  if (!log_file.empty()) {
    if (auto text = read_file(log_file, 16 << 20)) {
      ProcessResult as_err;
      as_err.err = *text;
      as_err.exit_code = r->exit_code;
      why = runc_error_text(as_err);
    }
  }
  std::string excerpt = criu_log_excerpt(work + "/restore.log");
  return fail("runc restore " + id + ": " + why +
              (excerpt.empty() ? "" : "\nCRIU restore.log:\n" + excerpt));
}

Result<void> RuncClient::delete_force(const std::string& id) const {
  auto argv = base_argv();
  argv.insert(argv.end(), {"delete", "--force", id});
  auto r = run(argv, "runc delete --force " + id);
  if (!r) return std::unexpected(r.error());
  return {};
}

std::string criu_log_excerpt(const std::string& log_path, std::size_t max_lines) {
  auto text = read_file(log_path, 64 << 20);
  if (!text) return {};
  std::vector<std::string> all, picked;
  std::istringstream in(*text);
  for (std::string line; std::getline(in, line);) {
    if (line.find("Error") != std::string::npos || line.find("error") != std::string::npos ||
        line.find("Warn") != std::string::npos || line.find("fail") != std::string::npos) {
      picked.push_back(line);
    }
    all.push_back(std::move(line));
  }
  auto& source = picked.empty() ? all : picked;
  std::size_t from = source.size() > max_lines ? source.size() - max_lines : 0;
  std::string out;
  for (std::size_t i = from; i < source.size(); ++i) out += "  " + source[i] + "\n";
  return out;
}

}  // namespace arch
