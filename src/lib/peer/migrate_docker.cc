// MigrateDocker: Docker's record read and checked, the offer's "docker" part, the Docker CLI
// calls of both sides of a migration (see migrate_docker.h).
#include "peer/migrate_docker.h"

#include <fmt/core.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>

#include "base/process.h"
#include "managed/job_identity.h"
#include "managed/owner.h"

namespace arch {
namespace {

using nlohmann::json;

constexpr std::size_t kMaxEntries = 1024;     // env entries, labels, argv words
constexpr std::size_t kMaxValue = 32 * 1024;  // one of them
constexpr std::size_t kMaxImage = 512;

std::unexpected<Error> refuse(const std::string& why) {
  return fail(ErrorKind::kUnsupported,
              "the Docker container cannot be re-created on another node: " + why);
}

std::unexpected<Error> invalid(const std::string& why) {
  return fail(ErrorKind::kInvalidInput, "malformed Docker offer: " + why);
}

bool has_control(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) { return (c >= 0 && c < 0x20) || c == 0x7f; });
}

bool has_nul(std::string_view s) {
  return s.find('\0') != std::string_view::npos;
}

// Docker's own rule for container names: [a-zA-Z0-9][a-zA-Z0-9_.-]+ (at most 128 here).
bool is_docker_name(std::string_view s) {
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  return s.size() >= 2 && s.size() <= 128 && alnum(s.front()) &&
         std::all_of(s.begin(), s.end(),
                     [&](char c) { return alnum(c) || c == '_' || c == '.' || c == '-'; });
}

bool is_hostname(std::string_view s) {
  return !s.empty() && s.size() <= 253 && s.front() != '-' && s.front() != '.' &&
         std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '.';
         });
}

// An array of strings, null or absent: its strings; anything else is an error.
Result<std::vector<std::string>> strings_of(const json& parent, const char* key) {
  auto it = parent.find(key);
  if (it == parent.end() || it->is_null()) return std::vector<std::string>{};
  if (!it->is_array()) return fail(std::string(key) + " is not an array");
  std::vector<std::string> out;
  for (const auto& v : *it) {
    if (!v.is_string()) return fail(std::string(key) + " holds a value that is not a string");
    out.push_back(v.get<std::string>());
  }
  return out;
}

std::string string_of(const json& parent, const char* key) {
  auto it = parent.find(key);
  return it != parent.end() && it->is_string() ? it->get<std::string>() : std::string();
}

int64_t int_of(const json& parent, const char* key) {
  auto it = parent.find(key);
  return it != parent.end() && it->is_number_integer() ? it->get<int64_t>() : 0;
}

bool bool_of(const json& parent, const char* key) {
  auto it = parent.find(key);
  return it != parent.end() && it->is_boolean() && it->get<bool>();
}

// True when parent[key] is set to something other than null, false, "", [] or {}.
bool is_set(const json& parent, const char* key) {
  auto it = parent.find(key);
  if (it == parent.end() || it->is_null()) return false;
  if (it->is_boolean()) return it->get<bool>();
  if (it->is_string()) return !it->get_ref<const std::string&>().empty();
  if (it->is_array() || it->is_object()) return !it->empty();
  return true;
}

// What hostconfig.json sets that a re-created container would not get: the first such
// setting, named as `docker run` names it.
Result<void> refuse_uncarried(const json& host) {
  static const std::pair<const char*, const char*> kRefused[] = {
      {"Binds", "bind mounts (-v HOST:CONTAINER)"},
      {"Mounts", "mounts (--mount)"},
      {"Tmpfs", "tmpfs mounts (--tmpfs)"},
      {"VolumesFrom", "--volumes-from"},
      {"PortBindings", "published ports (-p)"},
      {"Privileged", "--privileged"},
      {"CapAdd", "--cap-add"},
      {"CapDrop", "--cap-drop"},
      {"Devices", "devices (--device)"},
      {"DeviceRequests", "--gpus"},
      {"SecurityOpt", "--security-opt"},
      {"Links", "--link"},
      {"PidMode", "--pid"},
      {"UTSMode", "--uts"},
      {"UsernsMode", "--userns"},
      {"VolumeDriver", "--volume-driver"},
      {"ExtraHosts", "--add-host"},
      {"Dns", "--dns"},
      {"DnsOptions", "--dns-option"},
      {"DnsSearch", "--dns-search"},
      {"Sysctls", "--sysctl"},
      {"CgroupParent", "--cgroup-parent"},
  };
  for (const auto& [key, flag] : kRefused) {
    if (is_set(host, key)) return refuse(std::string(flag) + " are not carried");
  }
  std::string ipc = string_of(host, "IpcMode");
  if (!ipc.empty() && ipc != "private" && ipc != "shareable") {
    return refuse("--ipc " + ipc.substr(0, 80) + " is not carried");
  }
  return {};
}

Result<void> read_restart(const json& host, DockerContainerSpec& spec) {
  auto it = host.find("RestartPolicy");
  if (it == host.end() || it->is_null()) return {};
  if (!it->is_object()) return fail("RestartPolicy is not an object");
  std::string name = string_of(*it, "Name");
  spec.restart = name.empty() ? "no" : name;
  spec.restart_max = int_of(*it, "MaximumRetryCount");
  return {};
}

}  // namespace

Result<DockerContainerSpec> parse_docker_container(std::string_view config_text,
                                                   std::string_view host_text) {
  auto doc = json::parse(config_text, nullptr, false);
  auto host = json::parse(host_text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return fail("config.v2.json is not a JSON object");
  if (host.is_discarded() || !host.is_object()) {
    return fail("hostconfig.json is not a JSON object");
  }
  auto cfg = doc.find("Config");
  if (cfg == doc.end() || !cfg->is_object()) return fail("config.v2.json has no Config object");
  DockerContainerSpec spec;
  spec.name = string_of(doc, "Name");
  if (!spec.name.empty() && spec.name.front() == '/') spec.name.erase(0, 1);
  spec.image = string_of(*cfg, "Image");
  auto entrypoint = strings_of(*cfg, "Entrypoint");
  auto cmd = strings_of(*cfg, "Cmd");
  auto env = strings_of(*cfg, "Env");
  for (const auto* r : {&entrypoint, &cmd, &env}) {
    if (!*r) return std::unexpected(r->error().wrap("config.v2.json Config"));
  }
  spec.args = std::move(*entrypoint);
  spec.args.insert(spec.args.end(), cmd->begin(), cmd->end());
  spec.env = std::move(*env);
  std::string wd = string_of(*cfg, "WorkingDir");
  spec.cwd = wd.empty() ? "/" : wd;
  spec.user = string_of(*cfg, "User");
  spec.hostname = string_of(*cfg, "Hostname");
  auto labels = parse_docker_labels(config_text);
  if (!labels) return std::unexpected(labels.error().wrap("config.v2.json"));
  spec.labels = std::move(*labels);
  if (bool_of(*cfg, "Tty")) return refuse("a terminal (-t) is not carried");
  if (bool_of(*cfg, "OpenStdin")) return refuse("an open stdin (-i) is not carried");
  if (is_set(doc, "MountPoints")) {
    return refuse("mounts (volumes, binds, tmpfs) are not carried: their data stays here");
  }
  if (auto ok = refuse_uncarried(host); !ok) return std::unexpected(ok.error());
  if (auto ok = read_restart(host, spec); !ok) {
    return std::unexpected(ok.error().wrap("hostconfig.json"));
  }
  spec.network = string_of(host, "NetworkMode");
  if (spec.network != "" && spec.network != "default" && spec.network != "bridge" &&
      spec.network != "none" && spec.network != "host") {
    return refuse("network " + spec.network.substr(0, 80) +
                  " is not carried (default, bridge, none and host are)");
  }
  spec.memory = int_of(host, "Memory");
  spec.nano_cpus = int_of(host, "NanoCpus");
  spec.shm_size = int_of(host, "ShmSize");
  spec.read_only = bool_of(host, "ReadonlyRootfs");
  spec.init = bool_of(host, "Init");
  spec.auto_remove = bool_of(host, "AutoRemove");
  if (auto ok = validate_docker_spec(spec); !ok) return std::unexpected(ok.error());
  return spec;
}

Result<void> validate_docker_spec(const DockerContainerSpec& s) {
  if (!is_docker_name(s.name)) {
    return invalid("container name '" + s.name.substr(0, 80) +
                   "' is not [A-Za-z0-9][A-Za-z0-9_.-]+ (at most 128)");
  }
  if (s.image.empty() || s.image.size() > kMaxImage || s.image.front() == '-' ||
      has_control(s.image) || s.image.find(' ') != std::string::npos) {
    return invalid("image name");
  }
  if (s.args.empty() || s.args.size() > kMaxEntries || s.args.front().empty()) {
    return invalid("no process, or too many arguments");
  }
  for (const auto& a : s.args) {
    if (a.size() > kMaxValue || has_nul(a)) return invalid("an argument");
  }
  if (s.env.size() > kMaxEntries) return invalid("too many environment variables");
  for (const auto& e : s.env) {
    // "NAME" alone would make the CLI copy its own (archd's) variable of that name.
    auto eq = e.find('=');
    if (eq == std::string::npos || eq == 0 || e.size() > kMaxValue || has_nul(e) ||
        has_control(std::string_view(e).substr(0, eq))) {
      return invalid("an environment entry that is not NAME=value");
    }
  }
  if (s.cwd.empty() || s.cwd.front() != '/' || s.cwd.size() > 4096 || has_control(s.cwd)) {
    return invalid("working directory");
  }
  if (s.user.size() > 256 || has_control(s.user) || (!s.user.empty() && s.user.front() == '-')) {
    return invalid("user");
  }
  if (!s.hostname.empty() && !is_hostname(s.hostname)) return invalid("hostname");
  if (s.labels.size() > kMaxEntries) return invalid("too many labels");
  for (const auto& [k, v] : s.labels) {
    if (k.empty() || k.size() > 1024 || k.find('=') != std::string::npos || has_control(k) ||
        v.size() > kMaxValue || has_nul(v)) {
      return invalid("a label name or value");
    }
  }
  static const char* kPolicies[] = {"no", "always", "unless-stopped", "on-failure"};
  if (std::none_of(std::begin(kPolicies), std::end(kPolicies),
                   [&](const char* p) { return s.restart == p; }) ||
      s.restart_max < 0 || s.restart_max > 1000000 ||
      (s.restart_max != 0 && s.restart != "on-failure")) {
    return invalid("restart policy");
  }
  if (s.network != "" && s.network != "default" && s.network != "bridge" && s.network != "none" &&
      s.network != "host") {
    return invalid("network mode");
  }
  if (s.memory < 0 || s.nano_cpus < 0 || s.shm_size < 0) return invalid("a negative limit");
  if (s.auto_remove && s.restart != "no") return invalid("--rm with a restart policy");
  return {};
}

Result<std::optional<DockerContainerSpec>> docker_container_of(const ContainerRecord& rec,
                                                               const NodeConfig& config) {
  if (rec.ns != kDockerNamespace) return std::optional<DockerContainerSpec>();
  // No Docker on this node (its data root absent): `ctr -n moby` containers are containerd's.
  if (struct stat st{}; ::stat(config.docker_data_root.c_str(), &st) != 0 && errno == ENOENT) {
    return std::optional<DockerContainerSpec>();
  }
  auto config_text = read_docker_record(config.docker_data_root, rec.id, kDockerConfigFile);
  if (!config_text) return std::unexpected(config_text.error());
  if (!*config_text) return std::optional<DockerContainerSpec>();  // ctr -n moby, not Docker
  auto host_text = read_docker_record(config.docker_data_root, rec.id, kDockerHostConfigFile);
  if (!host_text) return std::unexpected(host_text.error());
  if (!*host_text) return fail("Docker's record of " + rec.id + " has no hostconfig.json");
  auto spec = parse_docker_container(**config_text, **host_text);
  if (!spec) return std::unexpected(spec.error().wrap("Docker's record of " + rec.id));
  // ECS tasks are orchestrated: the ECS agent owns the container (and would start another).
  auto ecs = ecs_owner(spec->labels);
  if (!ecs || !ecs->empty() || rec.owner != kDockerNamespace) {
    return fail(ErrorKind::kUnsupported,
                "container " + rec.id + " is an ECS task (owner " + rec.owner +
                    "): orchestrated containers are not re-created through Docker");
  }
  if (rec.key_source.empty() || rec.key_source == kKeyFromContainerId) {
    spec->env.push_back(std::string(kKeyFromJobId) + "=" + rec.key);
  }
  return std::optional<DockerContainerSpec>(std::move(*spec));
}

json docker_offer(const ContainerRecord& rec, const DockerContainerSpec& s) {
  return json{{"op", "migrate.offer"},
              {"engine", kDockerEngine},
              {"ns", rec.ns},
              {"id", rec.id},
              {"image", s.image},
              {"args", s.args},
              {"env", s.env},
              {"cwd", s.cwd},
              {"docker",
               {{"name", s.name},
                {"user", s.user},
                {"hostname", s.hostname},
                {"labels", s.labels},
                {"restart", s.restart},
                {"restart_max", s.restart_max},
                {"network", s.network},
                {"memory", s.memory},
                {"nano_cpus", s.nano_cpus},
                {"shm_size", s.shm_size},
                {"read_only", s.read_only},
                {"init", s.init},
                {"auto_remove", s.auto_remove}}}};
}

Result<DockerContainerSpec> parse_docker_offer(const json& j) {
  DockerContainerSpec s;
  try {
    if (j.at("ns").get<std::string>() != kDockerNamespace) {
      return invalid("a Docker container's namespace is moby");
    }
    s.image = j.at("image").get<std::string>();
    s.args = j.at("args").get<std::vector<std::string>>();
    s.env = j.at("env").get<std::vector<std::string>>();
    s.cwd = j.at("cwd").get<std::string>();
    const auto& d = j.at("docker");
    s.name = d.at("name").get<std::string>();
    s.user = d.at("user").get<std::string>();
    s.hostname = d.at("hostname").get<std::string>();
    if (!d.at("labels").is_object()) return invalid("labels");
    for (const auto& [k, v] : d.at("labels").items()) s.labels.emplace(k, v.get<std::string>());
    s.restart = d.at("restart").get<std::string>();
    s.restart_max = d.at("restart_max").get<int64_t>();
    s.network = d.at("network").get<std::string>();
    s.memory = d.at("memory").get<int64_t>();
    s.nano_cpus = d.at("nano_cpus").get<int64_t>();
    s.shm_size = d.at("shm_size").get<int64_t>();
    s.read_only = d.at("read_only").get<bool>();
    s.init = d.at("init").get<bool>();
    s.auto_remove = d.at("auto_remove").get<bool>();
  } catch (const json::exception& e) {
    return invalid(e.what());
  }
  if (auto ok = validate_docker_spec(s); !ok) return std::unexpected(ok.error());
  return s;
}

std::vector<std::string> docker_create_args(const DockerContainerSpec& s,
                                            const std::string& runtime) {
  std::vector<std::string> a = {"create", "--name=" + s.name, "--runtime=" + runtime,
                                "--workdir=" + s.cwd, "--entrypoint=" + s.args.front()};
  for (const auto& e : s.env) a.push_back("--env=" + e);
  for (const auto& [k, v] : s.labels) a.push_back("--label=" + k + "=" + v);
  if (!s.user.empty()) a.push_back("--user=" + s.user);
  // Docker refuses a hostname with the host's network (it is the host's then).
  if (!s.hostname.empty() && s.network != "host") a.push_back("--hostname=" + s.hostname);
  if (s.restart != "no") {
    a.push_back("--restart=" + s.restart +
                (s.restart_max > 0 ? ":" + std::to_string(s.restart_max) : ""));
  }
  if (s.network == "none" || s.network == "host") a.push_back("--network=" + s.network);
  if (s.memory > 0) a.push_back(fmt::format("--memory={}b", s.memory));
  if (s.nano_cpus > 0) {
    a.push_back(
        fmt::format("--cpus={}.{:09d}", s.nano_cpus / 1000000000, s.nano_cpus % 1000000000));
  }
  if (s.shm_size > 0) a.push_back(fmt::format("--shm-size={}b", s.shm_size));
  if (s.read_only) a.push_back("--read-only");
  if (s.init) a.push_back("--init");
  if (s.auto_remove) a.push_back("--rm");
  a.push_back("--");
  a.push_back(s.image);
  a.insert(a.end(), s.args.begin() + 1, s.args.end());
  return a;
}

// ------------------------------------------------------------------ the docker CLI

namespace {

Result<ProcessResult> docker(const NodeConfig& config, std::vector<std::string> args,
                             std::chrono::seconds timeout) {
  std::vector<std::string> argv = {config.peers.migrate_docker};
  if (!config.peers.migrate_docker_host.empty()) {
    argv.push_back("--host=" + config.peers.migrate_docker_host);
  }
  argv.insert(argv.end(), args.begin(), args.end());
  ProcessOptions opts;
  opts.timeout = timeout;
  auto r = run_process(argv, opts);
  if (!r) return std::unexpected(r.error().wrap("docker " + args.front()));
  return r;
}

std::string first_line(const std::string& s) {
  auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}

std::string trimmed(const std::string& s) {
  auto b = s.find_first_not_of(" \t\r\n");
  auto e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

std::string policy_text(const DockerContainerSpec& s) {
  return s.restart + (s.restart_max > 0 ? ":" + std::to_string(s.restart_max) : "");
}

}  // namespace

Result<void> check_docker_destination(const NodeConfig& config, const DockerContainerSpec& spec) {
  const std::string node = peer_node_name(config);
  if (::access(config.peers.migrate_docker.c_str(), X_OK) != 0) {
    return fail("[peers] migrate_docker " + config.peers.migrate_docker +
                " is not executable on node " + node);
  }
  auto info = docker(config, {"info", "--format={{json .Runtimes}}"}, std::chrono::seconds(30));
  if (!info) return std::unexpected(info.error());
  if (info->exit_code != 0) {
    return fail(ErrorKind::kUnavailable, "Docker on node " + node + " (" +
                                             config.peers.migrate_docker_host +
                                             ") does not answer: " + first_line(info->err));
  }
  auto runtimes = json::parse(info->out, nullptr, false);
  if (!runtimes.is_object() || !runtimes.contains(config.peers.migrate_docker_runtime)) {
    return fail("Docker on node " + node + " has no runtime " +
                config.peers.migrate_docker_runtime + " ([peers] migrate_docker_runtime)");
  }
  auto image = docker(config, {"image", "inspect", "--format={{.Id}}", "--", spec.image},
                      std::chrono::seconds(30));
  if (!image) return std::unexpected(image.error());
  if (image->exit_code != 0) {
    return fail(fmt::format("image {} is not in Docker on node {} (pull or load it there first)",
                            spec.image, node));
  }
  auto named = docker(config, {"container", "inspect", "--format={{.Id}}", "--", spec.name},
                      std::chrono::seconds(30));
  if (!named) return std::unexpected(named.error());
  if (named->exit_code == 0) {
    return fail(ErrorKind::kConflict,
                "a Docker container named " + spec.name + " exists on node " + node);
  }
  return {};
}

Result<std::string> create_docker_container(const NodeConfig& config,
                                            const DockerContainerSpec& spec) {
  auto created = docker(config, docker_create_args(spec, config.peers.migrate_docker_runtime),
                        std::chrono::seconds(120));
  if (!created) return std::unexpected(created.error());
  std::string id = trimmed(created->out);
  if (created->exit_code != 0 || !validate_docker_id(id)) {
    // Nothing is removed by name: a failed create made nothing, and the name may be another
    // container's that took it since the offer was checked.
    return fail("docker create: " + first_line(created->err.empty() ? created->out : created->err));
  }
  auto started = docker(config, {"start", "--", id}, std::chrono::seconds(300));
  if (!started || started->exit_code != 0) {
    remove_docker_container(config, id);
    return fail("docker start: " +
                (started ? first_line(started->err) : started.error().message()));
  }
  return id;
}

void remove_docker_container(const NodeConfig& config, const std::string& id_or_name) {
  if (!validate_docker_id(id_or_name) && !is_docker_name(id_or_name)) return;
  (void)docker(config, {"rm", "--force", "--", id_or_name}, std::chrono::seconds(60));
}

Result<DockerRestartHold> DockerRestartHold::hold(const NodeConfig& config, const std::string& id,
                                                  const DockerContainerSpec& spec) {
  if (spec.restart == "no") return DockerRestartHold(config, id, "");
  if (auto ok = validate_docker_id(id); !ok) return std::unexpected(ok.error());
  auto r = docker(config, {"update", "--restart=no", "--", id}, std::chrono::seconds(30));
  if (!r) return std::unexpected(r.error());
  if (r->exit_code != 0) {
    return fail(
        "docker update --restart=no (so that dockerd does not restart the container "
        "here once it moved): " +
        first_line(r->err));
  }
  return DockerRestartHold(config, id, policy_text(spec));
}

DockerRestartHold::DockerRestartHold(DockerRestartHold&& o) noexcept
    : config_(o.config_), id_(std::move(o.id_)), policy_(std::move(o.policy_)) {
  o.policy_.clear();
}

DockerRestartHold::~DockerRestartHold() {
  if (policy_.empty()) return;
  (void)docker(*config_, {"update", "--restart=" + policy_, "--", id_}, std::chrono::seconds(30));
}

}  // namespace arch
