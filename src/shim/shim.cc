// Shim: parse the runc command line, decide what ARCH does with the call, and hand it to
// the real runc with execve and the identical argv.
//
// The pass-through path is the hot path (containerd makes 5+ runtime calls per
// container): one parse, one small config read, at most one log write, and execv. No
// threads, no allocation-heavy work, nothing printed to stdout.
#include "shim.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "node_config.h"
#include "oci_spec.h"
#include "runc_command_line.h"
#include "runc_log.h"
#include "runtime_path.h"
#include "version.h"

namespace arch {
namespace {

// ARCH's messages go where runc's own go when the caller chose a log file (containerd:
// `--log <bundle>/log.json --log-format json`), else to the node's ARCH log.
RuncLog make_log(const RuncCommandLine& cl, const NodeConfig& config) {
  if (!cl.log.empty()) {
    return RuncLog(std::string(cl.log), cl.json_log() ? LogFormat::kJson : LogFormat::kText,
                   config.log_level, 0644);
  }
  return RuncLog(config.log_file, LogFormat::kJson, config.log_level, 0600);
}

std::string describe(const RuncCommandLine& cl) {
  std::string what = "arch-runc: ";
  what += cl.subcommand_word.empty() ? std::string_view("(no subcommand)") : cl.subcommand_word;
  if (auto id = cl.container_id(); !id.empty()) {
    what += ' ';
    what += id;
  }
  return what;
}

// create/run: the one place this issue reads config.json, to recognise ARCH-enabled
// containers. A malformed spec is logged and the call still goes to runc, which reports
// the problem in its own words.
void inspect_new_container(const RuncCommandLine& cl, const RuncLog& log) {
  std::string bundle(cl.flag("bundle").value_or(""));
  auto env = read_arch_env(bundle);
  if (!env) {
    log.error(describe(cl) +
              ": cannot read the container spec, passing through: " + env.error().message());
    return;
  }
  if (env->enabled()) {
    log.info(describe(cl) + ": ARCH-enabled container " + std::string(cl.container_id()) +
             " recognised (checkpoint/restore not active in this version; passing through)");
  }
}

// Set in runc's environment by arch-runc. Finding it set on entry means the configured
// runc led back to arch-runc (a copy of it installed as runc, or a wrapper that calls it):
// without this check such a node would exec in a loop forever. runc never hands its own
// environment to container processes (they get the spec's), so nothing else sees it.
constexpr const char* kHopVariable = "_ARCH_RUNC_HOP";

[[noreturn]] void exec_runtime(const std::string& runtime, const char* const* argv,
                               const RuncLog& log, const RuncCommandLine& cl) {
  std::vector<const char*> envp;
  for (char** e = environ; *e != nullptr; ++e) envp.push_back(*e);
  std::string hop = std::string(kHopVariable) + "=1";
  envp.push_back(hop.c_str());
  envp.push_back(nullptr);
  // argv is handed over untouched, argv[0] included; only the binary changes.
  ::execve(runtime.c_str(), const_cast<char* const*>(argv), const_cast<char* const*>(envp.data()));
  int err = errno;
  std::string msg = describe(cl) + ": exec " + runtime + ": " + std::strerror(err);
  log.error(msg);
  std::fprintf(stderr, "%s\n", msg.c_str());
  std::_Exit(err == ENOENT ? 127 : 126);
}

}  // namespace

int run_shim(int argc, const char* const* argv) {
  std::span<const char* const> args(argv, static_cast<std::size_t>(argc));
  RuncCommandLine cl = parse_runc_command_line(args);
  LoadedConfig loaded = load_node_config(config_path_from_env());
  RuncLog log = make_log(cl, loaded.config);
  for (const auto& warning : loaded.warnings) log.warn("arch-runc: " + warning);

  auto runtime = resolve_runtime(loaded.config, "/proc/self/exe");
  if (runtime && std::getenv(kHopVariable) != nullptr) {
    runtime = std::unexpected(Error("[runtime] runc = " + *runtime +
                                    " leads back to arch-runc (a copy of arch-runc installed "
                                    "as runc, or a wrapper that calls it)"));
  }
  if (!runtime) {
    std::string msg = describe(cl) + ": " + runtime.error().message();
    log.error(msg);
    std::fprintf(stderr, "%s\n", msg.c_str());
    return 1;
  }

  if (cl.version && cl.subcommand == Subcommand::kNone) {
    // Our line first: tools that parse `runc --version` (dockerd) read runc's lines last.
    std::printf("arch-runc version %s (commit %s)\n", kVersion, kGitCommit);
    std::fflush(stdout);
  }
  if (cl.exact && !cl.help &&
      (cl.subcommand == Subcommand::kCreate || cl.subcommand == Subcommand::kRun)) {
    inspect_new_container(cl, log);
  }
  if (log.enabled(LogLevel::kDebug)) {
    log.debug(describe(cl) + ": pass-through to " + *runtime +
              (cl.exact ? std::string() : " (not understood: " + cl.problem + ")"));
  }
  exec_runtime(*runtime, argv, log, cl);
}

}  // namespace arch
