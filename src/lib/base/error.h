// Error: one error type for all of libarch, carrying errno and a context chain.
#pragma once

#include <cerrno>
#include <expected>
#include <string>
#include <string_view>

namespace arch {

/// An error created where it happened (with errno when a syscall failed) and
/// wrapped with context on the way up: "restore: apply diff: openat etc/passwd: ELOOP".
class Error {
 public:
  Error() = default;
  /// An error with a message and no errno.
  explicit Error(std::string message) : message_(std::move(message)) {}
  /// An error from a failed system call: `what` names the call and its object.
  Error(std::string what, int err) : message_(std::move(what)), errno_(err) {}

  /// The errno of the failing call, or 0.
  [[nodiscard]] int code() const { return errno_; }
  /// The message with its context chain, ending in strerror(errno) when set.
  [[nodiscard]] std::string message() const;
  /// The message and context chain alone, without strerror(errno).
  [[nodiscard]] const std::string& text() const { return message_; }
  /// A copy with `context` prepended: "context: message".
  [[nodiscard]] Error wrap(std::string_view context) const;

 private:
  std::string message_;
  int errno_ = 0;
};

/// An Error from the current errno.
Error errno_error(std::string what);

template <class T>
using Result = std::expected<T, Error>;

/// Shorthand for returning an error from a function returning Result<T>.
inline std::unexpected<Error> fail(std::string message) {
  return std::unexpected(Error(std::move(message)));
}
inline std::unexpected<Error> fail_errno(std::string what) {
  return std::unexpected(errno_error(std::move(what)));
}

}  // namespace arch
