// ImageStreamer: ARCH's side of CRIU's image-streaming protocol (`criu dump|restore --stream`,
// the protocol of criu-image-streamer), so CRIU's images pass through ARCH once instead of
// being written as files.
//
// Protocol (CRIU 4.x, criu/img-streamer.c): CRIU connects to `<images dir>/streamer-capture
// .sock` (dump) or `streamer-serve.sock` (restore), a SOCK_STREAM unix socket. For each image
// it opens it sends a request: u32 length (host order) and an ImgStreamerRequestEntry
// protobuf (field 1, string: the file name). On restore ARCH answers with a u32 length and an
// ImgStreamerReplyEntry (field 1, bool: exists); for a file that exists, and for every file on
// dump, CRIU then passes one end of a pipe (SCM_RIGHTS, one dummy byte): it writes the image
// into it (dump) or reads it from it (restore). CRIU keeps several images open at once
// (pagemap and pages), so each pipe is served on a thread of its own. CRIU closes the
// connection when it has opened its last image.
//
// CRIU refuses --stream through its RPC service (cr-service.c opens the images directory
// with mode -1 and img_streamer_init() then hits BUG(): SIGABRT), so runc, which always
// drives CRIU over RPC (`criu swrk`), cannot stream; ARCH runs `criu` on its command line.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"

namespace arch {

/// The socket CRIU connects to, in a private directory of its own (0700 under /tmp: a unix
/// socket path must fit in 108 bytes). The directory is what CRIU gets as its images
/// directory (-D); it is removed with this object. Move-only.
class StreamerSocket {
 public:
  /// `capture`: the dump's socket name, else the restore's.
  static Result<StreamerSocket> create(bool capture);
  StreamerSocket(StreamerSocket&& other) noexcept;
  StreamerSocket& operator=(StreamerSocket&&) = delete;
  StreamerSocket(const StreamerSocket&) = delete;
  ~StreamerSocket();

  [[nodiscard]] const std::string& dir() const { return dir_; }
  [[nodiscard]] int fd() const { return listen_.get(); }
  /// Makes a capture or serve that still waits for CRIU's connection return (CRIU ended
  /// without connecting). Safe from another thread.
  void cancel() const;
  [[nodiscard]] int cancel_fd() const { return cancel_.get(); }

 private:
  StreamerSocket() = default;
  std::string dir_, path_;
  UniqueFd listen_, cancel_;
};

/// One image passed through.
struct StreamedImage {
  std::string name;
  uint64_t bytes = 0;  ///< Plaintext bytes (as CRIU wrote or read them).
};

/// Takes the read end of one image's pipe (CRIU writes into it); returns the bytes consumed.
using ImageConsumer = std::function<Result<uint64_t>(const std::string& name, int pipe_fd)>;
/// Whether an image exists (restore).
using ImageExists = std::function<bool(const std::string& name)>;
/// Fills the write end of one image's pipe (CRIU reads it); returns the bytes produced.
using ImageProducer = std::function<Result<uint64_t>(const std::string& name, int pipe_fd)>;

/// Dump side: accepts CRIU's connection and hands each image's pipe to `consume` on a thread
/// of its own, until CRIU closes the connection and every consumer has returned. Returns
/// what was captured, in the order CRIU opened it; the first consumer error otherwise.
/// Returns an empty list when cancelled before CRIU connected.
Result<std::vector<StreamedImage>> capture_images(const StreamerSocket& socket,
                                                  const ImageConsumer& consume);

/// Restore side: accepts CRIU's connection, answers whether each requested image exists and
/// fills each existing one's pipe through `produce` (on a thread of its own).
Result<std::vector<StreamedImage>> serve_images(const StreamerSocket& socket,
                                                const ImageExists& exists,
                                                const ImageProducer& produce);

/// Whether `name` is an image name CRIU may ask for: [A-Za-z0-9._-], not "." or "..", at
/// most 255 bytes (anything else is refused before it reaches a path).
bool valid_image_name(std::string_view name);

}  // namespace arch
