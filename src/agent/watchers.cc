// Watchers: the IMDSv2 poll loop, the containerd exit-event loop and the page-export watch
// of archd.
#include "watchers.h"

#include <fmt/core.h>

#include "managed/exit_status.h"
#include "node/containerd_events.h"
#include "node/imds_client.h"
#include "peer/migrate.h"

namespace arch::agent {

NoticeWatcher::NoticeWatcher(Agent& agent, const NodeConfig& config, Logger log)
    : agent_(agent), config_(config), log_(std::move(log)) {}

void NoticeWatcher::start() {
  if (config_.agent.imds_endpoint.empty()) return;
  thread_ = std::thread([this] { loop(); });
}

void NoticeWatcher::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void NoticeWatcher::loop() {
  const auto& a = config_.agent;
  ImdsClient client({a.imds_endpoint, a.imds_token_ttl_seconds, std::chrono::milliseconds(2000)});
  log_(LogLevel::kInfo, fmt::format("watching {} for reclaim notices every {} s", a.imds_endpoint,
                                    a.imds_poll_seconds));
  std::string last_error;
  for (;;) {
    auto notices = client.poll();
    agent_.on_watcher_poll(notices.has_value(), notices ? "" : notices.error().message());
    if (!notices && notices.error().message() != last_error) {
      log_(LogLevel::kWarn, "metadata service: " + notices.error().message());
    }
    last_error = notices ? "" : notices.error().message();
    for (const auto& n : notices ? *notices : std::vector<ImdsNotice>{}) {
      Notice notice;
      notice.kind = n.kind == ImdsNotice::Kind::kSpotInterruption ? Notice::Kind::kSpot
                                                                  : Notice::Kind::kRebalance;
      notice.action = n.action;
      notice.time_text = n.time_text;
      notice.time = n.time;  // The agent derives the deadline (time - safety margin - now).
      agent_.on_notice(notice);
    }
    std::unique_lock lock(mutex_);
    if (wake_.wait_for(lock, std::chrono::seconds(a.imds_poll_seconds),
                       [&] { return stopping_; })) {
      return;
    }
  }
}

ExitWatcher::ExitWatcher(const NodeConfig& config, Logger log)
    : config_(config), log_(std::move(log)) {}

ExitWatcher::~ExitWatcher() {
  stop();
}

void ExitWatcher::start() {
  watcher_ = std::make_unique<ContainerdEventWatcher>(config_.agent.containerd_address);
  watcher_->set_state_callback([this](bool connected, const std::string& detail) {
    log_(connected ? LogLevel::kInfo : LogLevel::kWarn,
         fmt::format("containerd events {}: {}", connected ? "connected" : "lost", detail));
  });
  thread_ = std::thread([this] {
    std::string dir = exit_status_dir(config_);
    auto ended = watcher_->run(
        [&](const TaskExitEvent& e) {
          auto recorded = record_exit_status(dir, e);
          if (!recorded) {
            log_(LogLevel::kError, "record exit of " + e.ns + "/" + e.container_id + ": " +
                                       recorded.error().message());
          } else if (*recorded) {
            ++recorded_;
          }
        },
        stop_);
    if (!ended) log_(LogLevel::kError, "containerd events: " + ended.error().message());
  });
}

void ExitWatcher::stop() {
  stop_ = true;
  if (watcher_) watcher_->stop();
  if (thread_.joinable()) thread_.join();
}

ExportWatcher::ExportWatcher(const NodeConfig& config, Logger log)
    : exports_(std::make_unique<ResumedExports>(config, std::move(log))) {}

ExportWatcher::~ExportWatcher() {
  stop();
}

std::size_t ExportWatcher::start() {
  std::size_t loaded = exports_->resume();
  if (loaded > 0) thread_ = std::thread([this] { loop(); });
  return loaded;
}

void ExportWatcher::stop() {
  page_exports().stop();
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void ExportWatcher::loop() {
  for (;;) {
    exports_->check();
    if (page_exports().reloaded().empty()) return;  // every resumed export finished
    std::unique_lock lock(mutex_);
    if (wake_.wait_for(lock, std::chrono::milliseconds(250), [&] { return stopping_; })) return;
  }
}

}  // namespace arch::agent
