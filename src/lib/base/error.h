// Error: one error type for all of libarch, carrying a kind, errno and a context chain.
#pragma once

#include <cerrno>
#include <expected>
#include <string>
#include <string_view>

namespace arch {

/// What went wrong, in the terms a caller acts on: archd maps it to an HTTP status
/// (agent/http_reply.h) and archctl to an exit code (cli/exit_codes.h).
enum class ErrorKind {
  kInternal,      ///< A failure of ARCH or of the system under it (the default).
  kNotFound,      ///< The named object (container, job, checkpoint, file) does not exist.
  kInvalidInput,  ///< The request or its input is malformed or not valid in this state.
  kConflict,      ///< Busy, locked, already exists, or in a state that excludes the request.
  kPermission,    ///< Not allowed (EACCES, EPERM, a refused owner or mode).
  kUnavailable,   ///< A service ARCH needs (archd, containerd, the network) does not answer.
  kTimeout,       ///< A deadline passed.
  kUnsupported,   ///< The system cannot do this (no kernel or CRIU support).
};

/// The kind's name for logs and JSON: "not-found", "invalid-input", ...
std::string_view name(ErrorKind kind);

/// The kind a failed system call's errno stands for: ENOENT -> kNotFound, EACCES/EPERM ->
/// kPermission, EEXIST/EBUSY -> kConflict, EINVAL -> kInvalidInput, ...; kInternal otherwise.
ErrorKind kind_of_errno(int err);

/// An error created where it happened (with errno when a syscall failed) and
/// wrapped with context on the way up: "restore: apply diff: openat etc/passwd: ELOOP".
class Error {
 public:
  Error() = default;
  /// An internal error with a message and no errno.
  explicit Error(std::string message) : message_(std::move(message)) {}
  /// An error of `kind` with a message and no errno.
  Error(ErrorKind kind, std::string message) : message_(std::move(message)), kind_(kind) {}
  /// An error from a failed system call: `what` names the call and its object; the kind
  /// follows from `err`.
  Error(std::string what, int err)
      : message_(std::move(what)), errno_(err), kind_(kind_of_errno(err)) {}

  /// The errno of the failing call, or 0.
  [[nodiscard]] int code() const { return errno_; }
  /// What went wrong, for the caller to act on.
  [[nodiscard]] ErrorKind kind() const { return kind_; }
  /// The message with its context chain, ending in strerror(errno) when set.
  [[nodiscard]] std::string message() const;
  /// The message and context chain alone, without strerror(errno).
  [[nodiscard]] const std::string& text() const { return message_; }
  /// A copy with `context` prepended: "context: message"; kind and errno are kept.
  [[nodiscard]] Error wrap(std::string_view context) const;
  /// A copy of another kind (a caller that knows better, e.g. ENOENT of a config file
  /// archd needs is internal, not "not found").
  [[nodiscard]] Error with_kind(ErrorKind kind) const;

 private:
  std::string message_;
  int errno_ = 0;
  ErrorKind kind_ = ErrorKind::kInternal;
};

/// An Error from the current errno.
Error errno_error(std::string what);

template <class T>
using Result = std::expected<T, Error>;

/// Shorthand for returning an error from a function returning Result<T>.
inline std::unexpected<Error> fail(std::string message) {
  return std::unexpected(Error(std::move(message)));
}
/// An error of `kind`: `return fail(ErrorKind::kNotFound, "no job 'x'");`.
inline std::unexpected<Error> fail(ErrorKind kind, std::string message) {
  return std::unexpected(Error(kind, std::move(message)));
}
inline std::unexpected<Error> fail_errno(std::string what) {
  return std::unexpected(errno_error(std::move(what)));
}

}  // namespace arch
