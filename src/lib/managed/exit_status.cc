// ExitStatus: one atomically replaced JSON file per container under <dir>/<ns>/<id>.
#include "managed/exit_status.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <ctime>
#include <limits>
#include <nlohmann/json.hpp>

#include "base/clock.h"
#include "base/file_util.h"
#include "base/names.h"

namespace arch {
namespace {

constexpr std::size_t kMaxRecordBytes = 4096;

/// mkdir(2) that accepts an existing directory.
Result<void> make_dir(const std::string& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) return fail_errno("mkdir " + path);
  return {};
}

Result<void> validate(const std::string& ns, const std::string& id) {
  if (auto ok = validate_name("namespace", ns); !ok) return ok;
  return validate_name("container id", id);
}

Result<ExitRecord> parse_record(const std::string& path, const std::string& text) {
  auto doc = nlohmann::json::parse(text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return fail(path + ": not an exit record");
  auto status = doc.find("exit_status");
  if (status == doc.end() || !status->is_number_integer())
    return fail(path + ": exit record without an integer exit_status");
  auto value = status->get<int64_t>();
  if (value < 0 || value > std::numeric_limits<int>::max())
    return fail(path + ": exit_status out of range");
  ExitRecord rec;
  rec.exit_status = static_cast<int>(value);
  if (auto pid = doc.find("pid"); pid != doc.end() && pid->is_number_unsigned())
    rec.pid = pid->get<uint32_t>();
  if (auto at = doc.find("exited_at"); at != doc.end() && at->is_string())
    rec.exited_at = at->get<std::string>();
  if (auto exec = doc.find("exec_id"); exec != doc.end() && exec->is_string())
    rec.exec_id = exec->get<std::string>();
  return rec;
}

}  // namespace

std::string format_exit_time(int64_t seconds, int32_t nanos) {
  return format_utc_ns(seconds * 1'000'000'000 + nanos, UtcPrecision::kNanos);
}

Result<std::string> exit_status_path(const std::string& dir, const std::string& ns,
                                     const std::string& id) {
  if (auto ok = validate(ns, id); !ok) return std::unexpected(ok.error());
  return dir + "/" + ns + "/" + id;
}

Result<bool> record_exit_status(const std::string& dir, const TaskExitEvent& event) {
  if (!is_init_exit(event)) return false;
  auto path = exit_status_path(dir, event.ns, event.container_id);
  if (!path) return std::unexpected(path.error().wrap("record exit status"));
  if (auto ok = make_dir(dir, 0700); !ok) return std::unexpected(ok.error());
  if (auto ok = make_dir(dir + "/" + event.ns, 0700); !ok) return std::unexpected(ok.error());
  nlohmann::json doc = {{"exit_status", event.exit_status},
                        {"pid", event.pid},
                        {"exited_at", event.exited_at},
                        {"exec_id", event.exec_id}};
  if (auto ok = write_file_atomic(*path, doc.dump() + "\n", 0600); !ok)
    return std::unexpected(ok.error());
  return true;
}

Result<std::optional<ExitRecord>> read_exit_record(const std::string& dir, const std::string& ns,
                                                   const std::string& id) {
  auto path = exit_status_path(dir, ns, id);
  if (!path) return std::unexpected(path.error());
  auto fd = open_file(*path, O_RDONLY | O_NOFOLLOW);
  if (!fd) {
    if (fd.error().code() == ENOENT) return std::nullopt;
    return std::unexpected(fd.error());
  }
  auto text = read_all(fd->get(), kMaxRecordBytes);
  if (!text) return std::unexpected(text.error().wrap(*path));
  auto rec = parse_record(*path, *text);
  if (!rec) return std::unexpected(rec.error());
  return std::optional<ExitRecord>(std::move(*rec));
}

Result<std::optional<int>> read_exit_status(const std::string& dir, const std::string& ns,
                                            const std::string& id) {
  auto rec = read_exit_record(dir, ns, id);
  if (!rec) return std::unexpected(rec.error());
  if (!*rec) return std::nullopt;
  return std::optional<int>((*rec)->exit_status);
}

Result<void> forget_exit_status(const std::string& dir, const std::string& ns,
                                const std::string& id) {
  auto path = exit_status_path(dir, ns, id);
  if (!path) return std::unexpected(path.error());
  if (::unlink(path->c_str()) != 0 && errno != ENOENT) return fail_errno("unlink " + *path);
  return {};
}

std::optional<int> wait_for_exit_status(const std::string& dir, const std::string& ns,
                                        const std::string& id, int wait_ms) {
  constexpr int kStepMs = 20;
  for (int waited = 0;; waited += kStepMs) {
    auto status = read_exit_status(dir, ns, id);
    if (!status) return std::nullopt;
    if (*status || waited >= wait_ms) return *status;
    timespec step{0, kStepMs * 1000000L};
    ::nanosleep(&step, nullptr);
  }
}

}  // namespace arch
