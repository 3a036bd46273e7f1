// EngineConfig: pointing containerd (config.toml) and Docker (daemon.json) at arch-runc,
// and taking it back out, without disturbing any other setting.
//
// containerd (CRI, so Kubernetes; config version 2 for containerd 1.x, version 3 with
// plugins."io.containerd.cri.v1.runtime" for containerd 2.x): adds a runtime "arch" (runtime_type
// io.containerd.runc.v2, options copied from the runc runtime so the cgroup driver matches,
// BinaryName = arch-runc) for a RuntimeClass with handler "arch"; with make_default, also sets the
// runc runtime's BinaryName so every CRI container goes through arch-runc. Docker (and so ECS and
// AWS Batch hosts): adds runtimes.arch.path; with make_default, default-runtime = "arch". The edits
// are pure functions on the file's text; edit_engine_file() adds the backup and the durable
// replace.
#pragma once

#include <string>
#include <string_view>

#include "base/error.h"

namespace arch {

struct EngineInstallOptions {
  std::string arch_runc_path = "/usr/local/bin/arch-runc";
  bool make_default = false;
  /// The config version a new (empty) config.toml gets: 3 for containerd 2.x, else 2.
  /// An existing file keeps its version (2 and 3 layouts are both edited).
  int containerd_config_version = 2;
};

inline constexpr const char* kArchRuntimeName = "arch";
inline constexpr const char* kDefaultContainerdConfig = "/etc/containerd/config.toml";
inline constexpr const char* kDefaultDockerConfig = "/etc/docker/daemon.json";

/// daemon.json text with ARCH's runtime added (an empty text counts as "{}").
Result<std::string> docker_config_install(std::string_view text, const EngineInstallOptions& opts);
/// daemon.json text with ARCH's runtime (and default-runtime, if it is ARCH) removed.
Result<std::string> docker_config_uninstall(std::string_view text);

/// containerd config.toml text with ARCH's runtime added (empty text: a new file of
/// opts.containerd_config_version).
Result<std::string> containerd_config_install(std::string_view text,
                                              const EngineInstallOptions& opts);
/// containerd config.toml text with ARCH's runtime and BinaryName removed.
Result<std::string> containerd_config_uninstall(std::string_view text,
                                                const std::string& arch_runc_path);

/// What edit_engine_file did.
struct EngineEdit {
  bool changed = false;
  std::string backup;  ///< The backup of the previous file, when there was one.
};

/// Reads `path` (missing: empty), applies `edit`, and when the text changes, copies the old
/// file to `<path>.arch-backup.<UTC time>` and replaces the file durably, keeping its mode.
template <class Edit>
Result<EngineEdit> edit_engine_file(const std::string& path, Edit edit);

Result<EngineEdit> edit_engine_file_with(const std::string& path,
                                         Result<std::string> (*edit)(std::string_view, const void*),
                                         const void* ctx);

template <class Edit>
Result<EngineEdit> edit_engine_file(const std::string& path, Edit edit) {
  return edit_engine_file_with(
      path,
      [](std::string_view text, const void* ctx) { return (*static_cast<const Edit*>(ctx))(text); },
      &edit);
}

}  // namespace arch
