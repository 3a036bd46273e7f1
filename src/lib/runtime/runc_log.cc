// RuncLog: logrus-compatible JSON and text lines, appended atomically.
#include "runtime/runc_log.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <ctime>
#include <nlohmann/json.hpp>

#include "base/file_util.h"

namespace arch {
std::string format_log_line(LogFormat format, LogLevel level, std::string_view msg, long now) {
  std::string time = format_utc(now);
  std::string_view lvl = log_level_name(level);
  if (format == LogFormat::kJson) {
    // Keys in logrus's (sorted) order; dump() escapes the message.
    nlohmann::json line = {{"level", lvl}, {"msg", msg}, {"time", time}};
    return line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  }
  nlohmann::json quoted = msg;
  return "time=\"" + time + "\" level=" + std::string(lvl) +
         " msg=" + quoted.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

void RuncLog::log(LogLevel level, std::string_view msg) const {
  if (!enabled(level)) return;
  std::string line = format_log_line(format_, level, msg, static_cast<long>(std::time(nullptr)));
  auto fd = open_file(path_, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW, mode_);
  if (!fd && fd.error().code() == ENOENT) {
    ::mkdir(dirname_of(path_).c_str(), 0700);  // First use of the default log directory.
    fd = open_file(path_, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW, mode_);
  }
  if (!fd) return;
  (void)write_all(fd->get(), line);
}

}  // namespace arch
