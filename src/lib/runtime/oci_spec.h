// OciSpec: what ARCH reads from a bundle's config.json (the OCI runtime spec): the
// container's ARCH_* environment variables, which are how a container opts in.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "base/error.h"

namespace arch {

/// What ARCH reads from a container's spec: the ARCH_* variables of its process environment
/// (plus AWS Batch's AWS_BATCH_JOB_ID, a stable job identity) and the Kubernetes CRI
/// annotations (io.kubernetes.cri.*).
struct ArchEnv {
  /// Every ARCH_* variable, and AWS_BATCH_JOB_ID, by name.
  std::map<std::string, std::string, std::less<>> vars;
  /// The spec's io.kubernetes.cri.* annotations, by name.
  std::map<std::string, std::string, std::less<>> annotations;

  /// ARCH_ENABLE is "1" or "true": the container is managed by ARCH.
  [[nodiscard]] bool enabled() const;
  [[nodiscard]] std::string_view get(std::string_view name) const;
  [[nodiscard]] std::string_view annotation(std::string_view name) const;
};

/// Extracts the ARCH_* variables from config.json text. Errors say what is malformed.
Result<ArchEnv> parse_arch_env(std::string_view config_json);

/// The container's root filesystem: the spec's root.path, made absolute against `bundle`
/// (containerd uses "rootfs" inside the bundle; Docker an absolute overlay2 "merged" dir).
Result<std::string> read_root_path(const std::string& bundle);

/// Reads `<bundle>/config.json` and extracts its ARCH_* variables.
Result<ArchEnv> read_arch_env(const std::string& bundle);

/// The annotation runc hands to CRIU as its configuration file (RPC config_file) at
/// checkpoint and restore. A container's spec is the tenant's: ARCH refuses to checkpoint
/// or restore one that sets it (see criu_config_from_spec).
inline constexpr std::string_view kCriuConfigAnnotation = "org.criu.config";

/// The value of the spec's `org.criu.config` annotation ("" when absent or empty): a
/// CRIU configuration file the container chose, which ARCH must not let CRIU read.
Result<std::string> criu_config_from_spec(std::string_view config_json);

}  // namespace arch
