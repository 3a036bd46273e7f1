// NodeConfig: the node-wide settings in /etc/arch/arch.conf (INI), trusted only when root-owned.
//
// Format (INI; '#' or ';' starts a comment at the start of a line or after a space or
// tab; an unknown section or key is an error naming the closest known one):
//   [runtime]  runc = /usr/sbin/runc      criu = /opt/arch/criu/bin/criu
//              criu_trial = /var/lib/arch/criu-trial.json
//   [log]      level = error|warn|info|debug   file = /var/log/arch/arch.log
//   [store]    path = /var/lib/arch/checkpoints   keep = 2   on_disallowed = fail|unmanaged
//   [roots]    <name> = <absolute path>   (further allowed store roots; see StoreRoot)
//   [state]    dir = /run/arch
//   [restore]  on_failure = fresh|fail   lazy_pages = false|true
//              max_rootfs_bytes = 64G   max_archive_bytes = 256G   max_entries = 4000000
//   [agent]    socket, state_file, event_log, metrics_address, imds_endpoint,
//              imds_poll_seconds, imds_token_ttl_seconds, safety_margin_seconds,
//              rebalance_action, finalize_parallel, containerd_address (see NodeConfig::Agent)
//   [jobs]     dump_dir, compression = zstd|none, compression_level = 1-19,
//              leave_running = true|false (see NodeConfig::Jobs)
//   [checkpoint] rootfs_compression = none|zstd   zstd_level = 3   zstd_threads = 0
//              pre_copy = off|on|auto   network_lock = skip|iptables|nftables
//              tcp = auto|restore|close|fail
//              ghost_limit = 64M   failed_dumps_kept = 3   priority_max = 0
//              pages_at_rest = plain|streamed|encrypted
//   [keys]     dir = /etc/arch/keys   active = <key id> (see NodeConfig::Keys)
//   [owners]   ecs = false|true   (Docker containers of ECS tasks owned by cluster and family)
//   [docker]   data_root = /var/lib/docker   (where dockerd keeps config.v2.json)
//   [groups]   kubernetes_pods = true|false   (a pod's app containers are one group)
//   [peers]    dir, node_name, listen, nodes, timeout, cert_days (see NodeConfig::Peers)
// The file and its directory must be owned by root and not writable by group or others;
// otherwise nothing in it is used (root would be executing what another user chose).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"

namespace arch {

/// Where the node config lives unless ARCH_CONFIG names another file.
inline constexpr const char* kDefaultConfigPath = "/etc/arch/arch.conf";
inline constexpr const char* kDefaultLogFile = "/var/log/arch/arch.log";

enum class LogLevel { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

/// Parses "error", "warn"/"warning", "info", "debug".
Result<LogLevel> parse_log_level(std::string_view text);
/// The level's name as runc's JSON log uses it ("error", "warning", "info", "debug").
std::string_view log_level_name(LogLevel level);

inline constexpr const char* kDefaultStorePath = "/var/lib/arch/checkpoints";
inline constexpr const char* kDefaultKeysDir = "/etc/arch/keys";

/// The name of the default store root ([store] path) among the allowed roots.
inline constexpr const char* kLocalRootName = "local";

/// A directory root may write checkpoints (and shared work directories) under: the node's
/// default store ("local") or one named in [roots]. Roots must be owned by root and not
/// writable by group or others; everything below is reached without following symlinks.
struct StoreRoot {
  std::string name;  ///< "local", or the [roots] key.
  std::string path;  ///< Absolute, clean.
};

struct NodeConfig {
  std::string runc;  ///< The real runc; empty means "search the usual places".
  std::string criu;  ///< CRIU for ARCH's own checkpoint calls; empty means runc's default.
  /// [runtime] criu_trial: where setup records its functional CRIU trial (JSON, root-owned;
  /// shown by archctl version and node status).
  std::string criu_trial = "/var/lib/arch/criu-trial.json";
  LogLevel log_level = LogLevel::kInfo;
  std::string log_file = kDefaultLogFile;
  std::string store_path = kDefaultStorePath;  ///< [store] path: checkpoints when the
                                               ///< container names no ARCH_CHECKPOINT_HOST_PATH.
  int keep = 2;                                ///< [store] keep: committed generations per key.
  /// [store] on_disallowed = fail | unmanaged: a container whose ARCH_* variables name a
  /// path outside every allowed root fails to create (fail), or runs without ARCH.
  bool disallowed_unmanaged = false;
  std::vector<StoreRoot> roots;         ///< [roots]: further allowed roots, in file order.
  std::string state_dir = "/run/arch";  ///< [state] dir: the registry (tmpfs).
  bool restore_failure_fails = false;   ///< [restore] on_failure = fresh | fail.
  bool restore_lazy_pages = false;  ///< [restore] lazy_pages: CRIU lazy pages (see lazy_pages.h).
  /// [restore] group_wait: how long a group member being restored waits for the other
  /// members of its group generation to be created on this node (container/group_checkpoint.h)
  /// before its restore fails by the on_failure policy. 1-600 seconds.
  int restore_group_wait_seconds = 60;
  /// [restore] group_member_failure = stop | keep: when a member of a group spanning nodes
  /// fails to restore, the members held at the release (container/restore_barrier.h) fail
  /// too (stop) or go on (keep).
  bool restore_group_member_failure_stops = true;
  /// [groups] kubernetes_pods: the application containers of one Kubernetes pod are one
  /// group by default (container/group_checkpoint.h, pod_group_name).
  bool groups_kubernetes_pods = true;
  /// [restore] the node's caps on what a checkpoint may expand to when it is unpacked,
  /// beside the counts its manifest records (the tighter wins). Sizes take K/M/G/T.
  struct Limits {
    uint64_t max_rootfs_bytes = uint64_t{64} << 30;    ///< A rootfs diff's file data.
    uint64_t max_archive_bytes = uint64_t{256} << 30;  ///< A job archive's files.
    uint64_t max_entries = 4'000'000;                  ///< Entries of either.
  } limits;

  /// [agent]: archd, the node agent.
  struct Agent {
    std::string socket = "/run/arch/archd.sock";                ///< Local API (root-only).
    std::string state_file = "/var/lib/arch/agent/state.json";  ///< Survives restarts.
    std::string event_log = "/var/log/arch/events.jsonl";       ///< JSON lines.
    std::string metrics_address = "127.0.0.1:9477";             ///< Prometheus; empty: off.
    std::string imds_endpoint = "http://169.254.169.254";       ///< EC2 metadata; empty: off.
    int imds_poll_seconds = 2;                                  ///< 1-60.
    int imds_token_ttl_seconds = 21600;                         ///< 1-21600.
    int safety_margin_seconds = 15;                             ///< Kept free before the reclaim.
    std::string rebalance_action = "none";                      ///< none | drain.
    int finalize_parallel = 0;   ///< 1-256; 0: sized to the machine (default_finalize_parallel).
    int metrics_max_keys = 100;  ///< 0-10000: keys in arch_newest_checkpoint_age_seconds.
    bool status_page = true;     ///< GET /status on the metrics address.
    std::string containerd_address = "/run/containerd/containerd.sock";  ///< Event stream.
  } agent;

  /// [jobs]: process jobs (archctl job / process).
  struct Jobs {
    std::string dump_dir;  ///< Every job checkpoint also exported here; empty: only on --export.
    bool compress = true;  ///< compression = zstd | none (exported archives).
    int compression_level = 1;  ///< zstd level, 1-19 (1: measured fastest on memory images).
    bool leave_running =
        false;  ///< Default of `job checkpoint`: keep the job running after the dump.
    /// stream_images: dump and restore through ARCH's image streamer (`criu --stream`,
    /// criu/criu_stream.h): images encrypted at rest in authenticated chunks, one pass.
    bool stream_images = false;
    /// stream_compression: auto | off | zstd, of each streamed chunk before it is encrypted
    /// (store/stream_compression.h). auto: zstd where the store is slower than the
    /// compressor, level chosen from the measured rates; zstd: always tried.
    std::string stream_compression = "auto";
    int stream_compression_level = 0;  ///< 0: chosen from the rates; 1-19: fixed.
  } jobs;
  /// [checkpoint]: how checkpoints are written.
  struct Checkpoint {
    std::string rootfs_compression = "none";  ///< none | zstd (the rootfs diff).
    int zstd_level = 3;                       ///< 1-19.
    int zstd_threads = 0;                     ///< 0-64; 0: one per CPU.
    std::string pre_copy = "auto";            ///< off | on | auto (finalize; see finalize.h).
    /// CRIU's network lock during a dump: skip | iptables | nftables. skip (the default):
    /// ARCH never dumps TCP connections (CRIU refuses established ones without
    /// --tcp-established, which ARCH does not pass), so the lock protects nothing here and
    /// costs four iptables-restore runs per dump (~25% of a small container's dump).
    std::string network_lock = "skip";
    /// TCP connections: auto | restore | close | fail (container_tcp_policy(); ARCH_TCP
    /// overrides per container). A dump with connections always locks the network
    /// (iptables when network_lock is skip).
    std::string tcp = "auto";
    /// CRIU's ghost-file limit: the largest deleted-but-open file a dump stores (in the
    /// checkpoint's images, so it counts in the checkpoint's size). K/M/G suffixes.
    uint64_t ghost_limit = uint64_t{64} << 20;
    /// Failed dumps whose CRIU logs are kept per key (failed-*/ with dump-logs/), newest.
    int failed_dumps_kept = 3;
    /// How a container's pages images reach the store (criu/page_receiver.h): plain (CRIU
    /// writes them into the staging, the default), streamed (CRIU sends them to ARCH's
    /// page-server receiver, stored plain, digested as they pass) or encrypted (the same,
    /// each chunk sealed with a key from the node key: restored only through ARCH's lazy
    /// page server).
    std::string pages_at_rest = "plain";
    /// ARCH_PRIORITY in finalize's deadline plan: 0 (default) ignores it (the plan saves the
    /// most containers); N > 0 honours it clamped to 1..N, so that no tenant outweighs
    /// more than N containers of priority 1 by claiming a huge value.
    int priority_max = 0;
    /// Periodic checkpoints run by archd: the interval of every managed container that
    /// sets none (0: off, the default); ARCH_CHECKPOINT_INTERVAL sets one per container.
    std::chrono::seconds interval{0};
    /// The shortest interval a container may ask for (its value is raised to this).
    std::chrono::seconds min_interval{300};
    /// Whether a container's ARCH_CHECKPOINT_INTERVAL may set its own interval (allow,
    /// the default) or only turn periodic checkpoints off (deny: the node's interval).
    bool container_interval = true;
    /// Shared mode's work directory captured with each checkpoint, when its files total at
    /// most this many bytes (0: never), and put back as it was at that generation when a
    /// restore from it finds the directory changed (container/workdir_capture.h).
    uint64_t workdir_capture = uint64_t{64} << 20;
    /// The rootfs diff's zstd level, 0 when it is not compressed.
    [[nodiscard]] int rootfs_zstd_level() const {
      return rootfs_compression == "zstd" ? zstd_level : 0;
    }
  } checkpoint;
  /// [owners] ecs: a Docker container (namespace "moby") that the ECS agent created is
  /// owned by "ecs+<cluster>+<family>" from the agent's labels in Docker's own record of it
  /// (managed/owner.h); off, every Docker container is owned by "moby". The node decides:
  /// turn it on only where the ECS agent is the one creating containers through Docker.
  bool owners_ecs = false;
  /// [docker] data_root: dockerd's --data-root (where <id>/config.v2.json is read).
  std::string docker_data_root = "/var/lib/docker";
  /// [keys]: the node keys that seal checkpoints (store/node_key.h).
  struct Keys {
    std::string dir = kDefaultKeysDir;  ///< Root-only directory of `<key id>.key` files.
    std::string active;  ///< The key that seals; empty: the directory's `active` file, or
                         ///< its only key.
  } keys;
  /// [peers]: the authenticated channel between archd instances (peer/peer_tls.h) and the
  /// nodes a cross-node group checkpoint asks (peer/group_coordinator.h). Off by default.
  struct Peers {
    /// Root-only directory of this node's own TLS key (node.key) and certificate (node.crt).
    std::string dir = "/etc/arch/peers";
    std::string node_name;  ///< This node's name in its certificate; empty: the host name.
    std::string listen;     ///< archd's TLS listener "host:port"; empty: none (the default).
    /// The known peers, "name=host:port, ..." in the file.
    struct Node {
      std::string name, host;
      int port = 0;
      bool operator==(const Node&) const = default;
    };
    std::vector<Node> nodes;
    int timeout_seconds = 30;  ///< Connect, read and coordinator-silence timeout (1-600).
    int cert_days = 365;       ///< Validity of a node certificate `archctl peer cert` issues.
    /// Live migration (peer/migrate.h): how this node re-creates a container migrated to it.
    std::string migrate_ctr = "/usr/bin/ctr";                  ///< containerd's ctr.
    std::string migrate_runtime = "/usr/local/bin/arch-runc";  ///< --runc-binary of the new task.
    std::string migrate_runc_root;  ///< --runc-root of the new task; empty: containerd's default.
    /// The new task's cgroup is <this>/<id>; empty: containerd's default (/<namespace>/<id>).
    std::string migrate_cgroup_parent;
    /// Live migration of Docker containers (peer/migrate_docker.h), to and from this node:
    /// the docker CLI, the dockerd it talks to (--host) and the Docker runtime name that is
    /// arch-runc here (a re-created container gets --runtime=<this>).
    std::string migrate_docker = "/usr/bin/docker";
    std::string migrate_docker_host = "unix:///var/run/docker.sock";
    std::string migrate_docker_runtime = "arch";
  } peers;
};

/// This node's name among its peers: [peers] node_name, else the host name.
std::string peer_node_name(const NodeConfig& c);

/// Checks a node name: 1-63 characters of [a-z0-9.-], starting and ending with a letter or
/// digit (it is a certificate's DNS name).
Result<void> validate_node_name(std::string_view name);

/// Where archd records each task's exit status for arch-runc: <state dir>/exits/<ns>/<id>.
/// And the flag file whose presence means "this node is draining".
inline std::string exit_status_dir(const NodeConfig& c) {
  return c.state_dir + "/exits";
}
inline std::string draining_flag(const NodeConfig& c) {
  return c.state_dir + "/draining";
}

/// Every allowed root: "local" ([store] path) first, then [roots] in file order.
std::vector<StoreRoot> allowed_roots(const NodeConfig& c);

/// The result of loading: the config (defaults where the file said nothing or could not
/// be trusted) and the problems found, for the caller to log.
struct LoadedConfig {
  NodeConfig config;  ///< The file's settings, or the defaults when it is absent or unusable.
  std::string path;
  bool from_file = false;
  /// Non-empty when the file exists (or ARCH_CONFIG names it) but cannot be used: malformed
  /// (with its line), unknown section or key, not root-owned, unreadable. archd and archctl
  /// refuse to act on it; arch-runc logs it and passes every call through to runc.
  std::string error;
  std::vector<std::string> warnings;  ///< Problems that do not stop its use.
};

/// The config file path: $ARCH_CONFIG if set and non-empty, else kDefaultConfigPath.
std::string config_path_from_env();

/// Parses INI text; an error names the first malformed line or bad value.
Result<NodeConfig> parse_node_config(std::string_view text);

/// Loads `path`, refusing files (and directories) not owned by root or writable by
/// group/others. A missing file gives the defaults (an error with `must_exist`). Never
/// fails: a file that cannot be used sets LoadedConfig::error and gives the defaults.
LoadedConfig load_node_config(const std::string& path, bool must_exist = false);

/// load_node_config() of config_path_from_env(); a file ARCH_CONFIG names must exist.
LoadedConfig load_node_config_from_env();

/// Returns `text` with `key = value` set in `[section]`: an existing key line is replaced,
/// else the key is added at the end of the section, else the section is appended.
/// Comments and every other line are kept.
std::string set_config_value(std::string_view text, std::string_view section, std::string_view key,
                             std::string_view value);

/// A complete node config with every key at its default and a comment on each
/// (`archctl config init` writes it). parse_node_config() of it gives NodeConfig{}.
std::string default_node_config_text();

/// Checks that the file open on `fd` (named `path`) is owned by root and not
/// group/world-writable, and that its directory is too.
Result<void> check_trusted_file(int fd, const std::string& path);

}  // namespace arch
