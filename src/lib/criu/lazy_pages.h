// Lazy restore: CRIU's lazy pages (post-copy through userfaultfd), so a restored container
// runs before its memory has been read; a `criu lazy-pages` daemon serves each page from
// the checkpoint on first touch, copies the rest in the background and then exits.
//
// Wiring with runc 1.1 and CRIU 4.x: `criu lazy-pages -D IMAGES -W WORK --daemon --pidfile F`
// listens on WORK/lazy-pages.socket (a relative name: every CRIU process works in its work
// dir), and `runc restore --lazy-pages --work-path WORK` makes the restoring CRIU connect
// there and hand over each restored task's userfaultfd. --daemon re-parents the daemon to
// the engine's subreaper, so a successful restore leaves it running on its own; it ends when
// every page is in place or the restored processes are gone. On any failure it is killed
// before the caller falls back to a plain restore.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"
#include "criu/lazy_page_server.h"

namespace arch {

class RuncClient;
struct NodeConfig;

/// Whether a restore should be lazy: the container's ARCH_LAZY_RESTORE ("1"/"true" or
/// "0"/"false") wins over the node's [restore] lazy_pages; anything else keeps the node's.
bool lazy_restore_wanted(bool node_default, std::string_view container_env_value);
/// The same for a container: [restore] lazy_pages and ARCH_LAZY_RESTORE in `bundle`'s spec.
bool lazy_restore_wanted(const NodeConfig& config, const std::string& bundle);

/// The CRIU binary: `configured` when set, else `criu` on $PATH (what runc would run).
Result<std::string> find_criu(const std::string& configured);

/// A running `criu lazy-pages` daemon. Killed (and waited for) on destruction unless
/// released; held through a pidfd, so a recycled pid is never signalled.
class LazyPagesDaemon {
 public:
  /// Starts the daemon for `images` with work dir `work` (which must exist) and returns
  /// once it listens on `work`/lazy-pages.socket. With `page_server_fd` (>= 0), it takes
  /// the pages from the page server on that socket (`--page-server --ps-socket`,
  /// criu/lazy_page_server.h) instead of reading the pages images.
  static Result<LazyPagesDaemon> start(const std::string& criu, const std::string& images,
                                       const std::string& work, int page_server_fd = -1);

  LazyPagesDaemon(LazyPagesDaemon&&) noexcept = default;
  LazyPagesDaemon& operator=(LazyPagesDaemon&&) noexcept = default;
  ~LazyPagesDaemon() { stop(); }

  [[nodiscard]] pid_t pid() const { return pid_; }
  /// The restore succeeded: leave the daemon to serve the pages and end by itself.
  void release() { pidfd_.reset(); }
  /// SIGKILL and wait (up to a few seconds) until it is gone. No-op once released.
  void stop();

 private:
  LazyPagesDaemon(pid_t pid, UniqueFd pidfd) : pid_(pid), pidfd_(std::move(pidfd)) {}
  pid_t pid_ = 0;
  UniqueFd pidfd_;
};

/// The lazy work dir of a container's restore: `bundle`/arch-restore/lazy.
std::string lazy_work_dir(const std::string& bundle);

/// Waits until the lazy-pages daemon serving the container in `bundle` (if any) has put
/// every page in place and exited. A checkpoint must call this before it freezes the
/// container: CRIU saves only the pages present, so a dump taken while pages are still
/// being served loses the missing ones (they come back as zeros). No daemon: returns at
/// once. Fails when it is still serving after `timeout`.
Result<void> wait_for_lazy_pages(const std::string& bundle, std::chrono::milliseconds timeout);

/// How a restore ran, for the log and the benchmarks.
struct RestoreMode {
  bool lazy = false;         ///< The processes run on lazily served pages.
  bool served = false;       ///< ...served by ARCH's page server, verified per chunk.
  std::string lazy_failure;  ///< Why a wanted lazy restore fell back to a plain one.
};

/// `runc restore` of `id` from `images`, lazily when `lazy`: lazy-pages daemon (CRIU from
/// find_criu(`criu`)), then `runc restore --lazy-pages`. A lazy attempt that fails (no
/// CRIU, daemon does not start, CRIU refuses) is cleaned up (daemon killed, half-made
/// container deleted) and followed by a plain restore, whose result is returned. `flags`
/// are the create-derived restore flags. The lazy attempt works in `work`/lazy.
/// With `served` (a checkpoint whose pages images were not hashed yet), the lazy attempt
/// goes through ARCH's page server (criu/lazy_page_server.h), and a fallback to a plain
/// restore first hashes the pages images (served->verify_pages).
Result<RestoreMode> restore_maybe_lazily(const RuncClient& runc, const std::string& criu,
                                         const std::string& id, const std::string& images,
                                         const std::string& work,
                                         const std::vector<std::string>& flags,
                                         const std::string& log_file, bool lazy,
                                         const ServedPages* served = nullptr);

}  // namespace arch
