// RuncLog: ARCH's log lines in runc's own formats, so the engine that reads runc's log
// (containerd reads `--log <bundle>/log.json --log-format json`) reads ours too.
//
//   json: {"level":"info","msg":"...","time":"2026-11-21T22:36:24Z"}   (logrus JSONFormatter)
//   text: time="2026-11-21T22:36:24Z" level=info msg="..."              (logrus TextFormatter)
// Lines are appended with one write(2) each on an O_APPEND descriptor, so they interleave
// whole with runc's own lines. Nothing is ever written to stdout.
#pragma once

#include <string>
#include <string_view>

#include "base/clock.h"
#include "config/node_config.h"

namespace arch {

enum class LogFormat { kText, kJson };

/// Formats one log line (with trailing newline) for `now` (seconds since the epoch).
std::string format_log_line(LogFormat format, LogLevel level, std::string_view msg, long now);

/// Appends leveled lines to one file; lines above the threshold are dropped. A failure
/// to write the log never fails the runtime call.
class RuncLog {
 public:
  RuncLog() = default;
  RuncLog(std::string path, LogFormat format, LogLevel threshold, unsigned mode)
      : path_(std::move(path)), format_(format), threshold_(threshold), mode_(mode) {}

  [[nodiscard]] bool enabled(LogLevel level) const { return !path_.empty() && level <= threshold_; }
  void log(LogLevel level, std::string_view msg) const;
  void error(std::string_view msg) const { log(LogLevel::kError, msg); }
  void warn(std::string_view msg) const { log(LogLevel::kWarn, msg); }
  void info(std::string_view msg) const { log(LogLevel::kInfo, msg); }
  void debug(std::string_view msg) const { log(LogLevel::kDebug, msg); }
  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  std::string path_;
  LogFormat format_ = LogFormat::kJson;
  LogLevel threshold_ = LogLevel::kInfo;
  unsigned mode_ = 0600;
};

}  // namespace arch
