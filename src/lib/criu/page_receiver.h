// PageReceiver: the dump side of CRIU's page-server protocol, so that a container's pages
// (the bulk of its checkpoint) flow once from CRIU through ARCH into the store: `runc
// checkpoint --page-server 127.0.0.1:PORT` makes CRIU send them to ARCH instead of writing
// pagemap-*.img and pages-*.img; ARCH writes the same images, digesting the pages per
// kPagesChunkSize chunk as they pass and, encrypted, sealing them as an image stream
// (store/image_stream.h: pages-N.img.arch). Works with CRIU 4.2.1 over runc's RPC (its
// --stream does not: image_streamer.h).
//
// Protocol as CRIU 4.2.1 sends it in a dump (criu/page-xfer.c; the 32-byte page_server_iov
// of page_server.h), one TCP connection:
//   PS_IOV_OPEN2 (4), dst_id = id << 8 | type (1: a task's pagemap, id its pid; 2: a shared
//     memory object's, id its shmid): answered with one byte, has_parent (always 0 here:
//     no pre-dump parent through the receiver). Starts the next image: pagemap-<id>.img or
//     pagemap-shmem-<id>.img with pages_id = 1, 2, ... in the order opened, as CRIU's own
//     counter numbers them, and pages-<pages_id>.img.
//   PS_IOV_ADD_F (6) | flags << 16, nr_pages, vaddr, dst_id of the open image: one pagemap
//     entry {vaddr, nr_pages, flags}; with PE_PRESENT the nr_pages pages follow on the
//     socket and are appended to the pages image. Flags: PE_PRESENT, optionally PE_LAZY.
//   PS_IOV_FLUSH (0x1023): answered with an int32 0 once everything is received; CRIU then
//     closes the connection. PS_IOV_FLUSH_N_CLOSE (0x1024): the same, and the session ends.
// Anything else is refused with an error naming it, before any byte of it is written: other
// commands (ADD, HOLE, OPEN, PARENT, GET), flags other than PRESENT[|LAZY], a dst_id other
// than the open image's or of an unknown type, an image opened twice, more than
// kMaxReceivePages pages in one request or kMaxReceivedImages images, an unaligned or
// overflowing or unsorted address, more bytes than the limit (the container's memory or
// the node's cap), and an end of the connection before the flush. The caller then closes
// the connection: CRIU's dump fails, runc thaws the container, nothing is committed.
//
// Who may send: PageReceiverListener listens on 127.0.0.1, port 0, and admits only the
// connection its `admit` check accepts (the caller's: the socket belongs to the CRIU of its
// own `runc checkpoint`); every other connection is closed without a byte read.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"
#include "criu/page_server_protocol.h"
#include "store/node_key.h"
#include "store/stream_compression.h"

namespace arch {

/// The most pages one request may carry (256 MiB; CRIU sends at most a page pipe's worth).
inline constexpr uint64_t kMaxReceivePages = 65536;
/// The most images (tasks and shared memory objects) one dump may open.
inline constexpr uint64_t kMaxReceivedImages = 65536;

/// How the received pages images are stored.
struct PageReceiverOptions {
  int images_dirfd = -1;  ///< The staging's images directory (pagemaps and pages go there).
  /// Total page bytes accepted (the container's memory limit, or the node's cap).
  uint64_t max_bytes = 0;
  /// Null: pages-N.img stored plain. Else pages-N.img.arch, sealed with this key.
  const NodeKey* key = nullptr;
  std::string stream_id;                 ///< The checkpoint's stream id (encrypted only).
  StreamCompressionOptions compression;  ///< Encrypted only: each chunk before it is sealed.
};

/// One pages image as received.
struct ReceivedPagesImage {
  std::string name;    ///< "pages-N.img" (the plaintext image CRIU would have written).
  std::string stored;  ///< Its file in the images directory (name, or name + ".arch").
  uint64_t size = 0;   ///< Plaintext bytes.
  std::vector<std::string> chunk_sha256;  ///< Of the plaintext, per kPagesChunkSize.
  uint64_t stored_size = 0;
  std::string stored_sha256;  ///< Of the stored file's bytes.
};

/// What one session received.
struct PageReceiverResult {
  std::vector<ReceivedPagesImage> pages;
  std::vector<std::pair<std::string, uint64_t>> pagemaps;  ///< Name, bytes.
  uint64_t page_bytes = 0;
  uint64_t requests = 0;
};

/// Serves one dump's connection `sk` until CRIU flushed and closed it; an error when the
/// stream was refused (see above) or broke off (the caller closes `sk`). `cancel`, when
/// set from another thread, makes it give up at its next read.
Result<PageReceiverResult> receive_pages(int sk, const PageReceiverOptions& options,
                                         const std::atomic<bool>* cancel = nullptr);

/// The inode of the socket at the other end of our TCP connection `fd` (both ends in this
/// network namespace): from /proc/self/net/tcp (or tcp6). ENOENT when not found.
Result<uint64_t> peer_socket_inode(int fd);
/// Whether process `pid` holds socket inode `inode` among its fds.
bool process_holds_socket(pid_t pid, uint64_t inode);

/// A listening TCP socket on 127.0.0.1 (an ephemeral port) that admits one connection.
class PageReceiverListener {
 public:
  static Result<PageReceiverListener> listen();
  [[nodiscard]] uint16_t port() const { return port_; }
  /// "127.0.0.1:PORT", for `runc checkpoint --page-server`.
  [[nodiscard]] std::string address() const;
  /// Waits for the connection `admit` accepts (each other one is closed without reading;
  /// `refused` counts them). Returns an empty fd when cancel() was called first.
  Result<UniqueFd> accept_admitted(const std::function<bool(int fd)>& admit,
                                   uint64_t* refused = nullptr);
  /// Makes accept_admitted() return (thread-safe).
  void cancel() const;

 private:
  UniqueFd listen_, cancel_read_, cancel_write_;
  uint16_t port_ = 0;
};

}  // namespace arch
