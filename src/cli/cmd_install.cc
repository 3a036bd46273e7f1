// archctl install: point containerd or Docker at arch-runc (or back at runc), keeping every
// other setting and a backup of the previous file.
#include <fmt/core.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "base/process.h"
#include "commands.h"
#include "install/engine_config.h"

namespace arch::cli {
namespace {

struct InstallOptions {
  std::string engine;
  std::string config;
  std::string arch_runc;  ///< Empty: the arch-runc beside this archctl, else setup's path.
  bool uninstall = false;
  bool make_default = false;
  int config_version =
      0;  ///< A new containerd config.toml's version; 0: from `containerd --version`.
};

// The arch-runc installed with this archctl (the package's /usr/bin, setup's /usr/local/bin),
// found from /proc/self/exe; setup's path when there is none beside it.
std::string default_arch_runc() {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    auto beside = self.parent_path() / "arch-runc";
    if (::access(beside.c_str(), X_OK) == 0) return beside.string();
  }
  return "/usr/local/bin/arch-runc";
}

// The config version a new config.toml gets: 3 when the containerd on PATH is 2.x or later
// (`containerd github.com/containerd/containerd/v2 2.1.9 ...`), else 2 (also when there is none).
int containerd_config_version_here() {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    std::string bin = dir + "/containerd";
    if (dir.empty() || dir.front() != '/' || ::access(bin.c_str(), X_OK) != 0) continue;
    ProcessOptions po;
    po.timeout = std::chrono::seconds(10);
    auto r = run_process({bin, "--version"}, po);
    if (!r || !r->ok()) return 2;
    std::istringstream words(r->out);
    std::string name, module, version;
    words >> name >> module >> version;
    if (version.starts_with('v')) version.erase(0, 1);
    return !version.empty() && version.front() >= '2' && version.front() <= '9' ? 3 : 2;
  }
  return 2;
}

int run_install(InstallOptions opts) {
  if (opts.arch_runc.empty()) opts.arch_runc = default_arch_runc();
  if (opts.arch_runc.front() != '/') {
    return report_error(Error(ErrorKind::kInvalidInput, "--arch-runc must be an absolute path"));
  }
  EngineInstallOptions eo{opts.arch_runc, opts.make_default};
  if (opts.engine == "containerd" && !opts.uninstall) {
    eo.containerd_config_version =
        opts.config_version != 0 ? opts.config_version : containerd_config_version_here();
  }
  bool docker = opts.engine == "docker";
  std::string path = !opts.config.empty() ? opts.config
                     : docker             ? kDefaultDockerConfig
                                          : kDefaultContainerdConfig;
  Result<EngineEdit> edit;
  if (docker && !opts.uninstall) {
    edit = edit_engine_file(path, [&](std::string_view t) { return docker_config_install(t, eo); });
  } else if (docker) {
    edit = edit_engine_file(path, [](std::string_view t) { return docker_config_uninstall(t); });
  } else if (!opts.uninstall) {
    edit = edit_engine_file(path,
                            [&](std::string_view t) { return containerd_config_install(t, eo); });
  } else {
    edit = edit_engine_file(
        path, [&](std::string_view t) { return containerd_config_uninstall(t, opts.arch_runc); });
  }
  if (!edit) return report_error(edit.error());
  if (!edit->changed) {
    fmt::print("{}: already {}\n", path, opts.uninstall ? "without ARCH" : "set up for ARCH");
    return 0;
  }
  fmt::print("{}: {}\n", path, opts.uninstall ? "ARCH removed" : "ARCH runtime \"arch\" added");
  if (!edit->backup.empty()) fmt::print("previous file kept at {}\n", edit->backup);
  if (docker) {
    fmt::print(
        "reload dockerd to apply (systemctl reload docker, or kill -HUP its pid); "
        "then `docker run --runtime arch ...`\n");
  } else {
    fmt::print(
        "restart containerd to apply (systemctl restart containerd); Kubernetes pods "
        "select it with a RuntimeClass whose handler is \"arch\"\n");
  }
  return 0;
}

}  // namespace

Handler add_install_command(CLI::App& app) {
  auto opts = std::make_shared<InstallOptions>();
  auto* cmd = app.add_subcommand("install", "Configure containerd or Docker to use arch-runc");
  cmd->add_option("engine", opts->engine, "containerd or docker")
      ->required()
      ->check(CLI::IsMember({"containerd", "docker"}));
  cmd->add_flag("--uninstall", opts->uninstall, "Remove ARCH from the engine's configuration");
  cmd->add_flag(
      "--default", opts->make_default,
      "Make arch-runc the default runtime (Docker default-runtime, containerd runc BinaryName)");
  cmd->add_option("--config", opts->config, "The engine's config file (default: its usual path)");
  cmd->add_option("--config-version", opts->config_version,
                  "containerd: the version of a new config.toml (2: containerd 1.x, 3: 2.x; "
                  "default: from `containerd --version`); an existing file keeps its own")
      ->check(CLI::IsMember({2, 3}));
  cmd->add_option("--arch-runc", opts->arch_runc,
                  "Path of arch-runc (default: the one beside archctl, else "
                  "/usr/local/bin/arch-runc)");
  return [opts] { return run_install(*opts); };
}

}  // namespace arch::cli
