// ContainerdEventWatcher: a synchronous gRPC server-streaming call per connection, in a
// reconnect loop; a monitor thread turns the caller's stop flag into a call cancellation.
#include "node/containerd_events.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <thread>

#include "containerd_events.grpc.pb.h"

namespace arch {
namespace {

namespace events = containerd::services::events::v1;

constexpr const char* kExitTopic = "/tasks/exit";
constexpr const char* kExitFilter = "topic==\"/tasks/exit\"";
constexpr std::string_view kTaskExitType = "containerd.events.TaskExit";
constexpr int kFirstBackoffMs = 100;
constexpr int kMaxBackoffMs = 2000;
constexpr auto kConnectTimeout = std::chrono::seconds(5);
constexpr auto kConnectSlice = std::chrono::milliseconds(100);
constexpr auto kStopPoll = std::chrono::milliseconds(100);
constexpr auto kStableStream = std::chrono::seconds(2);

/// containerd writes the bare message name as the type URL; accept a prefixed one too.
bool is_task_exit_type(std::string_view type_url) {
  if (type_url == kTaskExitType) return true;
  return type_url.size() > kTaskExitType.size() && type_url.ends_with(kTaskExitType) &&
         type_url[type_url.size() - kTaskExitType.size() - 1] == '/';
}

/// The task exit in `env`, or nullopt when it carries another event or cannot be decoded.
std::optional<TaskExitEvent> decode_task_exit(const events::Envelope& env) {
  if (env.topic() != kExitTopic || !is_task_exit_type(env.event().type_url())) return std::nullopt;
  events::TaskExit exit;
  if (!exit.ParseFromString(env.event().value())) return std::nullopt;
  TaskExitEvent out;
  out.ns = env.namespace_();
  out.container_id = exit.container_id();
  out.exec_id = exit.id();
  out.pid = exit.pid();
  out.exit_status = exit.exit_status();
  if (exit.has_exited_at())
    out.exited_at = format_exit_time(exit.exited_at().seconds(), exit.exited_at().nanos());
  return out;
}

std::string describe(const grpc::Status& status) {
  return "code " + std::to_string(static_cast<int>(status.error_code())) + ": " +
         status.error_message();
}

}  // namespace

ContainerdEventWatcher::ContainerdEventWatcher(std::string address)
    : target_(address.empty() || address.starts_with("unix:") ? std::move(address)
                                                              : "unix:" + address) {}

ContainerdEventWatcher::~ContainerdEventWatcher() = default;

void ContainerdEventWatcher::stop() {
  std::lock_guard lock(mu_);
  stopping_ = true;
  if (call_ != nullptr) call_->TryCancel();
  cv_.notify_all();
}

bool ContainerdEventWatcher::sleep_unless_stopped(int ms) {
  std::unique_lock lock(mu_);
  return !cv_.wait_for(lock, std::chrono::milliseconds(ms), [&] { return stopping_; });
}

void ContainerdEventWatcher::report(bool connected, const std::string& detail) {
  connected_ = connected;
  // Changes only: an unreachable containerd is reported once, not at every retry.
  if (reported_ && *reported_ == connected) return;
  reported_ = connected;
  if (on_state_) on_state_(connected, detail);
}

Result<void> ContainerdEventWatcher::run(const std::function<void(const TaskExitEvent&)>& on_exit,
                                         const std::atomic<bool>& stop_flag) {
  if (target_.empty()) return fail("containerd event watcher: no containerd address");
  // The monitor ends when the flag is set (it then stops us) or when run() is done.
  bool done = false;
  std::thread monitor([&] {
    std::unique_lock lock(mu_);
    while (!done && !stopping_) {
      if (stop_flag.load()) {
        lock.unlock();
        stop();
        return;
      }
      cv_.wait_for(lock, kStopPoll);
    }
  });

  int backoff_ms = kFirstBackoffMs;
  while (sleep_unless_stopped(0)) {
    auto started = std::chrono::steady_clock::now();
    auto ended = subscribe_once(on_exit);
    bool was_connected = connected_.load();
    if (!sleep_unless_stopped(0)) break;
    ++disconnects_;
    report(false, ended ? "event stream ended" : ended.error().message());
    // A stream that lived a while broke (containerd restarted): retry soon. One refused
    // at once keeps backing off.
    if (was_connected && std::chrono::steady_clock::now() - started > kStableStream)
      backoff_ms = kFirstBackoffMs;
    if (!sleep_unless_stopped(backoff_ms)) break;
    backoff_ms = std::min(backoff_ms * 2, kMaxBackoffMs);
  }
  connected_ = false;
  {
    std::lock_guard lock(mu_);
    done = true;
    cv_.notify_all();
  }
  monitor.join();
  return {};
}

Result<void> ContainerdEventWatcher::subscribe_once(
    const std::function<void(const TaskExitEvent&)>& on_exit) {
  connected_ = false;
  // A fresh channel per attempt: a reused one could sit in gRPC's own reconnect backoff
  // (up to minutes) after containerd restarts.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, kFirstBackoffMs);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, kFirstBackoffMs);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, kMaxBackoffMs);
  auto channel = grpc::CreateCustomChannel(target_, grpc::InsecureChannelCredentials(), args);
  auto deadline = std::chrono::steady_clock::now() + kConnectTimeout;
  while (!channel->WaitForConnected(std::chrono::system_clock::now() + kConnectSlice)) {
    if (!sleep_unless_stopped(0)) return {};
    // A refused or missing socket fails at once; a slow handshake gets kConnectTimeout.
    if (channel->GetState(false) == GRPC_CHANNEL_TRANSIENT_FAILURE ||
        std::chrono::steady_clock::now() >= deadline)
      return fail("connect " + target_ + ": containerd not reachable");
  }

  auto stub = events::Events::NewStub(channel);
  events::SubscribeRequest request;
  request.add_filters(kExitFilter);
  grpc::ClientContext context;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return {};
    call_ = &context;
  }
  auto reader = stub->Subscribe(&context, request);
  report(true, "subscribed to " + target_);
  events::Envelope envelope;
  while (reader->Read(&envelope)) {
    if (auto exit = decode_task_exit(envelope)) {
      ++exits_seen_;
      on_exit(*exit);
    }
  }
  grpc::Status status = reader->Finish();
  {
    std::lock_guard lock(mu_);
    call_ = nullptr;
  }
  if (!status.ok()) return fail("subscribe " + target_ + ": " + describe(status));
  return {};
}

}  // namespace arch
