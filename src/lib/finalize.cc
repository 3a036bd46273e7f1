// Finalize: a pool of workers takes the running containers one at a time, each checkpoint
// started only while the deadline has not passed (a checkpoint already started runs to its
// end: stopping CRIU midway would waste it). Lock waits are bounded by the time left.
#include "finalize.h"

#include <algorithm>
#include <chrono>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "file_util.h"
#include "manifest.h"
#include "runc_client.h"

namespace arch {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Runs one container's checkpoint into `r`, or marks it skipped.
void finalize_one(FinalizeResult& r, const CheckpointFn& checkpoint, Clock::time_point deadline,
                  const std::atomic<bool>* cancel) {
  auto t0 = Clock::now();
  if (cancel != nullptr && cancel->load()) {
    r.outcome = FinalizeOutcome::kSkipped;
    r.detail = "cancelled before it could start";
    return;
  }
  if (t0 >= deadline) {
    r.outcome = FinalizeOutcome::kSkipped;
    r.detail = "deadline reached before it could start";
    return;
  }
  auto out = checkpoint(r.container);
  r.seconds = seconds_since(t0);
  if (out) {
    r.outcome = FinalizeOutcome::kCheckpointed;
    r.detail = out->path;
    r.bytes = out->bytes;
    r.timings_ms = out->timings_ms;
  } else {
    r.outcome = FinalizeOutcome::kFailed;
    r.detail = out.error().message();
  }
}

// The bytes a committed checkpoint holds, from its manifest (0 when unreadable).
uint64_t committed_bytes(const std::string& dir) {
  auto text = read_file(dir + "/" + kManifestFileName);
  auto manifest = text ? parse_manifest(*text) : Result<Manifest>(std::unexpected(text.error()));
  uint64_t total = 0;
  if (manifest) {
    for (const auto& f : manifest->files) total += f.size;
  }
  return total;
}

}  // namespace

std::string_view to_string(FinalizeOutcome outcome) {
  switch (outcome) {
    case FinalizeOutcome::kCheckpointed:
      return "checkpointed";
    case FinalizeOutcome::kFailed:
      return "failed";
    case FinalizeOutcome::kSkipped:
      return "skipped";
  }
  return "unknown";
}

std::size_t FinalizeReport::not_checkpointed() const {
  return static_cast<std::size_t>(
      std::count_if(containers.begin(), containers.end(),
                    [](const auto& r) { return r.outcome != FinalizeOutcome::kCheckpointed; }));
}

std::vector<ContainerRecord> running_containers(const NodeConfig& config, const std::string& runc) {
  std::vector<ContainerRecord> out;
  for (auto& rec : ContainerRegistry(config.state_dir).all()) {
    auto st = RuncClient(runc, rec.runc_root).state(rec.id);
    if (st && st->status == "running") out.push_back(std::move(rec));
  }
  return out;
}

FinalizeReport finalize_containers(std::vector<ContainerRecord> containers,
                                   const NodeConfig& config, const std::string& runc,
                                   const FinalizeOptions& options, Clock::time_point start) {
  auto deadline = start + std::chrono::duration_cast<Clock::duration>(
                              std::chrono::duration<double>(options.deadline_seconds));
  CheckpointFn checkpoint = options.checkpoint;
  if (!checkpoint) {
    checkpoint = [&config, &runc, deadline](const ContainerRecord& rec) {
      auto left = std::chrono::duration_cast<std::chrono::seconds>(deadline - Clock::now());
      int lock_timeout = static_cast<int>(std::clamp<long>(left.count(), 1, 60));
      auto out = checkpoint_container(rec, config, runc, {false, lock_timeout});
      if (out && out->bytes == 0) out->bytes = committed_bytes(out->path);
      return out;
    };
  }
  if (options.on_start) options.on_start(containers);

  FinalizeReport report;
  for (auto& rec : containers) report.containers.push_back({std::move(rec)});
  std::atomic<std::size_t> next{0};
  std::mutex report_mutex;
  auto worker = [&] {
    for (std::size_t i; (i = next++) < report.containers.size();) {
      finalize_one(report.containers[i], checkpoint, deadline, options.cancel);
      if (options.on_result) {
        std::lock_guard lock(report_mutex);
        options.on_result(report.containers[i]);
      }
    }
  };
  std::vector<std::jthread> pool;
  int n = std::max(1, std::min<int>(options.parallel, static_cast<int>(report.containers.size())));
  for (int i = 0; i < n; ++i) pool.emplace_back(worker);
  pool.clear();  // joins
  report.total_seconds = seconds_since(start);
  return report;
}

FinalizeReport finalize_node(const NodeConfig& config, const std::string& runc,
                             const FinalizeOptions& options) {
  auto start = Clock::now();
  return finalize_containers(running_containers(config, runc), config, runc, options, start);
}

nlohmann::json finalize_report_json(const FinalizeReport& report) {
  nlohmann::json out = {{"total_seconds", report.total_seconds},
                        {"containers", nlohmann::json::array()}};
  for (const auto& r : report.containers) {
    out["containers"].push_back({{"namespace", r.container.ns},
                                 {"id", r.container.id},
                                 {"result", to_string(r.outcome)},
                                 {"seconds", r.seconds},
                                 {"detail", r.detail}});
  }
  return out;
}

}  // namespace arch
