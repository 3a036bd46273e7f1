// PrivateDir: archd's directories (state, event log, API socket) made root-only and checked.
#pragma once

#include <string>

#include "base/error.h"

namespace arch::agent {

/// Creates `dir` and any missing parents with mode 0700 (existing ones are left as they are).
Result<void> make_private_dirs(const std::string& dir);

/// Checks that `dir` is a directory (not a symlink) owned by us and not writable by group or
/// others, so nobody else can replace what archd puts in it.
Result<void> check_private_dir(const std::string& dir);

}  // namespace arch::agent
