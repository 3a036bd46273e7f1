// flush_staging(): bounded, stoppable writeback of a checkpoint's staging (see the header).
#include "container/staging_flush.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <deque>
#include <memory>

#include "base/unique_fd.h"
#include "store/manifest.h"

namespace arch {
namespace {

// A chunk submitted for writeback and not yet waited for.
struct Pending {
  std::shared_ptr<UniqueFd> file;
  off_t offset = 0, length = 0;
};

}  // namespace

FlushResult flush_staging(int dirfd, const std::function<bool()>& stop,
                          std::atomic<uint64_t>* written, const FlushOptions& options) {
  FlushResult out;
  const off_t chunk = std::max<off_t>(options.chunk, 4096);
  const off_t limit = std::max(options.in_flight, chunk);
  std::deque<Pending> pending;
  off_t submitted = 0;
  // Waits for the oldest chunk: on the store once its pages are written back.
  auto wait_oldest = [&] {
    Pending p = std::move(pending.front());
    pending.pop_front();
    (void)::sync_file_range(
        p.file->get(), p.offset, p.length,
        SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
    submitted -= p.length;
    out.bytes += static_cast<uint64_t>(p.length);
    if (written != nullptr) written->fetch_add(static_cast<uint64_t>(p.length));
  };
  // walk_checkpoint_dir() lists each directory from its start (list_directory rewinds):
  // a descriptor another walk has read to its end still shows every file.
  (void)walk_checkpoint_dir(dirfd, [&](const CheckpointEntry& e) -> Result<void> {
    if (out.stopped || !S_ISREG(e.st.st_mode) || e.st.st_size == 0) return {};
    auto file = std::make_shared<UniqueFd>(
        ::openat(e.parent_fd, e.name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!*file) return {};
    for (off_t off = 0; off < e.st.st_size; off += chunk) {
      if (stop()) {
        out.stopped = true;
        return {};
      }
      off_t len = std::min(chunk, e.st.st_size - off);
      (void)::sync_file_range(file->get(), off, len, SYNC_FILE_RANGE_WRITE);
      ++out.chunks;
      pending.push_back({file, off, len});
      submitted += len;
      while (submitted > limit && !pending.empty()) {
        if (stop()) {
          out.stopped = true;
          return {};
        }
        wait_oldest();
      }
    }
    return {};
  });
  while (!out.stopped && !pending.empty()) {
    if (stop()) {
      out.stopped = true;
      break;
    }
    wait_oldest();
  }
  return out;
}

}  // namespace arch
