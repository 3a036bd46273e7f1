// arch-runc-restore: arch-runc hands it the engine's `create` of an ARCH-enabled container
// that has a committed checkpoint (same argv). It restores the container from the
// checkpoint; if that fails, the checkpoint is moved aside and the container is created
// fresh (or the create fails, with ARCH_RESTORE_FAILURE=fail or [restore] on_failure = fail).
#include <cstdio>
#include <span>

#include "node_config.h"
#include "oci_spec.h"
#include "restore.h"
#include "runc_command_line.h"
#include "runtime_exec.h"
#include "runtime_path.h"

int main(int argc, char** argv) {
  using namespace arch;
  std::span<const char* const> args(argv, static_cast<std::size_t>(argc));
  RuncCommandLine cl = parse_runc_command_line(args);
  LoadedConfig loaded = load_node_config(config_path_from_env());
  RuncLog log = log_for_call(cl, loaded.config);
  auto runtime = resolve_runtime(loaded.config, "/proc/self/exe");
  if (!runtime) {
    log.error(describe_call(cl) + ": " + runtime.error().message());
    std::fprintf(stderr, "%s: %s\n", describe_call(cl).c_str(), runtime.error().message().c_str());
    return 1;
  }
  if (cl.subcommand != Subcommand::kCreate || !cl.exact) {
    return exec_runtime(*runtime, argv, log, cl);  // Not ours: behave like runc.
  }
  std::string bundle = absolute_bundle(cl);
  auto env = read_arch_env(bundle);
  auto rec = env ? make_container_record(cl, bundle, *env, loaded.config)
                 : Result<ContainerRecord>(std::unexpected(env.error()));
  bool rootfs_clean = true;
  Result<RestoreOutcome> restored =
      rec ? restore_container(cl, *rec, loaded.config, *runtime, &rootfs_clean)
          : Result<RestoreOutcome>(std::unexpected(rec.error()));
  if (restored) {
    log.info(describe_call(cl) + ": restored from " + restored->checkpoint + " in " +
             std::to_string(static_cast<long>(restored->ms)) + " ms");
    return 0;
  }
  // A rootfs that could not be put back must not run as if it were fresh.
  bool fail_create = !rootfs_clean || loaded.config.restore_failure_fails ||
                     (env && env->get("ARCH_RESTORE_FAILURE") == "fail");
  std::string msg = describe_call(cl) + ": " + restored.error().message();
  if (fail_create) {
    log.error(msg + "; failing the create (restore failure policy: fail)");
    std::fprintf(stderr, "%s\n", msg.c_str());
    return 1;
  }
  log.error(msg + "; starting the container fresh");
  return exec_runtime(*runtime, argv, log, cl);
}
