// Fuzz target: the rootfs diff reader, applying the input (tar or zstd tar) into a scratch
// rootfs with small limits; afterwards nothing may exist outside it.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "container/rootfs_diff.h"
#include "fuzz_dir.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzDir dir;
  if (dir.path().empty()) return 0;
  std::string input = dir.path() + "/diff.tar";
  std::string rootfs = dir.path() + "/rootfs";
  int fd = open(input.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0 || write(fd, data, size) != static_cast<ssize_t>(size)) abort();
  lseek(fd, 0, SEEK_SET);
  mkdir(rootfs.c_str(), 0755);
  (void)arch::apply_rootfs_diff(fd, rootfs, {1 << 20, 256});
  close(fd);
  struct stat st {};
  // Entries may only land inside the rootfs; the scratch dir holds nothing else.
  std::string escape = dir.path() + "/escape";
  if (lstat(escape.c_str(), &st) == 0) __builtin_trap();
  return 0;
}
