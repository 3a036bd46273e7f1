// ActivityLog: appending under flock, and the bounded tail archd reads (see activity_log.h).
#include "managed/activity_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>

#include "base/clock.h"
#include "base/file_lock.h"
#include "base/file_util.h"

namespace arch {
namespace {

using nlohmann::json;

constexpr const char* kFileName = "activity.jsonl";
constexpr std::size_t kHeadBytes = 64;
constexpr std::size_t kMaxDetailBytes = 1024;
constexpr std::size_t kMaxNameBytes = 128;

json record_json(const ActivityRecord& r) {
  return {{"v", 1},
          {"time", std::round(r.time * 1000) / 1000},
          {"what", r.what},
          {"source", r.source},
          {"outcome", r.outcome},
          {"namespace", r.ns},
          {"id", r.id},
          {"key", r.key},
          {"ms", std::round(r.ms * 1000) / 1000},
          {"bytes", r.bytes},
          {"detail", r.detail}};
}

std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

// A label-like word: 1-32 of [a-z_].
bool is_word(const std::string& s) {
  if (s.empty() || s.size() > 32) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || c == '_')) return false;
  }
  return true;
}

Result<std::string> pread_some(int fd, uint64_t offset, std::size_t n) {
  std::string out(n, '\0');
  std::size_t got = 0;
  while (got < n) {
    ssize_t r = retry_eintr(
        [&] { return ::pread(fd, out.data() + got, n - got, static_cast<off_t>(offset + got)); });
    if (r < 0) return fail_errno("pread");
    if (r == 0) break;
    got += static_cast<std::size_t>(r);
  }
  out.resize(got);
  return out;
}

// Removes the file when it is still the one read to its end (under the writers' lock).
void rotate(int dirfd, const struct stat& read) {
  auto lock = FileLock::acquire_at(dirfd, kFileName, std::chrono::milliseconds(200));
  if (!lock) return;
  struct stat now {};
  if (::fstat(lock->fd(), &now) != 0) return;
  if (now.st_dev != read.st_dev || now.st_ino != read.st_ino || now.st_size != read.st_size) return;
  (void)::unlinkat(dirfd, kFileName, 0);
}

}  // namespace

std::string activity_log_path(const std::string& state_dir) {
  return state_dir + "/" + kFileName;
}

std::string activity_line(const ActivityRecord& record) {
  ActivityRecord r = record;
  if (r.detail.size() > kMaxDetailBytes) r.detail.resize(kMaxDetailBytes);
  for (auto* s : {&r.ns, &r.id, &r.key}) {
    if (s->size() > kMaxNameBytes) s->resize(kMaxNameBytes);
  }
  std::string line = dump(record_json(r));
  if (line.size() + 1 > kActivityMaxLineBytes) {  // escapes made it longer: drop the detail
    r.detail.clear();
    line = dump(record_json(r));
  }
  return line + "\n";
}

Result<ActivityRecord> parse_activity_line(std::string_view line) {
  if (line.size() > kActivityMaxLineBytes) return fail("activity: line too long");
  auto j = json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return fail("activity: not a JSON object");
  try {
    ActivityRecord r;
    r.time = j.at("time").get<double>();
    r.what = j.at("what").get<std::string>();
    r.source = j.at("source").get<std::string>();
    r.outcome = j.at("outcome").get<std::string>();
    r.ns = j.value("namespace", "");
    r.id = j.value("id", "");
    r.key = j.value("key", "");
    r.ms = j.value("ms", 0.0);
    r.bytes = j.value("bytes", uint64_t{0});
    r.detail = j.value("detail", "");
    if (r.what != "checkpoint" && r.what != "restore") return fail("activity: unknown what");
    if (r.outcome != "ok" && r.outcome != "failed") return fail("activity: unknown outcome");
    if (!is_word(r.source)) return fail("activity: bad source");
    if (!std::isfinite(r.ms) || r.ms < 0 || !std::isfinite(r.time))
      return fail("activity: bad number");
    if (r.ns.size() > kMaxNameBytes || r.id.size() > kMaxNameBytes || r.key.size() > kMaxNameBytes)
      return fail("activity: name too long");
    return r;
  } catch (const json::exception& e) {
    return fail(std::string("activity: ") + e.what());
  }
}

void record_checkpoint_activity(const std::string& state_dir, std::string source,
                                const ContainerRecord& rec, bool ok, double ms, uint64_t bytes,
                                std::string detail) {
  (void)append_activity(state_dir, {.what = "checkpoint",
                                    .source = std::move(source),
                                    .outcome = ok ? "ok" : "failed",
                                    .ns = rec.ns,
                                    .id = rec.id,
                                    .key = rec.key,
                                    .ms = ms,
                                    .bytes = bytes,
                                    .detail = std::move(detail)});
}

Result<void> append_activity(const std::string& state_dir, ActivityRecord record) {
  if (record.time == 0) record.time = static_cast<double>(now_nanoseconds()) / 1e9;
  std::string line = activity_line(record);
  auto dir = open_file(state_dir, O_RDONLY | O_DIRECTORY);
  if (!dir) return std::unexpected(dir.error().wrap("activity log"));
  auto lock = FileLock::acquire_at(dir->get(), kFileName, std::chrono::milliseconds(2000));
  if (!lock) return std::unexpected(lock.error().wrap("activity log"));
  struct stat st {};
  if (::fstat(lock->fd(), &st) != 0) return fail_errno("fstat " + activity_log_path(state_dir));
  if (static_cast<uint64_t>(st.st_size) >= kActivityMaxFileBytes) {
    return fail(activity_log_path(state_dir) + " is full (archd has not read it): record dropped");
  }
  if (::lseek(lock->fd(), 0, SEEK_END) < 0) return fail_errno("lseek");
  if (auto w = write_all(lock->fd(), line); !w) {
    return std::unexpected(w.error().wrap(activity_log_path(state_dir)));
  }
  return {};
}

Result<ActivityBatch> read_activity(const std::string& state_dir, const ActivityCursor& cursor,
                                    std::size_t max_bytes, uint64_t rotate_bytes) {
  ActivityBatch b;
  b.cursor = cursor;
  b.cursor.started = true;
  auto dir = open_file(state_dir, O_RDONLY | O_DIRECTORY);
  if (!dir) {
    if (dir.error().code() == ENOENT) return b;
    return std::unexpected(dir.error());
  }
  int raw = retry_eintr([&] {
    return ::openat(dir->get(), kFileName, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  });
  if (raw < 0) {
    if (errno == ENOENT) return b;
    return fail_errno("open " + activity_log_path(state_dir));
  }
  UniqueFd fd(raw);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return fail_errno("fstat " + activity_log_path(state_dir));
  if (!S_ISREG(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & 077) != 0) {
    return fail(activity_log_path(state_dir) + " is not a private regular file of ours: not read");
  }
  auto head = pread_some(fd.get(), 0, kHeadBytes);
  if (!head) return std::unexpected(head.error().wrap(activity_log_path(state_dir)));
  auto size = static_cast<uint64_t>(st.st_size);
  b.cursor.dev = st.st_dev;
  b.cursor.ino = st.st_ino;
  b.cursor.head = *head;
  if (!cursor.started) {  // the first pass of a fresh reader: from now on
    b.cursor.offset = size;
    return b;
  }
  bool same = cursor.dev == st.st_dev && cursor.ino == st.st_ino &&
              head->compare(0, cursor.head.size(), cursor.head) == 0 && cursor.offset <= size;
  uint64_t offset = same ? cursor.offset : 0;
  std::size_t want = static_cast<std::size_t>(std::min<uint64_t>(size - offset, max_bytes));
  auto chunk = pread_some(fd.get(), offset, want);
  if (!chunk) return std::unexpected(chunk.error().wrap(activity_log_path(state_dir)));
  std::size_t pos = 0;
  for (;;) {
    auto nl = chunk->find('\n', pos);
    if (nl == std::string::npos) break;
    auto rec = parse_activity_line(std::string_view(*chunk).substr(pos, nl - pos));
    if (rec) {
      b.records.push_back(std::move(*rec));
    } else {
      ++b.invalid;
    }
    pos = nl + 1;
  }
  // A full chunk without a line end holds no record (lines are at most 4 KiB): skip it.
  if (pos == 0 && chunk->size() == max_bytes && max_bytes > 0) {
    pos = chunk->size();
    ++b.invalid;
  }
  b.cursor.offset = offset + pos;
  b.more = b.cursor.offset < size && pos > 0;
  if (b.cursor.offset == size && size >= rotate_bytes) rotate(dir->get(), st);
  return b;
}

}  // namespace arch
