// RuntimeExec: execve into runc, log routing.
#include "runtime/runtime_exec.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
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

int exec_runtime(const std::string& runtime, const char* const* argv, const RuncLog& log,
                 const RuncCommandLine& cl) {
  std::vector<const char*> envp;
  for (char** e = environ; *e != nullptr; ++e) envp.push_back(*e);
  std::string hop = std::string(kHopVariable) + "=1";
  envp.push_back(hop.c_str());
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
