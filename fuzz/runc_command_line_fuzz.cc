// Fuzz target: the runc argv parser (arguments separated by NUL bytes in the input).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/runc_command_line.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> args = {"runc"};
  for (size_t start = 0; start <= text.size();) {
    size_t end = text.find('\0', start);
    if (end == std::string::npos) end = text.size();
    args.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  auto cl = arch::parse_runc_command_line(argv);
  (void)cl.container_id();
  (void)cl.flag("bundle");
  (void)cl.flag_values("preserve-fds");
  (void)cl.flag_set("detach");
  (void)arch::subcommand_name(cl.subcommand);
  (void)arch::parse_go_bool(args.back());
  return 0;
}
