// Owner: the containerd namespace, refined by the CRI sandbox namespace (see owner.h).
#include "managed/owner.h"

#include "base/names.h"

namespace arch {

Result<std::string> derive_owner(std::string_view ns, const ArchEnv& env) {
  if (auto ok = validate_name("namespace", ns); !ok) return std::unexpected(ok.error());
  std::string owner(ns);
  if (ns == kCriNamespace) {
    // Only containerd's CRI plugin creates containers in k8s.io, and it sets this
    // annotation itself on every container of a pod (not from the pod's labels).
    if (auto pod_ns = env.annotation(kCriSandboxNamespace); !pod_ns.empty()) {
      if (auto ok = validate_name("pod namespace", pod_ns); !ok) return std::unexpected(ok.error());
      owner += "+" + std::string(pod_ns);
    }
  }
  if (auto ok = validate_owner(owner); !ok) return std::unexpected(ok.error());
  return owner;
}

}  // namespace arch
