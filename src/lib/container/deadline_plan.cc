// DeadlinePlan: size prediction, the kept store rates and the admission plan.
#include "container/deadline_plan.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>
#include <span>
#include <sstream>
#include <string_view>

#include "base/file_util.h"
#include "base/unique_fd.h"

namespace arch {
namespace {

constexpr const char* kRatesFile = "store-rates.json";
constexpr std::size_t kMaxRatesFileBytes = 1 << 20;
constexpr std::size_t kMaxStoresKept = 256;
// Weight of a new measurement in the kept average.
constexpr double kNewWeight = 0.5;

double fold(double old_value, double sample) {
  if (sample <= 0) return old_value;
  if (old_value <= 0) return sample;
  return (1 - kNewWeight) * old_value + kNewWeight * sample;
}

nlohmann::json read_rates(const std::string& state_dir) {
  auto text = read_file(state_dir + "/" + kRatesFile, kMaxRatesFileBytes);
  if (!text) return nlohmann::json::object();
  auto doc = nlohmann::json::parse(*text, nullptr, false);
  return doc.is_object() ? doc : nlohmann::json::object();
}

uint64_t stat_value(const std::string& text, std::string_view key) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() <= key.size() || !line.starts_with(key) || line[key.size()] != ' ') continue;
    uint64_t v = 0;
    auto s = std::string_view(line).substr(key.size() + 1);
    std::from_chars(s.data(), s.data() + s.size(), v);
    return v;
  }
  return 0;
}

// The memory a dump writes: anonymous and shared (tmpfs, shm) pages of the task's memory
// cgroup. File-backed clean pages are not dumped.
uint64_t cgroup_memory_bytes(int pid) {
  auto cg = read_file("/proc/" + std::to_string(pid) + "/cgroup", 64 << 10);
  if (!cg) return 0;
  std::istringstream in(*cg);
  std::string line, v1, v2;
  while (std::getline(in, line)) {
    auto a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    std::string controllers = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    if (path.find("..") != std::string::npos) continue;
    std::istringstream names(controllers);
    for (std::string n; std::getline(names, n, ',');) {
      if (n == "memory") v1 = path;
    }
    if (line.starts_with("0::")) v2 = path;
  }
  if (!v1.empty()) {
    auto stat = read_file("/sys/fs/cgroup/memory" + v1 + "/memory.stat", 64 << 10);
    if (stat) return stat_value(*stat, "total_rss") + stat_value(*stat, "total_shmem");
  }
  if (!v2.empty()) {
    auto stat = read_file("/sys/fs/cgroup" + v2 + "/memory.stat", 64 << 10);
    if (stat) return stat_value(*stat, "anon") + stat_value(*stat, "shmem");
  }
  return 0;
}

std::string mib(uint64_t bytes) {
  return fmt::format("{:.0f} MiB", static_cast<double>(bytes) / (1 << 20));
}

std::string rate_text(double bps) {
  return fmt::format("{:.0f} MB/s", bps / 1e6);
}

}  // namespace

uint64_t allocated_tree_bytes(int dirfd, std::size_t& budget) {
  int fd = ::dup(dirfd);
  if (fd < 0) return 0;
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) {
    ::close(fd);
    return 0;
  }
  uint64_t total = 0;
  while (budget > 0) {
    dirent* e = ::readdir(d);
    if (e == nullptr) break;
    std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    --budget;
    struct stat st {};
    if (::fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (S_ISREG(st.st_mode)) {
      total += static_cast<uint64_t>(st.st_blocks) * 512;
    } else if (S_ISDIR(st.st_mode)) {
      UniqueFd sub(::openat(dirfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (sub) total += allocated_tree_bytes(sub.get(), budget);
    }
  }
  ::closedir(d);
  return total;
}

StoreRates load_store_rates(const std::string& state_dir, const std::string& store) {
  auto doc = read_rates(state_dir);
  StoreRates r;
  auto it = doc.find(store);
  if (it == doc.end() || !it->is_object()) return r;
  auto number = [&](const char* key) {
    auto v = it->find(key);
    return v != it->end() && v->is_number() && v->get<double>() > 0 ? v->get<double>() : 0.0;
  };
  r.single_bps = number("single_bps");
  r.aggregate_bps = number("aggregate_bps");
  return r;
}

Result<void> record_store_rates(const std::string& state_dir, const std::string& store,
                                double single_bps, double aggregate_bps) {
  if (single_bps <= 0 && aggregate_bps <= 0) return {};
  auto doc = read_rates(state_dir);
  auto old = load_store_rates(state_dir, store);
  if (!doc.contains(store) && doc.size() >= kMaxStoresKept) doc.erase(doc.begin());
  doc[store] = {{"single_bps", fold(old.single_bps, single_bps)},
                {"aggregate_bps", fold(old.aggregate_bps, aggregate_bps)},
                {"updated", static_cast<long>(::time(nullptr))}};
  return write_file_atomic(state_dir + "/" + kRatesFile, doc.dump(2) + "\n", 0600);
}

uint64_t predict_checkpoint_bytes(int pid, const std::string& upperdir) {
  uint64_t total = pid > 0 ? cgroup_memory_bytes(pid) : 0;
  if (!upperdir.empty()) {
    UniqueFd dir(::open(upperdir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    std::size_t budget = kMaxPlanWalkEntries;
    if (dir) total += allocated_tree_bytes(dir.get(), budget);
  }
  return total;
}

std::vector<std::size_t> choose_by_priority(const std::vector<double>& seconds,
                                            const std::vector<int64_t>& values, double budget) {
  std::size_t n = seconds.size();
  if (n == 0 || budget <= 0) return {};
  const std::size_t slots = kKnapsackSlots;
  double unit = budget / static_cast<double>(slots);
  std::vector<std::size_t> weight(n);
  for (std::size_t i = 0; i < n; ++i) {
    double w = std::ceil(std::max(0.0, seconds[i]) / unit - 1e-9);
    weight[i] = w > static_cast<double>(slots) ? slots + 1 : static_cast<std::size_t>(w);
  }
  // best[c]: the largest total within c slots; take[i][c]: whether item i is in it.
  std::vector<int64_t> best(slots + 1, 0);
  std::vector<std::vector<bool>> take(n, std::vector<bool>(slots + 1, false));
  for (std::size_t i = 0; i < n; ++i) {
    if (weight[i] > slots || values[i] <= 0) continue;
    for (std::size_t c = slots + 1; c-- > weight[i];) {
      int64_t with = best[c - weight[i]] + values[i];
      if (with > best[c]) {
        best[c] = with;
        take[i][c] = true;
      }
    }
  }
  // The least capacity that reaches the best total: the set that needs the least time.
  auto c = static_cast<std::size_t>(std::max_element(best.begin(), best.end()) -
                                    best.begin());  // first of the maxima
  std::vector<std::size_t> chosen;
  for (std::size_t i = n; i-- > 0;) {
    if (take[i][c]) {
      chosen.push_back(i);
      c -= weight[i];
    }
  }
  std::reverse(chosen.begin(), chosen.end());
  return chosen;
}

int64_t effective_priority(std::string_view env_value, int priority_max) {
  if (priority_max <= 0 || env_value.empty()) return 1;
  int64_t v = 0;
  auto [end, ec] = std::from_chars(env_value.data(), env_value.data() + env_value.size(), v);
  if (ec != std::errc() || end != env_value.data() + env_value.size() || v < 1) return 1;
  return std::min<int64_t>(v, priority_max);
}

double projected_dump_finish(const std::vector<DumpSample>& samples, uint64_t predicted_bytes,
                             double window_s) {
  if (samples.size() < 2) return 0;
  const auto& last = samples.back();
  // Not writing yet (runc and CRIU starting; a file system's metadata): no rate yet.
  if (last.bytes < kProgressStartBytes) return 0;
  // Progress counts from the last sample before it began.
  std::size_t begin = 0;
  while (begin + 1 < samples.size() && samples[begin + 1].bytes < kProgressStartBytes) ++begin;
  if (last.t - samples[begin].t < 0.5) return 0;
  // The oldest sample inside the window (or the first one).
  auto first = samples[begin];
  for (const auto& s : std::span(samples).subspan(begin)) {
    if (last.t - s.t <= window_s) {
      first = s;
      break;
    }
  }
  if (last.t - first.t < 0.5) first = samples[std::max(begin, samples.size() - 2)];
  double dt = last.t - first.t;
  double rate =
      dt > 0 && last.bytes > first.bytes ? static_cast<double>(last.bytes - first.bytes) / dt : 0.0;
  if (last.bytes >= predicted_bytes) return last.t;  // past the prediction: nearly done
  if (rate <= 0) return std::numeric_limits<double>::infinity();
  return last.t + static_cast<double>(predicted_bytes - last.bytes) / rate;
}

DeadlinePlan plan_dumps(const std::vector<uint64_t>& bytes, const StoreRates& rates,
                        const PlanOptions& o, const std::vector<int64_t>& priorities) {
  DeadlinePlan plan;
  std::size_t n = bytes.size();
  plan.entries.resize(n);
  std::vector<std::size_t> by_size(n);
  std::iota(by_size.begin(), by_size.end(), 0);
  std::stable_sort(by_size.begin(), by_size.end(),
                   [&](std::size_t a, std::size_t b) { return bytes[a] < bytes[b]; });
  int parallel = std::max(1, o.parallel);
  bool weighted = priorities.size() == n &&
                  std::adjacent_find(priorities.begin(), priorities.end(), std::not_equal_to<>()) !=
                      priorities.end();
  if (rates.single_bps <= 0 && rates.aggregate_bps <= 0) {
    if (weighted) {  // no prediction: at least the highest priorities go first
      std::stable_sort(by_size.begin(), by_size.end(),
                       [&](std::size_t a, std::size_t b) { return priorities[a] > priorities[b]; });
    }
    plan.order = by_size;
    plan.workers = parallel;
    plan.basis = "no write rate measured yet for this store: every container attempted";
    return plan;
  }
  plan.predicted = true;
  double margin = o.margin_s >= 0 ? o.margin_s : std::max(1.0, 0.05 * o.seconds_left);
  double budget = o.seconds_left - margin;
  uint64_t total = std::accumulate(bytes.begin(), bytes.end(), uint64_t{0});
  // The modes a measurement supports: (workers, bytes per second, seconds per container).
  double seq_rate = rates.single_bps > 0 ? rates.single_bps : rates.aggregate_bps;
  // Side by side never writes slower than one stream: without a measurement of it, the
  // one-stream rate (what fits one at a time fits side by side).
  double par_rate = rates.aggregate_bps > 0 ? rates.aggregate_bps : seq_rate;
  auto seconds = [&](uint64_t b, double rate, int workers) {
    return static_cast<double>(b) / rate + o.per_container_s / workers;
  };
  double all_seq = 0;
  for (auto b : bytes) all_seq += seconds(b, seq_rate, 1);
  bool parallel_mode;
  if (all_seq <= budget) {
    parallel_mode = parallel > 1;  // everything fits even one at a time: go fast
  } else {
    parallel_mode = parallel > 1 && par_rate > seq_rate * 1.05;
  }
  double rate = parallel_mode ? par_rate : seq_rate;
  plan.workers = parallel_mode ? parallel : 1;
  plan.basis =
      fmt::format("{} of {} in {:.1f} s at {} ({}; {})", mib(total),
                  n == 1 ? std::string("1 container") : fmt::format("{} containers", n),
                  o.seconds_left, rate_text(rate),
                  parallel_mode ? fmt::format("{} dumps at once", plan.workers)
                                : std::string("one dump at a time: the store is the bottleneck"),
                  fmt::format("{:.1f} s kept as margin", margin));
  // Equal priorities: smallest first while they fit (the most containers). Unequal: the
  // knapsack's set, then smallest first.
  std::vector<bool> chosen(n, true);
  if (weighted) {
    std::vector<double> secs(n);
    for (std::size_t i = 0; i < n; ++i) secs[i] = seconds(bytes[i], rate, plan.workers);
    chosen.assign(n, false);
    for (auto i : choose_by_priority(secs, priorities, budget)) chosen[i] = true;
    plan.basis += "; by priority";
  }
  double t = 0;
  for (std::size_t i : by_size) {
    double dt = seconds(bytes[i], rate, plan.workers);
    auto& e = plan.entries[i];
    if (chosen[i] && t + dt <= budget) {
      t += dt;
      e.predicted_finish_s = t;
      plan.order.push_back(i);
    } else {
      e.admitted = false;
      e.predicted_finish_s = t + dt;
      if (!chosen[i]) {
        e.reason = fmt::format(
            "not attempted: the time left ({:.1f} s, less {:.1f} s margin, at {}) goes to "
            "containers of higher total priority; it keeps running",
            o.seconds_left, margin, rate_text(rate));
        continue;
      }
      e.reason = fmt::format(
          "not attempted: its checkpoint ({}) would finish at about {:.1f} s, after the "
          "deadline ({:.1f} s, less {:.1f} s margin) at {}; it keeps running",
          mib(bytes[i]), t + dt, o.seconds_left, margin, rate_text(rate));
    }
  }
  return plan;
}

}  // namespace arch
