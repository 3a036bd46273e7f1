// Owner: who a container's checkpoints belong to, derived only from what the engine sets
// (never from the container's environment, image or labels the tenant chooses). The owner
// is one path segment of the store (<base>/<owner>/<key>), so a key (ARCH_JOB_ID ...) is
// scoped inside its owner: another tenant naming the same key reaches another directory.
//
//   containerd namespace <ns> (ctr, nerdctl; Docker's "moby")      -> "<ns>"
//   CRI (namespace "k8s.io") with io.kubernetes.cri.sandbox-namespace -> "k8s.io+<pod ns>"
//   CRI without it (the pod sandbox itself)                          -> "k8s.io"
//   Docker ("moby") on a node with [owners] ecs = true, a container the ECS agent created
//   (labels com.amazonaws.ecs.cluster, .task-definition-family, .task-arn, read from
//   Docker's config.v2.json)                                         -> "ecs+<cluster>+<family>"
// '+' cannot occur in a containerd namespace, so derived owners never clash with plain ones.
//
// ECS names: a cluster label that is an ARN (arn:<partition>:ecs:<region>:<account>:
// cluster/<name>; the agent's ECS_CLUSTER may be either form) maps to <name>, so a node
// configured by name and one configured by ARN agree. Cluster and family must then be ECS
// names ([A-Za-z0-9_-], which ECS itself enforces); anything else ('/', ':', '+', '.',
// "..", spaces) is refused, never rewritten, and so is an owner longer than 128 characters
// (ECS allows 255-character names) or a container with only some of the three labels.
#pragma once

#include <string>
#include <string_view>

#include "base/error.h"
#include "base/names.h"
#include "managed/docker_labels.h"
#include "runtime/oci_spec.h"

namespace arch {

/// The containerd namespace of CRI (Kubernetes) containers.
inline constexpr std::string_view kCriNamespace = "k8s.io";
/// The CRI annotation naming the pod's namespace (containerd's CRI plugin writes it).
inline constexpr std::string_view kCriSandboxNamespace = "io.kubernetes.cri.sandbox-namespace";
/// Docker's containerd namespace.
inline constexpr std::string_view kDockerNamespace = "moby";
/// The labels the ECS agent sets on every container it creates (after the task
/// definition's dockerLabels, so these win).
inline constexpr std::string_view kEcsClusterLabel = "com.amazonaws.ecs.cluster";
inline constexpr std::string_view kEcsFamilyLabel = "com.amazonaws.ecs.task-definition-family";
inline constexpr std::string_view kEcsTaskArnLabel = "com.amazonaws.ecs.task-arn";

/// The owner of a container in containerd namespace `ns` with spec annotations in `env`.
/// `docker_labels`: the container's labels from Docker's record, given only for a Docker
/// container on a node that enables ECS owners (nullptr otherwise). Errors when a part is
/// not a valid name (ECS label problems: kind kPermission, saying which label and why).
Result<std::string> derive_owner(std::string_view ns, const ArchEnv& env,
                                 const Labels* docker_labels = nullptr);

/// "ecs+<cluster>+<family>" from the ECS agent's labels, or "" when none of the three is
/// present (not an ECS container). See the top of this file for the mapping and refusals.
Result<std::string> ecs_owner(const Labels& labels);

}  // namespace arch
