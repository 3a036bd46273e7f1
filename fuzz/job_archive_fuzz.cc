// Fuzz target: the job archive reader (import_archive) with small caps.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_dir.h"
#include "jobs/job_archive.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzDir dir;
  if (dir.path().empty()) return 0;
  std::string input = dir.path() + "/in.tar";
  std::string out = dir.path() + "/out";
  int fd = open(input.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0 || write(fd, data, size) != static_cast<ssize_t>(size)) abort();
  close(fd);
  mkdir(out.c_str(), 0700);
  (void)arch::import_archive(input, out, {1 << 20, 256});
  std::string escape = dir.path() + "/escape";
  struct stat st {};
  if (lstat(escape.c_str(), &st) == 0) __builtin_trap();
  return 0;
}
