// Owner: the containerd namespace, refined by the CRI sandbox namespace or the ECS agent's
// labels (see owner.h).
#include "managed/owner.h"

#include <cstdio>

#include "base/names.h"

namespace arch {
namespace {

std::unexpected<Error> refuse_label(std::string_view label, const std::string& why) {
  return fail(ErrorKind::kPermission, "ECS label " + std::string(label) + ": " + why);
}

// An ECS cluster or family name: 1..255 of [A-Za-z0-9_-] (ECS's own rule).
Result<void> check_ecs_name(std::string_view label, std::string_view value) {
  if (value.empty()) return refuse_label(label, "empty");
  for (std::size_t i = 0; i < value.size(); ++i) {
    char c = value[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-';
    if (!ok) {
      char shown[8];
      auto u = static_cast<unsigned char>(c);
      if (u > 0x20 && u < 0x7f) {
        std::snprintf(shown, sizeof shown, "'%c'", c);
      } else {
        std::snprintf(shown, sizeof shown, "\\x%02x", u);
      }
      return refuse_label(label,
                          std::string(shown) + " at offset " + std::to_string(i) +
                              " is not one of [A-Za-z0-9_-]; refusing to map it to an owner");
    }
  }
  return {};
}

// The cluster name of the cluster label: the value, or <name> of a cluster ARN.
Result<std::string> cluster_name(std::string_view value) {
  if (!value.starts_with("arn:")) return std::string(value);
  // arn:<partition>:ecs:<region>:<account>:cluster/<name>
  std::size_t colons[5];
  std::size_t pos = 0;
  for (auto& c : colons) {
    c = value.find(':', pos);
    if (c == std::string_view::npos) return refuse_label(kEcsClusterLabel, "a malformed ARN");
    pos = c + 1;
  }
  auto service = value.substr(colons[1] + 1, colons[2] - colons[1] - 1);
  auto resource = value.substr(colons[4] + 1);
  if (service != "ecs" || !resource.starts_with("cluster/")) {
    return refuse_label(kEcsClusterLabel, "an ARN that is not an ECS cluster's");
  }
  return std::string(resource.substr(8));
}

}  // namespace

Result<std::string> ecs_owner(const Labels& labels) {
  auto get = [&](std::string_view name) -> const std::string* {
    auto it = labels.find(name);
    return it == labels.end() ? nullptr : &it->second;
  };
  const std::string* cluster = get(kEcsClusterLabel);
  const std::string* family = get(kEcsFamilyLabel);
  const std::string* arn = get(kEcsTaskArnLabel);
  if (!cluster && !family && !arn) return std::string();
  for (auto [label, value] :
       {std::pair{kEcsClusterLabel, cluster}, {kEcsFamilyLabel, family}, {kEcsTaskArnLabel, arn}}) {
    if (!value) {
      return refuse_label(label,
                          "missing while other com.amazonaws.ecs.* labels are set "
                          "(the ECS agent sets all of them)");
    }
  }
  if (!arn->starts_with("arn:") || arn->find(":task/") == std::string::npos) {
    return refuse_label(kEcsTaskArnLabel, "not an ECS task ARN");
  }
  auto name = cluster_name(*cluster);
  if (!name) return std::unexpected(name.error());
  if (auto ok = check_ecs_name(kEcsClusterLabel, *name); !ok) return std::unexpected(ok.error());
  if (auto ok = check_ecs_name(kEcsFamilyLabel, *family); !ok) return std::unexpected(ok.error());
  // A task ARN of the long format (task/<cluster>/<id>) names the cluster too: it must agree.
  auto task = std::string_view(*arn).substr(arn->find(":task/") + 6);
  if (auto slash = task.find('/');
      slash != std::string_view::npos && task.substr(0, slash) != *name) {
    return refuse_label(kEcsTaskArnLabel, "names cluster " + std::string(task.substr(0, slash)) +
                                              ", the cluster label " + *name);
  }
  std::string owner = "ecs+" + *name + "+" + *family;
  if (auto ok = validate_owner(owner); !ok) {
    return fail(ErrorKind::kPermission, "ECS owner: " + ok.error().message());
  }
  return owner;
}

Result<std::string> derive_owner(std::string_view ns, const ArchEnv& env,
                                 const Labels* docker_labels) {
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
  if (ns == kDockerNamespace && docker_labels != nullptr) {
    // Docker's own record, and the ECS agent writes these labels after the task
    // definition's dockerLabels (SECURITY.md): a task cannot choose another's.
    auto ecs = ecs_owner(*docker_labels);
    if (!ecs) return std::unexpected(ecs.error());
    if (!ecs->empty()) return *ecs;
  }
  if (auto ok = validate_owner(owner); !ok) return std::unexpected(ok.error());
  return owner;
}

}  // namespace arch
