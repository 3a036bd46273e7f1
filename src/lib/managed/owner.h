// Owner: who a container's checkpoints belong to, derived only from what the engine sets
// (never from the container's environment, image or labels the tenant chooses). The owner
// is one path segment of the store (<base>/<owner>/<key>), so a key (ARCH_JOB_ID ...) is
// scoped inside its owner: another tenant naming the same key reaches another directory.
//
//   containerd namespace <ns> (ctr, nerdctl; Docker's "moby")      -> "<ns>"
//   CRI (namespace "k8s.io") with io.kubernetes.cri.sandbox-namespace -> "k8s.io+<pod ns>"
//   CRI without it (the pod sandbox itself)                          -> "k8s.io"
// '+' cannot occur in a containerd namespace, so derived owners never clash with plain ones.
#pragma once

#include <string>
#include <string_view>

#include "base/error.h"
#include "base/names.h"
#include "runtime/oci_spec.h"

namespace arch {

/// The containerd namespace of CRI (Kubernetes) containers.
inline constexpr std::string_view kCriNamespace = "k8s.io";
/// The CRI annotation naming the pod's namespace (containerd's CRI plugin writes it).
inline constexpr std::string_view kCriSandboxNamespace = "io.kubernetes.cri.sandbox-namespace";

/// The owner of a container in containerd namespace `ns` with spec annotations in `env`.
/// Errors when a part is not a valid name.
Result<std::string> derive_owner(std::string_view ns, const ArchEnv& env);

}  // namespace arch
