// File helpers: EINTR-safe reads and writes, bounded whole-file reads, durable atomic writes.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"

namespace arch {

/// Calls `f` until it does not fail with EINTR.
template <class F>
auto retry_eintr(F&& f) {
  decltype(f()) r;
  do {
    r = f();
  } while (r == -1 && errno == EINTR);
  return r;
}

/// open(2) with O_CLOEXEC always added.
Result<UniqueFd> open_file(const std::string& path, int flags, mode_t mode = 0);

/// Reads the whole of `fd` (at most `max_bytes`, else EFBIG).
Result<std::string> read_all(int fd, std::size_t max_bytes);

/// Reads the whole file at `path` (at most `max_bytes`).
Result<std::string> read_file(const std::string& path, std::size_t max_bytes = 16 << 20);

/// Writes all of `data` to `fd`.
Result<void> write_all(int fd, std::string_view data);

/// Durable replace: writes `data` to a temp file beside `path` with `mode`, fsyncs it,
/// renames it over `path` and fsyncs the directory. Readers see the old or the new file.
Result<void> write_file_atomic(const std::string& path, std::string_view data, mode_t mode);

/// The names in the directory open on `dirfd` (without "." and ".."), sorted byte-wise.
/// `dirfd` itself is left open and untouched (a duplicate is read).
Result<std::vector<std::string>> list_directory(int dirfd);

/// Removes everything inside `dir` without following symlinks (dir itself stays).
Result<void> remove_directory_contents(const std::string& dir);

/// The directory part of `path` ("." when there is none).
std::string dirname_of(const std::string& path);

}  // namespace arch
