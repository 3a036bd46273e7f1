// Shim: parse the runc command line, decide what ARCH does with the call, and hand it to
// the real runc with execve and the identical argv.
//
// The pass-through path is the hot path (containerd makes 5+ runtime calls per
// container): one parse, one small config read, at most one log write, and the exec. No
// threads, nothing printed to stdout. What ARCH changes:
//   create/run of an ARCH-enabled container: recorded in the registry (a detached watcher
//     drops the record again if runc ends without keeping the container); a create with a
//     committed checkpoint is handed to arch-runc-helper (which carries the heavy
//     dependencies, so this binary stays small and static);
//   kill ID 15 of an ARCH-enabled container on a draining node (or with
//     ARCH_CHECKPOINT_ON_STOP=1): checkpointed by arch-runc-helper instead of signalled;
//   start of a container that was restored: answered here (runc restore already started it);
//   delete: the registry record is dropped; a finished job's (exit 0) checkpoints are
//     removed by arch-runc-helper;
//   shared mode (ARCH_SHAREDFS_HOST_PATH + ARCH_WORKDIR_CONTAINER_PATH): the spec gets the
//     job's work directory (bound into ARCH's state dir) before runc sees it;
//   a store or share outside the node's allowed roots: the create fails with the reason
//     (or, with [store] on_disallowed = unmanaged, runs without ARCH, with a warning).
#include "shim.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <span>
#include <string>

#include "base/file_util.h"
#include "base/process.h"
#include "config/node_config.h"
#include "managed/container_record.h"
#include "managed/container_registry.h"
#include "managed/exit_status.h"
#include "managed/shared_mode.h"
#include "managed/store_layout.h"
#include "runtime/oci_spec.h"
#include "runtime/runc_command_line.h"
#include "runtime/runc_log.h"
#include "runtime/runtime_exec.h"
#include "runtime/runtime_path.h"

namespace arch {
namespace {

// How long a delete waits for archd to record the exit of a container with checkpoints.
constexpr int kExitStatusWaitMs = 2000;

// arch-runc-helper beside this binary (the restore and checkpoint-on-stop paths, with the
// heavy dependencies), vetted like runc (root-owned, not writable by others).
Result<std::string> helper_path() {
  char self[4096];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return fail_errno("readlink /proc/self/exe");
  self[n] = '\0';
  std::string path = dirname_of(self) + "/arch-runc-helper";
  if (auto ok = check_runtime_binary(path, "/proc/self/exe"); !ok)
    return std::unexpected(ok.error());
  return path;
}

// Ends a create/run that ARCH cannot prepare as the container asked: logged and on stderr
// (the engine shows runc's stderr to the user).
int refuse_create(const RuncCommandLine& cl, const RuncLog& log, const std::string& why) {
  std::string msg = describe_call(cl) + ": " + why;
  log.error(msg + "; refusing to create the container");
  std::fprintf(stderr, "%s\n", msg.c_str());
  return 1;
}

// The record of a create/run is written before runc runs, and only a `delete` through
// arch-runc removes it. runc may never keep the container (it refuses the create, or a
// foreground `run` ends and runc deletes the container itself): a watcher waits for this
// process (runc, or arch-runc-helper, after the exec) to end, and when runc then has no
// state for the container and the record is still the one written here, drops the record
// and shared mode's bind of the work directory.
void drop_record_unless_runc_keeps(const ContainerRecord& rec, const NodeConfig& config,
                                   const RuncCommandLine& cl, const RuncLog& log) {
  ContainerRegistry registry(config.state_dir);
  std::string path = registry.path_for(rec.runc_root, rec.id, ".json");
  struct stat written {};
  if (::stat(path.c_str(), &written) != 0) return;
  std::string runc_state = rec.runc_root + "/" + rec.id;
  auto dropped = [&] {
    struct stat st {};
    if (::lstat(runc_state.c_str(), &st) == 0) return;  // runc keeps it: delete cleans up.
    if (::stat(path.c_str(), &st) != 0 || st.st_ino != written.st_ino) return;  // Replaced.
    if (!rec.workdir.empty()) (void)release_workdir_mount(config.state_dir, rec.runc_root, rec.id);
    registry.forget(rec.runc_root, rec.id);
    log.info(describe_call(cl) + ": runc kept no container " + rec.id +
             " (refused, or a foreground run that ended): its ARCH record is dropped");
  };
  if (auto ok = watch_exit(::getpid(), dropped); !ok) {
    log.warn(describe_call(cl) +
             ": cannot watch for runc dropping the container: " + ok.error().message());
  }
}

// create/run: the one place arch-runc reads config.json. A problem with ARCH's bookkeeping
// is logged and the call goes to runc unchanged: a container never fails to start because
// of it. Shared mode is different: the job asked for its work directory on the shared
// filesystem, and running it without (writing its output to a local layer that the next
// node never sees) would lose work, so a failure there fails the create, with the reason.
// Returns the exit status when the call ends here, std::nullopt to pass it through.
std::optional<int> handle_new_container(const RuncCommandLine& cl, const NodeConfig& config,
                                        const RuncLog& log, const char* const* argv) {
  std::string bundle = absolute_bundle(cl);
  auto env = read_arch_env(bundle);
  if (!env) {
    log.error(describe_call(cl) +
              ": cannot read the container spec, passing through: " + env.error().message());
    return std::nullopt;
  }
  if (!env->enabled()) return std::nullopt;
  std::string id(cl.container_id());
  std::optional<SharedWorkdir> workdir;
  auto rec = make_container_record(cl, bundle, *env, config, &workdir);
  if (!rec && rec.error().kind() == ErrorKind::kPermission) {
    // The container named a store outside the node's allowed roots (or one they refuse).
    if (!config.disallowed_unmanaged) return refuse_create(cl, log, rec.error().message());
    log.warn(describe_call(cl) + ": ARCH-enabled container " + id +
             " runs unmanaged ([store] on_disallowed = unmanaged): " + rec.error().message());
    return std::nullopt;
  }
  if (!rec) {
    if (env->get("ARCH_SHAREDFS_HOST_PATH").empty() && env->get("ARCH_SHAREDFS").empty()) {
      log.error(describe_call(cl) + ": ARCH-enabled container " + id +
                " not managed: " + rec.error().message());
      return std::nullopt;
    }
    return refuse_create(cl, log, "shared mode: " + rec.error().message());
  }
  if (workdir) {
    auto rootfs = read_root_path(bundle);
    auto ok = rootfs ? apply_shared_workdir(bundle, *rootfs, *workdir)
                     : Result<void>(std::unexpected(rootfs.error()));
    if (!ok) return refuse_create(cl, log, "shared work directory: " + ok.error().message());
    log.info(describe_call(cl) + ": work directory " + workdir->host + " bound at " +
             workdir->mount + ", mounted at " + workdir->container);
  }
  // A new container with an old id must not inherit its predecessor's exit status.
  (void)forget_exit_status(exit_status_dir(config), rec->ns, rec->id);
  if (auto ok = ContainerRegistry(config.state_dir).record(*rec); !ok) {
    log.error(describe_call(cl) + ": ARCH-enabled container " + id +
              ": cannot record it in the registry: " + ok.error().message());
  } else {
    drop_record_unless_runc_keeps(*rec, config, cl, log);
  }
  std::string where = " (namespace " + rec->ns + ", owner " + rec->owner + ", key " + rec->key +
                      " from " + rec->key_source + ")";
  if (cl.subcommand != Subcommand::kCreate ||
      !has_committed_checkpoint(rec->store_root, rec->store, rec->owner, rec->key)) {
    log.info(describe_call(cl) + ": ARCH-enabled container " + id + where + ": no checkpoint in " +
             rec->store + ", starting fresh");
    return std::nullopt;
  }
  auto helper = helper_path();
  if (!helper) {
    log.error(describe_call(cl) + ": ARCH-enabled container " + id +
              " has a checkpoint but the restore helper is unusable, starting fresh: " +
              helper.error().message());
    return std::nullopt;
  }
  log.info(describe_call(cl) + ": ARCH-enabled container " + id + where + ": checkpoint found in " +
           rec->store + ", restoring");
  ::execv(helper->c_str(), const_cast<char* const*>(argv));
  log.error(describe_call(cl) + ": exec " + *helper + ": " + std::strerror(errno) +
            ", starting fresh");
  return std::nullopt;
}

// delete of an ARCH-enabled container whose main process exited 0: the job has finished,
// so its checkpoints go (arch-runc-helper removes them, then runs the delete). Any other
// ending (non-zero, a signal, an ARCH checkpoint, which ends it with SIGKILL) or an unknown
// status keeps them. The exit status comes from archd's event watcher, which may record it
// a moment after the engine sees the exit: a container with a checkpoint waits briefly.
void handle_delete(const RuncCommandLine& cl, const NodeConfig& config, const RuncLog& log,
                   const char* const* argv) {
  ContainerRegistry registry(config.state_dir);
  std::string root(cl.effective_root()), id(cl.container_id());
  auto rec = registry.find(root, id);
  if (!rec) {
    // Not ARCH-enabled (no record: nothing to do), or a record that cannot be read: drop it.
    if (rec.error().code() != ENOENT) registry.forget(root, id);
    return;
  }
  if (!rec->workdir.empty()) {
    // Shared mode's bind of the work directory (the container holds its own copy).
    if (auto ok = release_workdir_mount(config.state_dir, root, id); !ok) {
      log.warn(describe_call(cl) + ": work directory bind: " + ok.error().message());
    }
  }
  bool has_checkpoint = has_committed_checkpoint(rec->store_root, rec->store, rec->owner, rec->key);
  std::optional<int> status;
  if (has_checkpoint) {
    // Only archd records exits: without it (no socket) the status stays unknown.
    bool agent_up = ::access(config.agent.socket.c_str(), F_OK) == 0;
    status = wait_for_exit_status(exit_status_dir(config), rec->ns, rec->id,
                                  agent_up ? kExitStatusWaitMs : 0);
  }
  if (!has_checkpoint || status != 0) {
    if (has_checkpoint) {
      log.info(describe_call(cl) + ": checkpoints of key " + rec->key + " kept (exit status " +
               (status ? std::to_string(*status) : std::string("unknown")) + ")");
    }
    registry.forget(root, id);
    return;
  }
  auto helper = helper_path();
  if (!helper) {
    log.error(describe_call(cl) + ": finished job's checkpoints kept, the helper is unusable: " +
              helper.error().message());
    registry.forget(root, id);
    return;
  }
  ::execv(helper->c_str(), const_cast<char* const*>(argv));
  log.error(describe_call(cl) + ": exec " + *helper + ": " + std::strerror(errno) +
            "; finished job's checkpoints kept");
  registry.forget(root, id);
}

// runc kill's signal argument names SIGTERM: "15", "TERM" or "SIGTERM" (runc's default).
bool is_sigterm(const RuncCommandLine& cl) {
  if (cl.args.size() < 2) return true;
  std::string_view sig = cl.args[1];
  return sig == "15" || sig == "TERM" || sig == "SIGTERM";
}

// kill ID 15 of an ARCH-enabled container, on a draining node or for a container with
// ARCH_CHECKPOINT_ON_STOP=1: the engine is stopping it (docker stop, an ECS task stop, a
// kubelet eviction), so it is checkpointed instead (by arch-runc-helper), and the stop
// completes when the checkpoint has ended it. Every other kill passes through.
void handle_kill(const RuncCommandLine& cl, const NodeConfig& config, const RuncLog& log,
                 const char* const* argv) {
  if (cl.flag_set("all") || !is_sigterm(cl)) return;
  std::string root(cl.effective_root()), id(cl.container_id());
  auto rec = ContainerRegistry(config.state_dir).find(root, id);
  if (!rec) return;  // Not ARCH-enabled (or not created through arch-runc).
  bool draining = ::access(draining_flag(config).c_str(), F_OK) == 0;
  if (!draining && !rec->checkpoint_on_stop) return;
  auto helper = helper_path();
  if (!helper) {
    log.error(describe_call(cl) +
              ": checkpoint on stop impossible, delivering SIGTERM: " + helper.error().message());
    return;
  }
  log.info(describe_call(cl) + ": SIGTERM to ARCH-enabled container " + id + " " +
           (draining ? "on a draining node" : "with ARCH_CHECKPOINT_ON_STOP") +
           ": checkpointing instead");
  ::execv(helper->c_str(), const_cast<char* const*>(argv));
  log.error(describe_call(cl) + ": exec " + *helper + ": " + std::strerror(errno) +
            ", delivering SIGTERM");
}

}  // namespace

int run_shim(int argc, const char* const* argv) {
  std::span<const char* const> args(argv, static_cast<std::size_t>(argc));
  RuncCommandLine cl = parse_runc_command_line(args);
  LoadedConfig loaded = load_node_config_from_env();
  RuncLog log = log_for_call(cl, loaded.config);
  for (const auto& warning : loaded.warnings) log.warn("arch-runc: " + warning);
  // A config that cannot be read is no policy: every call goes to runc unchanged, and the
  // reason is in the log (archd and archctl refuse to act on it, so the operator hears).
  const bool managed = loaded.error.empty();
  if (!managed) log.error("arch-runc: " + loaded.error + "; passing the call through to runc");

  auto runtime = resolve_runtime(loaded.config, "/proc/self/exe");
  if (runtime && is_runtime_loop()) {
    runtime = std::unexpected(Error("[runtime] runc = " + *runtime +
                                    " leads back to arch-runc (a copy of arch-runc installed "
                                    "as runc, or a wrapper that calls it)"));
  }
  if (!runtime) {
    std::string msg = describe_call(cl) + ": " + runtime.error().message();
    log.error(msg);
    std::fprintf(stderr, "%s\n", msg.c_str());
    return 1;
  }

  if (managed && cl.exact && !cl.help) {
    if (cl.subcommand == Subcommand::kCreate || cl.subcommand == Subcommand::kRun) {
      if (auto status = handle_new_container(cl, loaded.config, log, argv)) return *status;
    } else if (cl.subcommand == Subcommand::kDelete) {
      handle_delete(cl, loaded.config, log, argv);
    } else if (cl.subcommand == Subcommand::kKill) {
      handle_kill(cl, loaded.config, log, argv);
    } else if (cl.subcommand == Subcommand::kStart) {
      ContainerRegistry registry(loaded.config.state_dir);
      std::string root(cl.effective_root()), id(cl.container_id());
      if (registry.take_restored(root, id)) {
        // runc restore --detach already started the processes: the engine's start is done.
        log.info(describe_call(cl) + ": restored container is running; start answered by ARCH");
        return 0;
      }
    }
  }
  if (log.enabled(LogLevel::kDebug)) {
    log.debug(describe_call(cl) + ": pass-through to " + *runtime +
              (cl.exact ? std::string() : " (not understood: " + cl.problem + ")"));
  }
  return exec_runtime(*runtime, argv, log, cl);
}

}  // namespace arch
