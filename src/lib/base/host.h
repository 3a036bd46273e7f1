// Host: this machine's name and kernel release, as recorded in manifests and archd's status.
#pragma once

#include <string>

namespace arch {

/// gethostname(2), or "" when it fails.
std::string host_name();

/// The running kernel's release (uname -r), or "" when uname(2) fails.
std::string kernel_release();

}  // namespace arch
