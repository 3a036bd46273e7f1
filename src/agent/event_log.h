// EventLog: archd's record of what it did and saw, as JSON lines appended to [agent]
// event_log (0600), one write(2) per line on an O_APPEND fd:
//   {"seq":12,"time":"2026-11-21T22:36:24.123Z","kind":"checkpoint","namespace":"default",
//    "id":"job-1","outcome":"ok","duration_ms":812.5,"detail":"/var/lib/arch/.../ckpt-..."}
// kind: checkpoint | drain | undrain | notice | restore | quarantine | agent.
// The recent events are also kept in memory (reloaded from the file's tail at start) for
// the API; seq numbers go on from the file's last one.
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"

namespace arch::agent {

struct Event {
  uint64_t seq = 0;    ///< Assigned by the log.
  std::string time{};  ///< RFC 3339 UTC with milliseconds; assigned when empty.
  std::string kind{};
  std::string ns{};  ///< JSON "namespace".
  std::string id{};
  std::string outcome{};
  double duration_ms = 0;
  std::string detail{};
  bool operator==(const Event&) const = default;
};

nlohmann::json event_json(const Event& e);
Result<Event> parse_event(std::string_view line);

/// The current time as RFC 3339 UTC with milliseconds.
std::string now_rfc3339_ms();

class EventLog {
 public:
  /// `keep`: events kept in memory for since() and recent().
  explicit EventLog(std::string path, std::size_t keep = 1000);

  /// Creates the directory (0700) when missing, opens the file for appending and reloads
  /// the last `keep` events from it.
  Result<void> open();

  /// Assigns seq (and time) and appends the event. A failed write keeps the event in
  /// memory and is returned (the caller logs it); the event is returned either way.
  Event append(Event e, Error* write_error = nullptr);

  /// Events with seq > `seq`, oldest first, at most `limit`.
  [[nodiscard]] std::vector<Event> since(uint64_t seq, std::size_t limit) const;
  /// The last `n` events, oldest first.
  [[nodiscard]] std::vector<Event> recent(std::size_t n) const;
  /// The seq of the last event (0 when none).
  [[nodiscard]] uint64_t last_seq() const;

 private:
  std::string path_;
  std::size_t keep_;
  mutable std::mutex mutex_;
  UniqueFd fd_;
  std::deque<Event> recent_;
  uint64_t last_seq_ = 0;
};

}  // namespace arch::agent
