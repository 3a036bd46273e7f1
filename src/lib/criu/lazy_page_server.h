// LazyPageServer: a lazy restore whose pages come from ARCH's page server, verified chunk by
// chunk as they are served, instead of from a checkpoint verified whole before the restore.
//
// Before `runc restore --lazy-pages`: every image but the pages is copied from the store
// into a private images directory (the restore's work dir, root-only), hashed as it is
// copied and compared with the sealed manifest; each pages image becomes a sparse file of
// its size holding only the chunks CRIU's restore reads itself (the non-lazy ranges:
// stacks, file-backed and shared memory), each verified before it is written. The lazy
// ranges are served by a page-server process forked from the caller: CRIU's lazy-pages
// daemon gets one end of a socket pair (`--page-server --ps-socket`), so nothing else can
// connect; the server reads the pages images from fds opened in the store and checks each
// chunk against its sealed digest before any byte of it leaves (criu/page_server.h).
//
// Lifetime and failure: the server lives in its own session, re-parented like the daemon
// (to the engine's subreaper) when the caller exits, and ends when the daemon closes the
// connection (every page in place, or the restored processes gone). After the restore the
// caller hands it the container's init (a pidfd, over a private socket). When it refuses a
// request (a chunk that does not match, a request outside the checkpoint, an error reading
// the store) it answers nothing more, kills the container's init with SIGKILL (in its own
// PID namespace, the whole container), waits for it to be gone, reports, and only then
// closes the connection: the daemon's exit would let the kernel fill missing pages with
// zeros, so it must not happen while a restored process can still run. A refusal before
// the container is known waits for it (or for the caller to give up); the faulting thread
// stays blocked meanwhile, and if the container never becomes known the connection is held
// (requests read, unanswered) until the daemon hangs up or closes the session, which it
// does only once every restored process is gone. What becomes of the checkpoint is the
// caller's `on_refusal` (the restore moves it aside: a restart must not meet it again).
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>

#include "base/error.h"
#include "base/unique_fd.h"
#include "criu/page_server.h"
#include "store/manifest.h"

namespace arch {

/// A verified checkpoint whose pages a lazy restore serves through ARCH's page server.
struct ServedPages {
  std::string checkpoint;              ///< The checkpoint directory (its images/ inside).
  const Manifest* manifest = nullptr;  ///< Its sealed manifest, with chunk digests.
  /// Called in the page server after a refusal, once the container is gone (or unknown),
  /// with the reason: records it and sets the checkpoint aside.
  std::function<void(const std::string&)> on_refusal;
  /// Hashes the pages images whole: a failed lazy attempt falls back to a plain restore,
  /// which reads them itself.
  std::function<Result<void>()> verify_pages;
  /// Where the pages images' bytes come from when they are not plain files in the
  /// checkpoint's images/ (encrypted at rest, or left on another node): given a pages
  /// image's name, its source. Unset: read from the file. The source is called before the
  /// fork (for the chunks CRIU's restore reads itself) and in the forked server afterwards.
  std::function<Result<PageChunkSource>(const std::string& name)> page_source;
};

/// Fills `dir` (created 0700; must not exist) as described above and returns the server of
/// the lazy ranges. Fails on any file that does not match the manifest.
Result<PageServer> prepare_served_images(const ServedPages& src, const std::string& dir);

/// The page-server process of one lazy restore. Killed (and reaped) on destruction unless
/// released.
class PageServerProcess {
 public:
  /// Forks the server on `sk` (the other end goes to the lazy-pages daemon). It appends
  /// its outcome to `log_path`.
  static Result<PageServerProcess> start(PageServer server, UniqueFd sk,
                                         const std::string& log_path,
                                         std::function<void(const std::string&)> on_refusal);
  PageServerProcess(PageServerProcess&&) noexcept = default;
  PageServerProcess& operator=(PageServerProcess&&) noexcept = default;
  ~PageServerProcess() { stop(); }

  [[nodiscard]] pid_t pid() const { return pid_; }
  /// Tells the server which process is the restored container's init.
  Result<void> hand_over(pid_t container_init);
  /// The restore succeeded: the server goes on alone.
  void release();
  /// Whether the server has already ended with its session over, every page served (a
  /// small restore's pages can all move before the container is handed over). Reaps it.
  bool ended_cleanly();
  /// SIGKILL and reap. No-op once released.
  void stop();

 private:
  PageServerProcess(pid_t pid, UniqueFd pidfd, UniqueFd control)
      : pid_(pid), pidfd_(std::move(pidfd)), control_(std::move(control)) {}
  pid_t pid_ = 0;
  UniqueFd pidfd_;
  UniqueFd control_;
};

/// The server's loop (the forked process runs it; exposed for tests): serves `sk` and
/// takes the container's pidfd from `control`; on a refusal, fails closed as described
/// above. Returns the message of its outcome.
std::string run_page_server(PageServer& server, int sk, int control,
                            const std::function<void(const std::string&)>& on_refusal);

}  // namespace arch
