// EventLog: the JSON-lines file and its in-memory tail.
#include "event_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <ctime>

#include "base/clock.h"
#include "base/file_util.h"
#include "private_dir.h"

namespace arch::agent {
namespace {

// How much of the file's end is read back at start.
constexpr off_t kTailBytes = 1 << 20;

Result<std::string> read_tail(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return fail_errno("fstat");
  off_t from = st.st_size > kTailBytes ? st.st_size - kTailBytes : 0;
  std::string out(static_cast<std::size_t>(st.st_size - from), '\0');
  std::size_t got = 0;
  while (got < out.size()) {
    ssize_t n = retry_eintr([&] {
      return ::pread(fd, out.data() + got, out.size() - got, from + static_cast<off_t>(got));
    });
    if (n < 0) return fail_errno("pread");
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  out.resize(got);
  if (from > 0) out.erase(0, out.find('\n') + 1);  // drop the partial first line
  return out;
}

}  // namespace

std::string now_rfc3339_ms() {
  return format_utc_ns(now_nanoseconds(), UtcPrecision::kMillis);
}

nlohmann::json event_json(const Event& e) {
  double ms = std::round(e.duration_ms * 1000) / 1000;  // microseconds are enough
  return {{"seq", e.seq}, {"time", e.time},       {"kind", e.kind},    {"namespace", e.ns},
          {"id", e.id},   {"outcome", e.outcome}, {"duration_ms", ms}, {"detail", e.detail}};
}

Result<Event> parse_event(std::string_view line) {
  auto j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return fail("event: not a JSON object");
  try {
    Event e;
    e.seq = j.value("seq", uint64_t{0});
    e.time = j.value("time", "");
    e.kind = j.value("kind", "");
    e.ns = j.value("namespace", "");
    e.id = j.value("id", "");
    e.outcome = j.value("outcome", "");
    e.duration_ms = j.value("duration_ms", 0.0);
    e.detail = j.value("detail", "");
    return e;
  } catch (const nlohmann::json::exception& ex) {
    return fail(std::string("event: ") + ex.what());
  }
}

EventLog::EventLog(std::string path, std::size_t keep) : path_(std::move(path)), keep_(keep) {}

Result<void> EventLog::open() {
  if (auto made = make_private_dirs(dirname_of(path_)); !made) return made;
  auto fd = open_file(path_, O_RDWR | O_APPEND | O_CREAT | O_NOFOLLOW, 0600);
  if (!fd) return std::unexpected(fd.error().wrap("open event log"));
  auto tail = read_tail(fd->get());
  if (!tail) return std::unexpected(tail.error().wrap("read " + path_));
  std::lock_guard lock(mutex_);
  fd_ = std::move(*fd);
  std::string_view rest(*tail);
  while (!rest.empty()) {
    auto nl = rest.find('\n');
    auto line = rest.substr(0, nl);
    rest = nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1);
    auto e = parse_event(line);
    if (!e) continue;
    last_seq_ = std::max(last_seq_, e->seq);
    recent_.push_back(std::move(*e));
    if (recent_.size() > keep_) recent_.pop_front();
  }
  return {};
}

Event EventLog::append(Event e, Error* write_error) {
  std::lock_guard lock(mutex_);
  e.seq = ++last_seq_;
  if (e.time.empty()) e.time = now_rfc3339_ms();
  recent_.push_back(e);
  if (recent_.size() > keep_) recent_.pop_front();
  if (fd_) {
    auto written = write_all(fd_.get(), event_json(e).dump() + "\n");
    if (!written && write_error != nullptr) *write_error = written.error().wrap(path_);
  }
  return e;
}

std::vector<Event> EventLog::since(uint64_t seq, std::size_t limit) const {
  std::lock_guard lock(mutex_);
  std::vector<Event> out;
  for (const auto& e : recent_) {
    if (e.seq > seq && out.size() < limit) out.push_back(e);
  }
  return out;
}

std::vector<Event> EventLog::recent(std::size_t n) const {
  std::lock_guard lock(mutex_);
  std::size_t from = recent_.size() > n ? recent_.size() - n : 0;
  return {recent_.begin() + static_cast<std::ptrdiff_t>(from), recent_.end()};
}

uint64_t EventLog::last_seq() const {
  std::lock_guard lock(mutex_);
  return last_seq_;
}

}  // namespace arch::agent
