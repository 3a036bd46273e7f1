// DumpProgress: how far a running checkpoint has got (bytes its store's device took, or
// bytes in its staging directory), and ending the CRIU of a dump that will not finish.
//
// Progress is read from the block device under the staging directory (sectors written,
// /sys/dev/block/MAJ:MIN/stat, since the watch began): that counts what the store took,
// not what sits dirty in the page cache (a dump writes its images into memory at memory
// speed; the store's rate shows only in the writeback). A store without a block device
// (FUSE, network file systems, btrfs) is measured by the bytes allocated under the staging
// directory, but at most the bytes the checkpoint knows are written back (its writeback
// pump and flush, checkpoint.h): a file system with a page cache counts dirty pages as
// allocated, and a dump that went to memory would look finished while its flush to the
// store has hardly begun.
//
// Ending a dump: SIGKILL to the `criu` whose parent is the `runc checkpoint` writing into
// the given images directory, through a pidfd taken after both were identified. That runc
// must be a child of this process (the one that started the dump): a container's process
// giving itself the same command line, or a `criu` one under it, is never signalled. CRIU's
// parasite, when its control socket closes, returns each task to the state it was seized
// in (rt_sigreturn): the container only has to be thawed. (A dump holding CRIU's network
// lock is never ended this way: its iptables rules would stay.)
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "base/error.h"

namespace arch {

/// Bytes written for a checkpoint into `dir` since construction.
class DumpProgress {
 public:
  explicit DumpProgress(std::string dir);
  /// Bytes since construction; never decreases. Without a device counter, at most
  /// `written_back` (the bytes the checkpoint knows are on the store).
  uint64_t bytes(uint64_t written_back = UINT64_MAX);
  /// Whether the device counter is used (false: the directory's allocated bytes).
  [[nodiscard]] bool from_device() const { return !device_stat_.empty(); }

 private:
  uint64_t read_now() const;
  std::string dir_;
  std::string device_stat_;  // /sys/dev/block/M:m/stat, or empty
  uint64_t base_ = 0, last_ = 0;
};

/// The pids of the `criu` processes whose parent is a `runc ... checkpoint --image-path
/// <images>` started by this process (normally one).
std::vector<pid_t> dump_criu_pids(const std::string& images);

/// SIGKILL to the CRIU of the dump into `images`; the number of processes signalled.
Result<int> end_dump_criu(const std::string& images);

}  // namespace arch
