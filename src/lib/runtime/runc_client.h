// RuncClient: ARCH's own calls to runc (state, pause, resume, checkpoint, restore, kill),
// made the way containerd makes them: same --root, a JSON --log we can read back.
#pragma once

#include <string>
#include <vector>

#include "base/error.h"
#include "base/process.h"

namespace arch {

/// `runc state` output, the parts ARCH uses.
struct RuncState {
  std::string id;
  std::string status;  ///< "created", "running", "paused", "stopped".
  int pid = 0;
  std::string bundle;
  std::string rootfs;
};

/// Parses `runc state` JSON.
Result<RuncState> parse_runc_state(std::string_view json_text);
/// Parses `runc list --format json` output (a JSON array of states, or null when empty).
Result<std::vector<RuncState>> parse_runc_list(std::string_view json_text);

/// The PATH assignment (`PATH=DIR:path`) that makes runc 1.2+ find `criu` (they ignore
/// --criu and run "criu" from PATH): DIR is criu's directory; empty when criu is not an
/// absolute path to a file named "criu" (such a CRIU cannot be found on PATH). `path` is
/// the caller's PATH (nullptr or empty: a root default).
std::string runc_criu_path_env(const std::string& criu, const char* path);

class RuncClient {
 public:
  /// `runc` binary, `--root` directory, CRIU binary (empty: runc's default).
  RuncClient(std::string runc, std::string root, std::string criu = {})
      : runc_(std::move(runc)), root_(std::move(root)), criu_(std::move(criu)) {}

  Result<RuncState> state(const std::string& id) const;
  /// `runc list --format json`: every container under this root, one runc call.
  Result<std::vector<RuncState>> list() const;
  Result<void> pause(const std::string& id) const;
  Result<void> resume(const std::string& id) const;
  /// The argv of `runc resume ID` (for a process that must thaw it without us).
  std::vector<std::string> resume_argv(const std::string& id) const;
  Result<void> kill(const std::string& id, const std::string& signal) const;
  /// `runc ps --format json ID`: the pids of every process in the container.
  Result<std::vector<int>> pids(const std::string& id) const;
  /// `runc checkpoint --image-path IMAGES --work-path WORK [extra...] ID`. A non-empty
  /// `criu_config` is a CRIU configuration file runc's CRIU reads (CRIU_CONFIG_FILE): runc
  /// has no flag for most CRIU options (e.g. network-lock).
  Result<void> checkpoint(const std::string& id, const std::string& images, const std::string& work,
                          const std::vector<std::string>& extra,
                          const std::string& criu_config = {}) const;
  /// `runc restore --detach --image-path IMAGES --work-path WORK [flags...] ID`, where
  /// `flags` carries the caller's create flags (bundle, pid-file, console-socket ...).
  Result<void> restore(const std::string& id, const std::string& images, const std::string& work,
                       const std::vector<std::string>& flags, const std::string& log_file) const;
  /// For every later restore(): a CRIU configuration file runc's CRIU reads
  /// (CRIU_CONFIG_FILE; empty: none) and one fd of ours that runc inherits, and hands on to
  /// `criu swrk`, at number `fd_as` (what the file's `inherit-fd fd[N]:KEY` names; -1: none).
  void set_restore_criu(std::string config_file, int fd = -1, int fd_as = -1) {
    restore_criu_config_ = std::move(config_file);
    restore_fd_ = fd;
    restore_fd_as_ = fd_as;
  }
  /// `runc delete --force ID`: removes what a failed restore may have left behind.
  Result<void> delete_force(const std::string& id) const;

  [[nodiscard]] const std::string& root() const { return root_; }

 private:
  std::vector<std::string> base_argv(const std::string& log_file = {}) const;
  /// base_argv for a call that runs CRIU: behind `/usr/bin/env` with CRIU_CONFIG_FILE
  /// (when criu_config is set) and runc_criu_path_env (runc 1.2+ ignores --criu).
  std::vector<std::string> criu_argv(const std::string& log_file,
                                     const std::string& criu_config) const;
  Result<ProcessResult> run(std::vector<std::string> argv, const std::string& what) const;

  std::string runc_;
  std::string root_;
  std::string criu_;
  std::string restore_criu_config_;
  int restore_fd_ = -1;
  int restore_fd_as_ = -1;
};

/// The lines of a CRIU log that explain a failure ("Error", "error", "Warn" lines; the
/// last `max_lines`), or the log's tail when none match.
std::string criu_log_excerpt(const std::string& log_path, std::size_t max_lines = 12);

}  // namespace arch
