// CriuErrors: the known reasons a CRIU dump or restore fails, read from its log and told
// to the user in one sentence each, with what to do.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace arch {

/// One known failure: a log line that contains every one of `all` (and, when `any` is not
/// empty, at least one of `any`) shows it; `sentence` says what happened and what to do.
struct CriuErrorRule {
  std::string_view id;  ///< Stable name: "tcp-established", "file-locks", "ghost-limit" ...
  std::vector<std::string_view> all;
  std::vector<std::string_view> any;
  std::string_view sentence;
};

/// The rules in the order they are tried (specific before generic).
std::span<const CriuErrorRule> criu_error_rules();

/// The known failure a CRIU log shows, with the log line that showed it.
struct CriuFailure {
  std::string_view id;
  std::string_view sentence;
  std::string line;  ///< The CRIU log line, as CRIU wrote it.
};

/// Whether a CRIU log line reports an error: CRIU's "Error (file:line):" lines, the
/// parasite's "pie: N: Error" lines and "BUG" lines. The harmless "Can't setup
/// RLIMIT_NOFILE for self" (root without CAP_SYS_RESOURCE) is not one.
bool is_criu_error_line(std::string_view line);

/// The first rule (in table order) that an error line of `log` matches, or nullopt when
/// none does (an unknown failure: the caller shows CRIU's own lines). With
/// `error_lines_only` false every line is tried (for text that holds only error lines
/// already, such as runc's error message).
std::optional<CriuFailure> explain_criu_log(std::string_view log, bool error_lines_only = true);

/// The error lines of `log` (is_criu_error_line), the last `max_lines` of them.
std::vector<std::string> criu_error_lines(std::string_view log, std::size_t max_lines = 20);

/// What a failed dump keeps of a CRIU log: its last `max` bytes (the errors are at the
/// end), from a line start, marked when cut.
inline constexpr std::size_t kMaxKeptCriuLogBytes = 1 << 20;
std::string criu_log_tail(std::string_view log, std::size_t max = kMaxKeptCriuLogBytes);

}  // namespace arch
