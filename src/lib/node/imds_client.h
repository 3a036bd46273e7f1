// ImdsClient: the EC2 instance metadata service (IMDSv2) as the reclaim-notice watcher uses it.
//
// Protocol (session-oriented IMDSv2):
//   PUT /latest/api/token   header X-aws-ec2-metadata-token-ttl-seconds: N (1-21600)
//       → 200, the token as the body; it is valid for N seconds.
//   GET /latest/meta-data/spot/instance-action          header X-aws-ec2-metadata-token: T
//       → 404: nothing pending; 200: {"action": "terminate"|"stop"|"hibernate",
//                                     "time": "2026-11-21T23:59:00Z"} (the reclaim time)
//   GET /latest/meta-data/events/recommendations/rebalance   (same header)
//       → 404: nothing; 200: {"noticeTime": "2026-11-21T23:50:00Z"} (when it was issued)
//   A GET without a token, or with an expired or unknown one → 401.
// The client keeps one token, takes a new one shortly before its TTL ends, and after a 401
// takes a new one and asks once more. Plain HTTP to a link-local address: no proxy, no
// redirects, no other protocol.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"

namespace arch {

/// One pending notice from the metadata service.
struct ImdsNotice {
  enum class Kind { kSpotInterruption, kRebalance };
  Kind kind = Kind::kSpotInterruption;
  /// Spot: the service's action ("terminate", "stop", "hibernate"). Rebalance: "rebalance".
  std::string action;
  /// The time exactly as the service sent it (spot: the reclaim time; rebalance: the time
  /// the recommendation was issued).
  std::string time_text;
  std::chrono::system_clock::time_point time;
};

struct ImdsOptions {
  /// "http://169.254.169.254" (or "http://[fd00:ec2::254]"); a trailing '/' is ignored.
  std::string endpoint;
  /// The TTL asked for each token, 1-21600 seconds.
  int token_ttl_seconds = 21600;
  /// For each HTTP request as a whole (connect included).
  std::chrono::milliseconds timeout{2000};
};

/// A polling client for the reclaim notices. Not thread-safe: one per watcher thread. It
/// keeps its connection and token between polls.
class ImdsClient {
 public:
  explicit ImdsClient(ImdsOptions options);
  ~ImdsClient();
  ImdsClient(ImdsClient&&) noexcept;
  ImdsClient& operator=(ImdsClient&&) noexcept;
  ImdsClient(const ImdsClient&) = delete;
  ImdsClient& operator=(const ImdsClient&) = delete;

  /// One poll: (re)gets the token when missing or about to expire (and once more after a
  /// 401), then asks for the spot instance-action and the rebalance recommendation, in
  /// that order. Empty vector: nothing pending. Errors name the method, URL and status:
  /// endpoint unreachable or timed out, an unexpected status, malformed JSON.
  Result<std::vector<ImdsNotice>> poll();

  /// How many tokens this client has obtained (for logs and tests).
  [[nodiscard]] int tokens_obtained() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

inline constexpr std::chrono::seconds kMinFinalizeDeadline{5};
inline constexpr std::chrono::seconds kMaxFinalizeDeadline{300};

/// The deadline for finalize on a notice: notice time - safety margin - now, rounded down
/// to whole seconds and clamped to [min_deadline, max_deadline]; a notice time already
/// past gives the minimum. A rebalance recommendation carries no deadline (its time is
/// when it was issued): it gives the maximum.
std::chrono::seconds finalize_deadline(const ImdsNotice& notice,
                                       std::chrono::system_clock::time_point now,
                                       std::chrono::seconds safety_margin,
                                       std::chrono::seconds min_deadline = kMinFinalizeDeadline,
                                       std::chrono::seconds max_deadline = kMaxFinalizeDeadline);

/// Parses an RFC 3339 timestamp: "2026-11-21T23:59:00Z", with optional fractional
/// seconds and 'Z' or a numeric offset ("+02:00"); 't'/'z' accepted as RFC 3339 allows.
Result<std::chrono::system_clock::time_point> parse_rfc3339_utc(std::string_view text);

/// Parses the 200 body of /latest/meta-data/spot/instance-action.
Result<ImdsNotice> parse_spot_instance_action(std::string_view body);

/// Parses the 200 body of /latest/meta-data/events/recommendations/rebalance.
Result<ImdsNotice> parse_rebalance_recommendation(std::string_view body);

}  // namespace arch
