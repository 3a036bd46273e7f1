// archd: the ARCH node agent. `archd [--config PATH] [--foreground]`; always runs in the
// foreground (systemd Type=simple). Signals are blocked in every thread and taken here.
#include <fmt/core.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <mutex>
#include <string>
#include <string_view>

#include "agent.h"
#include "api_server.h"
#include "base/file_util.h"
#include "config/node_config.h"
#include "job_routes.h"
#include "jobs.h"
#include "migrate_routes.h"
#include "peer_routes.h"
#include "runtime/runtime_path.h"
#include "version.h"
#include "watchers.h"

namespace {

constexpr const char* kUsage =
    "usage: archd [--config PATH] [--foreground]\n"
    "  The ARCH node agent: drains (finalize on a reclaim notice or `archctl node drain`),\n"
    "  the local API on [agent] socket, metrics on [agent] metrics_address.\n"
    "  --config PATH   node config (default: $ARCH_CONFIG, else /etc/arch/arch.conf)\n"
    "  --foreground    accepted for clarity: archd always stays in the foreground\n";

struct Args {
  std::string config;
  bool explicit_config = false;
};

// Returns the exit status to leave with when the arguments say so (help, version, error).
std::optional<int> parse_args(int argc, char** argv, Args& args) {
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--foreground" || a == "-f") continue;
    if (a == "--help" || a == "-h") return fmt::print("{}", kUsage), 0;
    if (a == "--version") return fmt::print("archd {} ({})\n", arch::kVersion, arch::kGitCommit), 0;
    if (a == "--config" && i + 1 < argc) {
      args.config = argv[++i];
    } else if (a.starts_with("--config=")) {
      args.config = std::string(a.substr(9));
    } else {
      return fmt::print(stderr, "archd: unknown argument '{}'\n{}", a, kUsage), 2;
    }
    args.explicit_config = true;
  }
  return std::nullopt;
}

arch::agent::Logger stderr_logger(arch::LogLevel threshold) {
  return [threshold](arch::LogLevel level, const std::string& msg) {
    if (level > threshold) return;
    static std::mutex mutex;
    std::lock_guard lock(mutex);
    fmt::print(stderr, "archd: {}: {}\n", arch::log_level_name(level), msg);
  };
}

sigset_t handled_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGPIPE}) sigaddset(&set, s);
  return set;
}

// Waits for SIGTERM or SIGINT (SIGHUP is logged and ignored; SIGPIPE stays blocked).
int wait_for_stop(const sigset_t& set, const arch::agent::Logger& log) {
  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    if (sig == SIGTERM || sig == SIGINT) return sig;
    if (sig == SIGHUP) log(arch::LogLevel::kInfo, "SIGHUP ignored (restart archd to reload)");
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace arch;
  Args args;
  if (auto done = parse_args(argc, argv, args)) return *done;
  ::umask(077);
  sigset_t signals = handled_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // before any thread exists

  if (!args.explicit_config) {
    args.config = config_path_from_env();
    const char* env = std::getenv("ARCH_CONFIG");
    args.explicit_config = env != nullptr && *env != '\0';
  }
  LoadedConfig loaded = load_node_config(args.config, args.explicit_config);
  auto log = stderr_logger(loaded.config.log_level);
  for (const auto& w : loaded.warnings) log(LogLevel::kWarn, w);
  if (!loaded.error.empty()) {
    // Never run a drain or a restore on a policy that could not be read.
    log(LogLevel::kError, loaded.error + ": not starting (check it with `archctl config check`)");
    return 2;
  }
  auto runc = resolve_runtime(loaded.config, "/proc/self/exe");
  if (!runc) return log(LogLevel::kError, runc.error().message()), 1;

  agent::Agent agent(loaded.config, *runc, log);
  // Process jobs: archd becomes a child subreaper; jobs and logs beside the state file. A
  // drain checkpoints them too (started before the agent, which may resume a drain).
  agent::JobManager jobs(loaded.config, dirname_of(loaded.config.agent.state_file) + "/jobs", log);
  agent.set_drain_hook([&jobs](double deadline) { return jobs.checkpoint_all(deadline); });
  if (auto started = jobs.start(); !started) {
    return log(LogLevel::kError, "jobs: " + started.error().message()), 1;
  }
  if (auto started = agent.start(); !started) {
    jobs.stop();
    return log(LogLevel::kError, started.error().message()), 1;
  }
  jobs.set_event_sink([&agent](agent::Event e) { agent.record_event(std::move(e)); });
  agent::ApiServer api(agent);
  agent::register_job_routes(api.routes(), jobs);
  agent::Migrations migrations(agent, *runc);
  migrations.register_routes(api.routes());
  agent::MetricsServer metrics(agent);
  const auto& a = loaded.config.agent;
  agent::PeerListener peers(loaded.config, *runc, log);
  // Page exports of migrations an earlier archd left in post-copy: served again before the
  // peer listener opens (a destination's page server asking for them meanwhile retries).
  agent::ExportWatcher exports(loaded.config, log);
  exports.start();
  auto listening = api.start(a.socket);
  if (listening && !a.metrics_address.empty()) listening = metrics.start(a.metrics_address);
  if (listening) listening = peers.start();
  if (!listening) {
    log(LogLevel::kError, listening.error().message());
    exports.stop();
    peers.stop();
    api.shutdown();
    jobs.stop();
    agent.stop();
    return 1;
  }
  log(LogLevel::kInfo, fmt::format("archd {} ready: api on {}, metrics on {}", kVersion, a.socket,
                                   a.metrics_address.empty() ? "(off)" : a.metrics_address));

  agent::NoticeWatcher notices(agent, loaded.config, log);
  agent::ExitWatcher exits(loaded.config, log);
  notices.start();
  exits.start();
  int sig = wait_for_stop(signals, log);
  log(LogLevel::kInfo, fmt::format("signal {}: stopping", sig));
  notices.stop();
  exits.stop();
  exports.stop();  // before the listener cuts the page servers' connections
  peers.stop();
  api.shutdown();
  metrics.stop();
  jobs.stop();
  agent.stop();
  bool failed = api.failed() || metrics.failed();
  log(LogLevel::kInfo, "stopped");
  return failed ? 1 : 0;
}
