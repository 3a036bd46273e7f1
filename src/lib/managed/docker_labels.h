// DockerLabels: a Docker container's labels, read from Docker's own record of it
// (<data root>/containers/<id>/config.v2.json, written by dockerd as root), never from the
// OCI bundle (whose annotations and environment the container's author chooses).
//
// The file is opened from the data root's fd with openat2 (RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS: no symlink at any step, never a FIFO or a
// device), must be a regular file owned by root of at most kMaxDockerConfigBytes, and is
// parsed with nlohmann-json: only `Config.Labels` (an object of strings) is read.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "base/error.h"

namespace arch {

/// Labels by name.
using Labels = std::map<std::string, std::string, std::less<>>;

/// Docker's default data root ([docker] data_root).
inline constexpr const char* kDefaultDockerDataRoot = "/var/lib/docker";
/// The largest config.v2.json read (Docker's are a few KiB; environment and labels included).
inline constexpr std::size_t kMaxDockerConfigBytes = std::size_t{1} << 20;

/// The files of Docker's record of a container that ARCH reads.
inline constexpr const char* kDockerConfigFile = "config.v2.json";
inline constexpr const char* kDockerHostConfigFile = "hostconfig.json";

/// Accepts a Docker container id: 64 lowercase hex digits.
Result<void> validate_docker_id(std::string_view id);

/// `Config.Labels` of config.v2.json text (empty when there are none). Errors name what
/// is malformed: not JSON, Config or Labels not an object, a label value not a string.
Result<Labels> parse_docker_labels(std::string_view config_v2_json);

/// The text of `file` (kDockerConfigFile or kDockerHostConfigFile) of Docker container `id`
/// under `data_root`, opened and checked as above; std::nullopt when it does not exist.
/// Every refusal is an error of kind kPermission that says why.
Result<std::optional<std::string>> read_docker_record(const std::string& data_root,
                                                      std::string_view id, std::string_view file);

/// The labels of Docker container `id` under `data_root` (see above). Every refusal
/// (a bad id, a symlink anywhere, not a regular file, not root's, too large, malformed)
/// is an error of kind kPermission that says why.
Result<Labels> read_docker_labels(const std::string& data_root, std::string_view id);

}  // namespace arch
