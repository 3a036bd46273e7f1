// archctl config init|show|check: write the node config with every key at its default and
// a comment each (never over an existing file without --force), print the config in use,
// or validate a file. Also node_config(), the one way archctl's verbs read the config.
#include <fcntl.h>
#include <fmt/core.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>

#include "base/file_util.h"
#include "commands.h"
#include "config/node_config.h"
#include "runtime/runtime_path.h"

namespace arch::cli {

Result<NodeConfig> node_config() {
  LoadedConfig loaded = load_node_config_from_env();
  for (const auto& w : loaded.warnings) fmt::print(stderr, "warning: {}\n", w);
  if (!loaded.error.empty()) {
    return std::unexpected(
        Error(ErrorKind::kInvalidInput, loaded.error + " (check it with `archctl config check`)"));
  }
  return std::move(loaded.config);
}

std::function<void(uint64_t, uint64_t)> terminal_progress(std::string verb, bool quiet) {
  if (quiet || ::isatty(STDERR_FILENO) != 1) return {};
  auto last = std::make_shared<std::chrono::steady_clock::time_point>();
  return [verb = std::move(verb), last](uint64_t done, uint64_t total) {
    auto now = std::chrono::steady_clock::now();
    bool finished = total > 0 && done >= total;
    if (!finished && now - *last < std::chrono::milliseconds(250)) return;
    *last = now;
    constexpr double kMiB = 1 << 20;
    auto mib = [](uint64_t b) { return static_cast<double>(b) / kMiB; };
    if (total > 0) {
      fmt::print(stderr, "\r{}: {:.0f} / {:.0f} MiB ({:.0f}%){}", verb, mib(done), mib(total),
                 100.0 * static_cast<double>(std::min(done, total)) / static_cast<double>(total),
                 finished ? "\n" : "");
    } else {
      fmt::print(stderr, "\r{}: {:.0f} MiB", verb, mib(done));
    }
  };
}

Result<Node> load_node() {
  auto config = node_config();
  if (!config) return std::unexpected(config.error());
  auto runc = resolve_runtime(*config, "/proc/self/exe");
  if (!runc) return std::unexpected(runc.error());
  return Node{*config, *runc};
}

Handler add_config_command(CLI::App& app) {
  auto* config = app.add_subcommand("config", "The node config file");
  config->require_subcommand(1);
  struct Opts {
    std::string path;
    bool force = false;
  };
  auto o = std::make_shared<Opts>();
  auto* init = config->add_subcommand(
      "init",
      "Write a commented default config (default path: $ARCH_CONFIG or /etc/arch/arch.conf)");
  init->add_option("--path", o->path, "Where to write it");
  init->add_flag("--force", o->force,
                 "Replace an existing file (the old one is kept as <file>.bak)");
  auto* show =
      config->add_subcommand("show", "Print the config file in use and any problem with it");
  auto* check = config->add_subcommand(
      "check",
      "Validate a config file (default: $ARCH_CONFIG or /etc/arch/arch.conf): syntax, "
      "known sections and keys, values, ownership; exit 0 when ARCH would use it");
  check->add_option("path", o->path, "The file to check");

  return [=]() -> int {
    std::string path = o->path.empty() ? config_path_from_env() : o->path;
    if (check->parsed()) {
      // A file named here must exist; without a name, a missing default file means defaults.
      const char* env = std::getenv("ARCH_CONFIG");
      bool named = !o->path.empty() || (env != nullptr && *env != '\0');
      LoadedConfig loaded = load_node_config(path, named);
      for (const auto& w : loaded.warnings) fmt::print(stderr, "warning: {}\n", w);
      if (!loaded.error.empty()) {
        return report_error(Error(ErrorKind::kInvalidInput, loaded.error));
      }
      if (!loaded.from_file) return fmt::print("{}: absent, the defaults apply\n", path), 0;
      fmt::print("{}: ok\n", path);
      return 0;
    }
    if (show->parsed()) {
      LoadedConfig loaded = load_node_config(path, std::getenv("ARCH_CONFIG") != nullptr);
      for (const auto& w : loaded.warnings) fmt::print(stderr, "warning: {}\n", w);
      if (!loaded.error.empty()) fmt::print(stderr, "error: {}\n", loaded.error);
      if (!loaded.from_file) return fmt::print("# {}: not used, defaults apply\n", path), 0;
      auto text = read_file(path);
      if (!text) return report_error(text.error());
      fmt::print("# {}\n{}", path, *text);
      return 0;
    }
    if (path.empty() || path.front() != '/')
      return report_error(Error(ErrorKind::kInvalidInput, "--path must be absolute"));
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
      if (!o->force)
        return report_error(
            Error(ErrorKind::kConflict, path + " exists: not replacing it (use --force)"));
      auto old = read_file(path);
      if (old) (void)write_file_atomic(path + ".bak", *old, 0600);
    }
    std::string dir = dirname_of(path);
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
      return report_error(errno_error("mkdir " + dir));
    std::string text = default_node_config_text();
    if (auto parsed = parse_node_config(text); !parsed)
      return report_error("internal: default config: " + parsed.error().message());
    if (auto written = write_file_atomic(path, text, 0644); !written)
      return report_error(written.error());
    fmt::print("wrote {}\n", path);
    return 0;
  };
}

}  // namespace arch::cli
