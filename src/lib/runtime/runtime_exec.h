// RuntimeExec: handing a runtime call over to the real runc (execve, identical argv), and
// the pieces every runtime-call binary shares: where its log lines go.
#pragma once

#include <string>

#include "config/node_config.h"
#include "runtime/oci_spec.h"
#include "runtime/runc_command_line.h"
#include "runtime/runc_log.h"

namespace arch {

/// Set in runc's environment by arch-runc. Finding it set on entry means the configured
/// runc led back to arch-runc (a copy installed as runc, or a wrapper that calls it).
/// runc never hands its own environment to container processes (they get the spec's).
inline constexpr const char* kHopVariable = "_ARCH_RUNC_HOP";

/// ARCH's messages go where runc's own go when the caller chose a log file (containerd:
/// `--log <bundle>/log.json --log-format json`), else to the node's ARCH log.
RuncLog log_for_call(const RuncCommandLine& cl, const NodeConfig& config);

/// "arch-runc: create c1" for messages.
std::string describe_call(const RuncCommandLine& cl);

/// execve(runtime, argv) with the hop marker added to the environment. Returns only on
/// failure, after logging it and printing it to stderr, with the exit status to use.
int exec_runtime(const std::string& runtime, const char* const* argv, const RuncLog& log,
                 const RuncCommandLine& cl);

/// The bundle of a create/run call as an absolute path (runc's default is the cwd).
std::string absolute_bundle(const RuncCommandLine& cl);

}  // namespace arch
