// CriuFeatures: what the kernel and CRIU on this node can do for a checkpoint, asked once
// per process with `criu check --feature NAME` (exit status 0: supported).
#pragma once

#include <string>

namespace arch {

/// Whether one CRIU feature is usable, and CRIU's own words when it is not.
struct CriuFeature {
  bool supported = false;
  std::string reason;  ///< Empty when supported: why not ("Dirty tracking is OFF ...").
};

/// `criu check --feature mem_dirty_track`: the kernel's soft-dirty page tracking, which
/// iterative pre-copy (`runc checkpoint --pre-dump`, then a dump with --parent-path) needs.
/// Asked once per CRIU binary and process; `criu` empty means "criu" on PATH.
CriuFeature criu_dirty_tracking(const std::string& criu);

/// `criu check --feature NAME` for any feature CRIU knows ("uffd-noncoop", "fdinfo_lock"
/// ...), asked once per CRIU binary, feature and process.
CriuFeature criu_feature(const std::string& criu, const std::string& name);

/// The reason text of a failed `criu check --feature` run: its warning or error lines
/// ("Warn (criu/cr-check.c:824): Dirty tracking is OFF ..." -> "Dirty tracking is OFF ..."),
/// else the exit status. Exposed for tests.
std::string criu_check_reason(const std::string& output, int exit_code);

}  // namespace arch
