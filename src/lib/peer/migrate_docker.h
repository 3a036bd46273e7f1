// MigrateDocker: live migration of a Docker container (peer/migrate.h): what the source reads
// of Docker's record to re-create the container elsewhere, the offer's "docker" part and its
// validation, and the Docker CLI calls of both sides.
//
// The source reads config.v2.json and hostconfig.json beneath [docker] data_root
// (managed/docker_labels.h: never a symlink, root's regular files, at most 1 MiB) of a
// container in containerd namespace "moby" (a container there without Docker's record is
// migrated as a containerd one). Carried: the name, Config.Image, the process (Entrypoint +
// Cmd: re-created as --entrypoint=argv[0] and the rest as the command, the same argv),
// Config.Env, WorkingDir, User, Hostname, Labels, the restart policy, the network mode (default,
// bridge, none or host), Memory, NanoCpus, ShmSize, ReadonlyRootfs, Init and AutoRemove.
// Refused with an error that names the setting (before anything is frozen), never silently
// dropped: mounts of any kind (binds, volumes, tmpfs, --mount), published ports, privileged,
// added or dropped capabilities, devices, security options, links, volumes-from, another
// container's or the host's pid/ipc/uts/user namespace, other networks, a terminal or an open
// stdin, and ECS tasks (orchestrated: their labels or an owner other than "moby").
//
// The job key: a Docker container keyed by its container id would get the new container's id
// as its key on the destination and not find its checkpoint, so the offer's environment gains
// ARCH_JOB_ID=<the source's key> (then, and on every later move, the key is that job id).
//
// Every value from the record or the offer goes to the docker CLI as `--flag=value` or after
// `--`, and is validated first: a name of [A-Za-z0-9][A-Za-z0-9_.-]*, an image that does not
// start with '-', "NAME=value" environment entries (a bare NAME would make the CLI copy archd's
// own variable), no NUL or control character in anything.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "config/node_config.h"
#include "managed/container_registry.h"
#include "managed/docker_labels.h"

namespace arch {

/// The offer's "engine" for a Docker container (containerd's is "containerd", the default).
inline constexpr std::string_view kDockerEngine = "docker";

/// What re-creates a Docker container on another node (see the top of this file).
struct DockerContainerSpec {
  std::string name;               ///< Without Docker's leading '/'.
  std::string image;              ///< Config.Image, as the user named it.
  std::vector<std::string> args;  ///< Entrypoint + Cmd: the process's argv.
  std::vector<std::string> env;   ///< "NAME=value" each.
  std::string cwd = "/";          ///< WorkingDir ("/" when Docker's is empty).
  std::string user, hostname;     ///< Empty: not set.
  Labels labels;
  std::string restart = "no";                       ///< no, always, unless-stopped, on-failure.
  int64_t restart_max = 0;                          ///< on-failure's maximum retry count.
  std::string network;                              ///< "", "default", "bridge", "none" or "host".
  int64_t memory = 0, nano_cpus = 0, shm_size = 0;  ///< 0: Docker's default.
  bool read_only = false, init = false, auto_remove = false;
  bool operator==(const DockerContainerSpec&) const = default;
};

/// The spec of config.v2.json and hostconfig.json text, refusing what cannot be carried (the
/// error names the setting). Does not add the job key (see docker_container_of).
Result<DockerContainerSpec> parse_docker_container(std::string_view config_v2_json,
                                                   std::string_view hostconfig_json);

/// Checks every field as the destination does (names, image, env, sizes; see the top).
Result<void> validate_docker_spec(const DockerContainerSpec& spec);

/// The spec of the source's container `rec`: std::nullopt when it is not a Docker container
/// (not in "moby", or no record under [docker] data_root); an error when it is one that
/// cannot be re-created (see the top) or is an ECS task. Its env gains ARCH_JOB_ID=rec.key
/// when the key is the container id.
Result<std::optional<DockerContainerSpec>> docker_container_of(const ContainerRecord& rec,
                                                               const NodeConfig& config);

/// The migrate.offer of the source's Docker container: ns, id, image, args, env, cwd as
/// containerd's, engine "docker" and a "docker" object with the rest.
nlohmann::json docker_offer(const ContainerRecord& rec, const DockerContainerSpec& spec);

/// The spec a migrate.offer with engine "docker" carries, validated (ns must be "moby").
Result<DockerContainerSpec> parse_docker_offer(const nlohmann::json& offer);

/// The `docker create` arguments (after the CLI's global options) for `spec` with Docker
/// runtime `runtime`: every value as --flag=value, then "--", the image and the command.
std::vector<std::string> docker_create_args(const DockerContainerSpec& spec,
                                            const std::string& runtime);

/// The destination's checks before anything is frozen: the CLI is executable, its Docker
/// has runtime [peers] migrate_docker_runtime, the image is there, no container has the name.
Result<void> check_docker_destination(const NodeConfig& config, const DockerContainerSpec& spec);

/// `docker create` then `docker start` on this node; the new container's id. On a failure
/// the container (if created) is removed.
Result<std::string> create_docker_container(const NodeConfig& config,
                                            const DockerContainerSpec& spec);

/// `docker rm -f` of container `id_or_name` (validated) on this node. Best effort.
void remove_docker_container(const NodeConfig& config, const std::string& id_or_name);

/// The source's restart policy held at "no" while the migration may end its tasks (else
/// dockerd would restart a container whose tasks the migration ended, here, while it runs
/// on the destination); put back on destruction unless disarmed (the container moved).
class DockerRestartHold {
 public:
  /// Sets the policy of `id` to "no" when `spec` has another (nothing to do otherwise).
  static Result<DockerRestartHold> hold(const NodeConfig& config, const std::string& id,
                                        const DockerContainerSpec& spec);
  DockerRestartHold(DockerRestartHold&& o) noexcept;
  DockerRestartHold& operator=(DockerRestartHold&&) = delete;
  ~DockerRestartHold();
  /// The container moved: its policy stays "no" (it is removed after post-copy).
  void disarm() { policy_.clear(); }

 private:
  DockerRestartHold(const NodeConfig& config, std::string id, std::string policy)
      : config_(&config), id_(std::move(id)), policy_(std::move(policy)) {}
  const NodeConfig* config_;
  std::string id_, policy_;  ///< policy_ empty: nothing to put back.
};

}  // namespace arch
