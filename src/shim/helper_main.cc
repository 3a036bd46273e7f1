// arch-runc-helper: the runtime calls arch-runc hands over because they need ARCH's heavy
// machinery (libarchive, OpenSSL, the store). Same argv as the engine gave arch-runc.
//   create of an ARCH-enabled container with a committed checkpoint: restore it. If that
//     fails the checkpoint is moved aside and the container is created fresh (or the create
//     fails, with ARCH_RESTORE_FAILURE=fail or [restore] on_failure = fail, or when the new
//     rootfs could not be put back).
//   kill ID 15 of an ARCH-enabled container being stopped on a draining node (or with
//     ARCH_CHECKPOINT_ON_STOP=1): checkpoint it; the checkpoint ends it, so the engine's
//     stop completes. If the checkpoint fails, the SIGTERM is delivered as asked.
//   delete of a container whose main process exited 0: remove its checkpoints, then delete.
// Anything else is handed to runc unchanged.
#include <chrono>
#include <cstdio>
#include <span>

#include "base/clock.h"
#include "config/node_config.h"
#include "container/checkpoint.h"
#include "container/migrated_pages.h"
#include "container/restore.h"
#include "managed/activity_log.h"
#include "managed/container_record.h"
#include "managed/container_registry.h"
#include "peer/migrate.h"
#include "runtime/oci_spec.h"
#include "runtime/runc_command_line.h"
#include "runtime/runtime_exec.h"
#include "runtime/runtime_path.h"
#include "store/checkpoint_store.h"

namespace arch {
namespace {

// Records a result in the node's activity log, where archd counts it. Best effort: a record
// that cannot be written is logged, never a reason to fail the engine's call.
void record(const NodeConfig& config, const RuncLog& log, ActivityRecord r) {
  if (auto ok = append_activity(config.state_dir, std::move(r)); !ok) {
    log.warn("activity log: " + ok.error().message());
  }
}

int restore_on_create(const RuncCommandLine& cl, const NodeConfig& config, const RuncLog& log,
                      const std::string& runtime, const char* const* argv) {
  std::string bundle = absolute_bundle(cl);
  auto env = read_arch_env(bundle);
  auto rec = env ? make_container_record(cl, bundle, *env, config)
                 : Result<ContainerRecord>(std::unexpected(env.error()));
  bool rootfs_clean = true;
  auto t0 = std::chrono::steady_clock::now();
  Result<RestoreOutcome> restored =
      rec ? restore_container(cl, *rec, config, runtime, &rootfs_clean)
          : Result<RestoreOutcome>(std::unexpected(rec.error()));
  if (rec) {
    double ms = restored ? restored->ms : ms_since(t0);
    record(config, log,
           {.what = "restore",
            .source = "create",
            .outcome = restored ? "ok" : "failed",
            .ns = rec->ns,
            .id = rec->id,
            .key = rec->key,
            .ms = ms,
            .bytes = restored ? restored->bytes : 0,
            .detail = restored ? restored->checkpoint : restored.error().message()});
  }
  if (restored) {
    (void)ContainerRegistry(config.state_dir)
        .record_restore(rec->runc_root, rec->id,
                        {restored->checkpoint, restored->ms, restored->bytes});
    for (const auto& skipped : restored->skipped) {
      log.warn(describe_call(cl) + ": passed over a newer checkpoint: " + skipped);
    }
    if (!restored->lazy_failure.empty()) {
      log.warn(describe_call(cl) +
               ": lazy restore fell back to a plain one: " + restored->lazy_failure);
    }
    if (!restored->network.empty()) log.info(describe_call(cl) + ": " + restored->network);
    if (!restored->workdir.empty()) log.info(describe_call(cl) + ": " + restored->workdir);
    log.info(describe_call(cl) + ": restored from " + restored->checkpoint + " in " +
             std::to_string(static_cast<long>(restored->ms)) + " ms" +
             (restored->lazy_served ? " (lazy pages: memory is served on demand by ARCH's page "
                                      "server, each chunk checked against the seal as served)"
              : restored->lazy      ? " (lazy pages: memory is served on demand)"
                                    : ""));
    return 0;
  }
  // A rootfs that could not be put back must not run as if it were fresh.
  bool fail_create = !rootfs_clean || config.restore_failure_fails ||
                     (env && env->get("ARCH_RESTORE_FAILURE") == "fail");
  std::string msg = describe_call(cl) + ": " + restored.error().message();
  if (fail_create) {
    log.error(msg + "; failing the create (restore failure policy: fail)");
    std::fprintf(stderr, "%s\n", msg.c_str());
    return 1;
  }
  log.error(msg + "; starting the container fresh");
  return exec_runtime(runtime, argv, log, cl);
}

int checkpoint_on_stop(const RuncCommandLine& cl, const NodeConfig& config, const RuncLog& log,
                       const std::string& runtime, const char* const* argv) {
  std::string root(cl.effective_root()), id(cl.container_id());
  auto rec = ContainerRegistry(config.state_dir).find(root, id);
  auto t0 = std::chrono::steady_clock::now();
  Result<CheckpointOutcome> done = rec ? checkpoint_container(*rec, config, runtime)
                                       : Result<CheckpointOutcome>(std::unexpected(rec.error()));
  if (rec) {
    record(config, log,
           {.what = "checkpoint",
            .source = "on_stop",
            .outcome = done ? "ok" : "failed",
            .ns = rec->ns,
            .id = rec->id,
            .key = rec->key,
            .ms = ms_since(t0),
            .bytes = done ? done->bytes : 0,
            .detail = done ? done->path : done.error().message()});
  }
  if (done) {
    log.info(describe_call(cl) + ": checkpointed on stop to " + done->path + " in " +
             std::to_string(static_cast<long>(done->timings_ms["total"])) + " ms");
    return 0;
  }
  log.error(describe_call(cl) +
            ": checkpoint on stop failed, delivering SIGTERM: " + done.error().message());
  return exec_runtime(runtime, argv, log, cl);
}

// delete of a container whose main process exited 0 (arch-runc checked): the job is done,
// its checkpoints are removed (the work directory, its output, stays). Then the delete
// itself goes to runc as asked.
int remove_finished(const RuncCommandLine& cl, const NodeConfig& config, const RuncLog& log,
                    const std::string& runtime, const char* const* argv) {
  ContainerRegistry registry(config.state_dir);
  std::string root(cl.effective_root()), id(cl.container_id());
  if (auto rec = registry.find(root, id)) {
    CheckpointStore store(rec->store, config.keep, rec->store_root);
    auto lock = store.lock(rec->owner, rec->key, std::chrono::seconds(10));
    auto removed = lock ? store.remove(rec->owner, rec->key, *lock)
                        : Result<void>(std::unexpected(lock.error()));
    if (removed) {
      log.info(describe_call(cl) + ": job finished (exit 0): checkpoints of " + rec->owner + "/" +
               rec->key + " removed from " + rec->store +
               (rec->workdir.empty() ? std::string() : ", work directory kept"));
    } else {
      log.error(describe_call(cl) + ": job finished (exit 0) but its checkpoints in " + rec->store +
                " could not be removed: " + removed.error().message());
    }
  }
  registry.forget(root, id);
  return exec_runtime(runtime, argv, log, cl);
}

}  // namespace
}  // namespace arch

int main(int argc, char** argv) {
  using namespace arch;
  std::span<const char* const> args(argv, static_cast<std::size_t>(argc));
  RuncCommandLine cl = parse_runc_command_line(args);
  // A migrated checkpoint's pages come from its source node (peer/migrate.h).
  set_remote_pages_dialer(dial_remote_pages);
  LoadedConfig loaded = load_node_config_from_env();
  RuncLog log = log_for_call(cl, loaded.config);
  if (!loaded.error.empty()) {
    // arch-runc passes calls through on such a config; reaching here means it changed
    // between the two reads. Act on no policy: fail the call with the reason.
    log.error(describe_call(cl) + ": " + loaded.error);
    std::fprintf(stderr, "%s: %s\n", describe_call(cl).c_str(), loaded.error.c_str());
    return 1;
  }
  auto runtime = resolve_runtime(loaded.config, "/proc/self/exe");
  if (!runtime) {
    log.error(describe_call(cl) + ": " + runtime.error().message());
    std::fprintf(stderr, "%s: %s\n", describe_call(cl).c_str(), runtime.error().message().c_str());
    return 1;
  }
  if (cl.exact && cl.subcommand == Subcommand::kCreate) {
    return restore_on_create(cl, loaded.config, log, *runtime, argv);
  }
  if (cl.exact && cl.subcommand == Subcommand::kKill) {
    return checkpoint_on_stop(cl, loaded.config, log, *runtime, argv);
  }
  if (cl.exact && cl.subcommand == Subcommand::kDelete) {
    return remove_finished(cl, loaded.config, log, *runtime, argv);
  }
  return exec_runtime(*runtime, argv, log, cl);  // Not ours: behave like runc.
}
