// archctl version: ARCH's version and the runtime it hands calls to.
#include <fmt/core.h>
#include <unistd.h>

#include "commands.h"
#include "config/node_config.h"
#include "exit_codes.h"
#include "criu/criu_report.h"
#include "runtime/runtime_path.h"
#include "version.h"

namespace arch::cli {

Handler add_version_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("version", "Show ARCH's version and the runc it uses");
  (void)cmd;
  return []() -> int {
    fmt::print("archctl version {} (commit {})\n", kVersion, kGitCommit);
    LoadedConfig loaded = load_node_config_from_env();
    fmt::print("config:  {}{}\n", loaded.path, loaded.from_file ? "" : " (not used; defaults)");
    for (const auto& w : loaded.warnings) fmt::print("warning: {}\n", w);
    if (!loaded.error.empty()) fmt::print("error:   {}\n", loaded.error);
    auto runtime = resolve_runtime(loaded.config, "/proc/self/exe");
    fmt::print("runc:    {}\n", runtime ? *runtime : "unusable: " + runtime.error().message());
    // CRIU's path and version, the functional trial setup recorded (per socket kind) and
    // the `criu check --feature` probes.
    fmt::print("{}", criu_report_text(criu_report(loaded.config)));
    if (!loaded.error.empty()) return kExitUsage;
    return runtime ? 0 : 1;
  };
}

}  // namespace arch::cli
