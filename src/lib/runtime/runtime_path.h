// RuntimePath: which binary arch-runc hands a call to. Never itself, never a binary that
// a non-root user could have replaced.
#pragma once

#include <string>

#include "base/error.h"
#include "config/node_config.h"

namespace arch {

/// Where runc is looked for when the node config names none, in order.
inline constexpr const char* kDefaultRuncPaths[] = {"/usr/sbin/runc", "/usr/bin/runc",
                                                    "/usr/local/sbin/runc", "/usr/local/bin/runc"};

/// Checks that `path` is an executable regular file owned by root, not writable by group
/// or others, and not the same file as `self` (the running arch-runc).
Result<void> check_runtime_binary(const std::string& path, const std::string& self);

/// The real runc: the config's `[runtime] runc`, else the first usable default path.
/// `self` is the running binary (normally "/proc/self/exe").
Result<std::string> resolve_runtime(const NodeConfig& config, const std::string& self);

}  // namespace arch
