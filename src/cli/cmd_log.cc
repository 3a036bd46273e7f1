// archctl log: show or set the node's log level and file (the original ARCH CLI's interface).
#include <fcntl.h>
#include <fmt/core.h>

#include "base/file_util.h"
#include "commands.h"
#include "config/node_config.h"

namespace arch::cli {
namespace {

constexpr const char* kNewConfigHeader =
    "# ARCH node configuration (read by arch-runc, archctl and archd).\n"
    "# Must be owned by root and not writable by group or others, or it is ignored.\n";

struct LogOptions {
  std::string level;
  std::string file;
};

int run_log(const LogOptions& opts) {
  std::string path = config_path_from_env();
  if (opts.level.empty() && opts.file.empty()) {
    auto config = node_config();
    if (!config) return report_error(config.error());
    fmt::print("level: {}\nfile:  {}\n", log_level_name(config->log_level), config->log_file);
    return 0;
  }
  if (!opts.level.empty()) {
    if (auto level = parse_log_level(opts.level); !level) return report_error(level.error());
  }
  if (!opts.file.empty() && opts.file.front() != '/') {
    return report_error(Error(ErrorKind::kInvalidInput, "--file must be an absolute path"));
  }
  std::string text;
  if (auto current = read_file(path); current) {
    text = std::move(*current);
  } else if (current.error().code() == ENOENT) {
    text = kNewConfigHeader;
  } else {
    return report_error(current.error());
  }
  if (!opts.level.empty()) text = set_config_value(text, "log", "level", opts.level);
  if (!opts.file.empty()) text = set_config_value(text, "log", "file", opts.file);
  if (auto parsed = parse_node_config(text); !parsed) {
    return report_error(
        parsed.error().wrap(path + " would become invalid").with_kind(ErrorKind::kInvalidInput));
  }
  if (auto w = write_file_atomic(path, text, 0644); !w) return report_error(w.error());
  fmt::print("updated {}\n", path);
  return 0;
}

}  // namespace

Handler add_log_command(CLI::App& app) {
  auto opts = std::make_shared<LogOptions>();
  auto* cmd = app.add_subcommand("log", "Show or set the node's log level and log file");
  cmd->add_option("--level", opts->level, "error, warn, info or debug");
  cmd->add_option("--file", opts->file, "ARCH's log file (absolute path)");
  return [opts] { return run_log(*opts); };
}

}  // namespace arch::cli
