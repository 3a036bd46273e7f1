// RuntimeExec: handing a runtime call over to the real runc (execve, identical argv), and
// the pieces every runtime-call binary shares: where its log lines go.
#pragma once

#include <string>

#include "config/node_config.h"
#include "runtime/oci_spec.h"
#include "runtime/runc_command_line.h"
#include "runtime/runc_log.h"

namespace arch {

/// The loop marker: set (to arch-runc's pid) in the environment of a configured runc that
/// is a script (a wrapper), and only then: a real runc binary never gets it, so neither do
/// the OCI hooks runc starts with its own environment (hooks without `env`) nor anything
/// they run. A wrapper that leads back to arch-runc is what the marker catches.
inline constexpr const char* kHopVariable = "_ARCH_RUNC_HOP";

/// True when this arch-runc was reached through a wrapper that arch-runc itself ran: the
/// marker names this process (the wrapper exec'ed arch-runc) or its parent (the wrapper
/// ran it as a child). A marker inherited from further away (a hook of a wrapped runc that
/// calls the runtime again) is not a loop.
bool is_runtime_loop();

/// ARCH's messages go where runc's own go when the caller chose a log file (containerd:
/// `--log <bundle>/log.json --log-format json`), else to the node's ARCH log.
RuncLog log_for_call(const RuncCommandLine& cl, const NodeConfig& config);

/// "arch-runc: create c1" for messages.
std::string describe_call(const RuncCommandLine& cl);

/// execve(runtime, argv), with the loop marker added to the environment when `runtime` is
/// a script (see kHopVariable) and removed otherwise. Returns only on
/// failure, after logging it and printing it to stderr, with the exit status to use.
int exec_runtime(const std::string& runtime, const char* const* argv, const RuncLog& log,
                 const RuncCommandLine& cl);

/// The bundle of a create/run call as an absolute path (runc's default is the cwd).
std::string absolute_bundle(const RuncCommandLine& cl);

}  // namespace arch
