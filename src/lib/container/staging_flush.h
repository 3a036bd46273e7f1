// flush_staging(): a checkpoint's images written back to the store before its commit, in
// bounded steps that a stop can interrupt (finalize's deadline covers the flush too).
//
// A dump whose pages land in the page cache (a node with free memory) ends in well under a
// second; the store's rate then shows only when the pages are written back. Submitting all
// of them at once (sync_file_range over whole files, or the commit's fsyncs) would leave
// nothing to stop: unlinking a page under writeback waits for it, so a stopped checkpoint's
// staging could only be removed after the store had taken every page. Here at most
// `in_flight` bytes are under writeback at any time; a stop between two chunks leaves only
// those to wait for, and the dirty pages not yet submitted are dropped with the staging.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>

namespace arch {

struct FlushOptions {
  off_t chunk = off_t{8} << 20;       ///< Bytes per sync_file_range step.
  off_t in_flight = off_t{16} << 20;  ///< Bytes submitted and not yet waited for, at most.
};

/// What flush_staging() did.
struct FlushResult {
  bool stopped = false;  ///< `stop` said yes before every file was on the store.
  uint64_t bytes = 0;    ///< Bytes of regular files waited for (on the store).
  uint64_t chunks = 0;   ///< Chunks submitted.
};

/// Writes back every regular file under `dirfd` (walked from its start, whatever the
/// descriptor's offset, without following links) in file order, `options.chunk` at a time
/// with at most `options.in_flight` bytes submitted but not yet on the store, and waits
/// for the last. `stop` is asked before each chunk and each wait: when it says yes the
/// flush ends at once (what was submitted stays submitted). `written`, when given, grows by
/// each chunk's bytes once that chunk is on the store. Best effort: write errors are left
/// to the commit's fsyncs, which report them.
FlushResult flush_staging(int dirfd, const std::function<bool()>& stop,
                          std::atomic<uint64_t>* written = nullptr,
                          const FlushOptions& options = {});

}  // namespace arch
