// Names: validation of the container ids, namespaces and keys that ARCH builds paths from.
#pragma once

#include <cstddef>
#include <string_view>

#include "base/error.h"

namespace arch {

/// The longest container id, namespace or key accepted.
inline constexpr std::size_t kMaxNameLength = 128;

/// Accepts 1..128 characters of [A-Za-z0-9_.-], not starting with '.' or '-' (so never
/// "." or ".." and never a path separator): such a name is safe as one path component.
/// `kind` ("container id", "namespace", "key") names the value in the error, which says
/// why it was refused.
Result<void> validate_name(std::string_view kind, std::string_view name);

/// An owner (see managed/owner.h): one or more valid names joined by '+' ("default",
/// "k8s.io+team-a", "ecs+prod+web"), at most kMaxNameLength characters in all. '+' never
/// occurs in a containerd namespace, so derived owners cannot collide with plain ones.
Result<void> validate_owner(std::string_view name);

}  // namespace arch
