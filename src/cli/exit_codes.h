// archctl's exit codes: the one table, from an ErrorKind or from archd's HTTP status.
#pragma once

#include "base/error.h"

namespace arch::cli {

/// archctl's exit status. Stable: scripts test them; documented in `archctl --help` and the
/// README ("Exit codes").
enum ExitCode : int {
  kExitOk = 0,           ///< Done.
  kExitFailure = 1,      ///< Failed (an internal or system error, or not supported here).
  kExitUsage = 2,        ///< Bad command line or invalid input (archctl's or archd's 400).
  kExitNotFound = 3,     ///< No such container, job, checkpoint or file.
  kExitConflict = 4,     ///< Busy or conflicting: locked, running, already exists.
  kExitPermission = 5,   ///< Not permitted (not root, refused by the kernel or archd).
  kExitUnavailable = 6,  ///< archd or containerd not reachable, or a deadline passed.
  kExitPartial = 7,      ///< Some items failed (a finalize, drain or gc where not all succeeded).
};

/// The text of the table for `archctl --help`.
inline constexpr const char* kExitCodesHelp =
    "Exit codes:\n"
    "  0  ok\n"
    "  1  failure (internal or system error, not supported)\n"
    "  2  usage error or invalid input\n"
    "  3  not found (container, job, checkpoint, file)\n"
    "  4  conflict or busy (locked, running, already exists)\n"
    "  5  permission denied\n"
    "  6  unavailable: archd or containerd not reachable, or timed out\n"
    "  7  partial failure: some containers or jobs failed";

/// The exit status for an error of `kind`.
constexpr int exit_code(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidInput:
      return kExitUsage;
    case ErrorKind::kNotFound:
      return kExitNotFound;
    case ErrorKind::kConflict:
      return kExitConflict;
    case ErrorKind::kPermission:
      return kExitPermission;
    case ErrorKind::kUnavailable:
    case ErrorKind::kTimeout:
      return kExitUnavailable;
    case ErrorKind::kInternal:
    case ErrorKind::kUnsupported:
      return kExitFailure;
  }
  return kExitFailure;
}

/// The kind of an error archd answered with `status` (the inverse of archd's table in
/// agent/http_reply.cc).
constexpr ErrorKind kind_of_http_status(long status) {
  switch (status) {
    case 400:
      return ErrorKind::kInvalidInput;
    case 401:
    case 403:
      return ErrorKind::kPermission;
    case 404:
      return ErrorKind::kNotFound;
    case 409:
      return ErrorKind::kConflict;
    case 501:
      return ErrorKind::kUnsupported;
    case 502:
    case 503:
      return ErrorKind::kUnavailable;
    case 504:
      return ErrorKind::kTimeout;
    default:
      return ErrorKind::kInternal;
  }
}

}  // namespace arch::cli
