// exit_watch: a test driver for ContainerdEventWatcher. Follows containerd's task exits and
// records each init exit with record_exit_status until SIGTERM or SIGINT.
//
//   exit_watch --address SOCK --dir DIR [--ready FILE]
//
// Prints one line per event on stdout ("exit <ns> <id> <exec id> <pid> <status>
// <recorded|ignored>") and one per connection change on stderr. FILE is created each time a
// subscription is established (tests wait for it). Exits 0 after a signal.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <thread>

#include "base/file_util.h"
#include "managed/exit_status.h"
#include "node/containerd_events.h"

namespace {

/// Blocks SIGTERM and SIGINT in every thread; a dedicated thread takes them with sigwait.
sigset_t block_stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

void on_exit_event(const std::string& dir, const arch::TaskExitEvent& e) {
  auto recorded = arch::record_exit_status(dir, e);
  const char* what = !recorded ? "error" : *recorded ? "recorded" : "ignored";
  std::printf("exit %s %s %s %u %u %s\n", e.ns.c_str(), e.container_id.c_str(), e.exec_id.c_str(),
              e.pid, e.exit_status, what);
  if (!recorded) std::fprintf(stderr, "exit_watch: %s\n", recorded.error().message().c_str());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Record containerd task exit statuses until SIGTERM"};
  std::string address;
  std::string dir;
  std::string ready;
  app.add_option("--address", address, "containerd socket")->required();
  app.add_option("--dir", dir, "exit status directory")->required();
  app.add_option("--ready", ready, "file created once subscribed");
  CLI11_PARSE(app, argc, argv);

  sigset_t signals = block_stop_signals();
  arch::ContainerdEventWatcher watcher(address);
  std::atomic<bool> stop{false};
  watcher.set_state_callback([&](bool connected, const std::string& detail) {
    std::fprintf(stderr, "exit_watch: %s: %s\n", connected ? "connected" : "disconnected",
                 detail.c_str());
    if (connected && !ready.empty()) {
      if (auto ok = arch::write_file_atomic(ready, "", 0644); !ok)
        std::fprintf(stderr, "exit_watch: %s\n", ok.error().message().c_str());
    }
  });
  std::thread signal_thread([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    stop = true;
    watcher.stop();
  });

  auto result = watcher.run([&](const arch::TaskExitEvent& e) { on_exit_event(dir, e); }, stop);
  if (!result) {
    std::fprintf(stderr, "exit_watch: %s\n", result.error().message().c_str());
    pthread_kill(signal_thread.native_handle(), SIGTERM);
    signal_thread.join();
    return 1;
  }
  signal_thread.join();
  std::fprintf(stderr, "exit_watch: stopped (%llu exits seen)\n",
               static_cast<unsigned long long>(watcher.exits_seen()));
  return 0;
}
