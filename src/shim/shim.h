// Shim: arch-runc's handling of one runtime call.
#pragma once

namespace arch {

/// Handles one runtime call with runc's argv. Returns only when the call could not be
/// handed to runc (the return value is then the exit status); on success the process
/// has become runc.
int run_shim(int argc, const char* const* argv);

}  // namespace arch
