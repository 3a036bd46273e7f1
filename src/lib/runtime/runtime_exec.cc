// RuntimeExec: execve into runc, log routing.
#include "runtime/runtime_exec.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

namespace arch {

RuncLog log_for_call(const RuncCommandLine& cl, const NodeConfig& config) {
  if (!cl.log.empty()) {
    return RuncLog(std::string(cl.log), cl.json_log() ? LogFormat::kJson : LogFormat::kText,
                   config.log_level, 0644);
  }
  return RuncLog(config.log_file, LogFormat::kJson, config.log_level, 0600);
}

std::string describe_call(const RuncCommandLine& cl) {
  std::string what = "arch-runc: ";
  what += cl.subcommand_word.empty() ? std::string_view("(no subcommand)") : cl.subcommand_word;
  if (auto id = cl.container_id(); !id.empty()) {
    what += ' ';
    what += id;
  }
  return what;
}

namespace {

// A script starts with "#!": the only kind of runtime that is a wrapper in practice.
bool is_script(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char head[2] = {};
  bool script = ::read(fd, head, 2) == 2 && head[0] == '#' && head[1] == '!';
  ::close(fd);
  return script;
}

}  // namespace

bool is_runtime_loop() {
  const char* marker = std::getenv(kHopVariable);
  if (marker == nullptr) return false;
  char* end = nullptr;
  long pid = std::strtol(marker, &end, 10);
  if (end == marker || *end != '\0') return false;
  return pid == ::getpid() || pid == ::getppid();
}

int exec_runtime(const std::string& runtime, const char* const* argv, const RuncLog& log,
                 const RuncCommandLine& cl) {
  std::vector<const char*> envp;
  const std::string prefix = std::string(kHopVariable) + "=";
  for (char** e = environ; *e != nullptr; ++e) {
    if (!std::string_view(*e).starts_with(prefix)) envp.push_back(*e);
  }
  std::string hop = std::string(kHopVariable) + "=" + std::to_string(::getpid());
  if (is_script(runtime)) envp.push_back(hop.c_str());
  envp.push_back(nullptr);
  // argv is handed over untouched, argv[0] included; only the binary changes.
  ::execve(runtime.c_str(), const_cast<char* const*>(argv), const_cast<char* const*>(envp.data()));
  int err = errno;
  std::string msg = describe_call(cl) + ": exec " + runtime + ": " + std::strerror(err);
  log.error(msg);
  std::fprintf(stderr, "%s\n", msg.c_str());
  return err == ENOENT ? 127 : 126;
}

std::string absolute_bundle(const RuncCommandLine& cl) {
  std::string bundle(cl.flag("bundle").value_or(""));
  if (!bundle.empty() && bundle.front() == '/') return bundle;
  char cwd[4096];
  if (::getcwd(cwd, sizeof cwd) == nullptr) return bundle;
  return bundle.empty() ? std::string(cwd) : std::string(cwd) + "/" + bundle;
}

}  // namespace arch
