// PageServer: ARCH's side of CRIU's page-server protocol, serving a checkpoint's lazy pages
// to `criu lazy-pages --page-server --ps-socket FD`, every byte read from a pages image only
// after the chunk that holds it matched its sealed SHA-256 (store/manifest.h: chunk digests).
//
// Protocol (CRIU criu/page-xfer.c, lazy side in criu/uffd.c), one stream socket, host byte
// order: each request is a struct page_server_iov {u32 cmd; (4 bytes padding) u64 nr_pages;
// u64 vaddr; u64 dst_id} of 32 bytes. The lazy daemon sends
//   PS_IOV_GET (7): nr_pages pages at vaddr of task dst_id (the task's pid in the images);
//     answered with a header {PS_IOV_ADD_F | PE_PRESENT << 16, n, vaddr, dst_id} and n pages,
//     n <= nr_pages (the rest of the range is asked again later);
//   PS_IOV_CLOSE (0x1023) / PS_IOV_FORCE_CLOSE (0x1024) when it is done: answered with an
//     int32 0, then the session ends.
// Anything else (another command, flags on a command, a task without a pagemap, an address
// outside a lazy present range, more than kMaxRequestPages) is refused: the session ends
// with an error and nothing is served for it. A chunk whose digest does not match is never
// served (error code EBADMSG).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"
#include "criu/page_server_protocol.h"
#include "criu/pagemap_image.h"

namespace arch {

/// The largest request served: CRIU's own background transfer limit (4 MiB).
inline constexpr uint64_t kMaxRequestPages = 1024;

/// Where a pages image's bytes come from when not from a local fd (a stream decrypting an
/// encrypted image, another node over the peer channel): exactly `len` bytes at `offset`
/// (a chunk's start), or an error. What it returns is still checked against the sealed
/// digest before any byte is served, so a source is never trusted.
using PageChunkSource = std::function<Result<std::vector<char>>(uint64_t offset, std::size_t len)>;

/// A pages image read through its sealed chunk digests. The last chunk may be short. At most
/// kCachedChunks verified chunks are kept in memory (their contents, not a mark: a file
/// changed after a check is never trusted).
class VerifiedPagesFile {
 public:
  static constexpr std::size_t kCachedChunks = 4;
  /// `chunk_sha256`: lower-case hex, one per chunk of `size` bytes (checked here).
  static Result<VerifiedPagesFile> make(UniqueFd fd, std::string name, uint64_t size,
                                        uint64_t chunk_size,
                                        const std::vector<std::string>& chunk_sha256);
  /// The same with the chunks read from `source` instead of an fd (fd() is then -1).
  static Result<VerifiedPagesFile> make(PageChunkSource source, std::string name, uint64_t size,
                                        uint64_t chunk_size,
                                        const std::vector<std::string>& chunk_sha256);
  /// Copies `len` bytes at `offset` into `out`. Error code EBADMSG when a chunk does not
  /// match its digest (nothing is copied from it), ERANGE when outside the file.
  Result<void> read(uint64_t offset, char* out, uint64_t len);
  /// The verified contents of chunk `index`.
  Result<const std::vector<char>*> chunk(uint64_t index);
  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] uint64_t size() const { return size_; }
  [[nodiscard]] uint64_t chunk_size() const { return chunk_size_; }
  [[nodiscard]] uint64_t chunks_read() const { return chunks_read_; }
  [[nodiscard]] int fd() const { return fd_.get(); }

 private:
  VerifiedPagesFile() = default;
  struct Cached {
    uint64_t index = 0;
    uint64_t used = 0;
    std::vector<char> data;
  };
  UniqueFd fd_;
  PageChunkSource source_;
  std::string name_;
  uint64_t size_ = 0;
  uint64_t chunk_size_ = 0;
  std::vector<std::array<unsigned char, 32>> digests_;
  std::vector<Cached> cache_;
  uint64_t tick_ = 0;
  uint64_t chunks_read_ = 0;
};

/// What a session did.
struct PageServerStats {
  uint64_t requests = 0;
  uint64_t pages_served = 0;
  bool closed_by_command = false;  ///< The daemon said it was done (else: it hung up).
};

/// Serves the lazy pages of one restore.
class PageServer {
 public:
  /// `pagemaps`: task pid (as in the images) → its pagemap; `pages`: pages_id → its image.
  PageServer(std::map<uint64_t, Pagemap> pagemaps, std::map<uint32_t, VerifiedPagesFile> pages)
      : pagemaps_(std::move(pagemaps)), pages_(std::move(pages)) {}

  /// Reads and answers one request from `sk`. true: go on; false: the session is over (the
  /// peer hung up between requests or asked to close). An error: refused (see above); the
  /// caller must end the session without answering anything more.
  Result<bool> serve_one(int sk);
  /// serve_one() until the session is over or refused.
  Result<void> serve(int sk);
  [[nodiscard]] const PageServerStats& stats() const { return stats_; }
  /// The pages images' fds (a forked server keeps them open); none for a PageChunkSource.
  [[nodiscard]] std::vector<int> fds() const;

 private:
  Result<void> get(int sk, const PageServerIov& req);
  std::map<uint64_t, Pagemap> pagemaps_;
  std::map<uint32_t, VerifiedPagesFile> pages_;
  PageServerStats stats_;
  std::vector<char> buffer_;
};

}  // namespace arch
