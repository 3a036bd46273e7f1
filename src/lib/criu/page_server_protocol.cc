// The page-server protocol's header encoding and whole-buffer send.
#include "criu/page_server_protocol.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace arch {
namespace {

template <class T>
void put(char* at, T v) {
  std::memcpy(at, &v, sizeof(v));
}
template <class T>
T get_at(const char* at) {
  T v{};
  std::memcpy(&v, at, sizeof(v));
  return v;
}

}  // namespace

std::array<char, kPageServerIovSize> encode_page_server_iov(const PageServerIov& iov) {
  std::array<char, kPageServerIovSize> out{};
  put(out.data(), iov.cmd);
  put(out.data() + 8, iov.nr_pages);
  put(out.data() + 16, iov.vaddr);
  put(out.data() + 24, iov.dst_id);
  return out;
}

PageServerIov decode_page_server_iov(const std::array<char, kPageServerIovSize>& bytes) {
  return {get_at<uint32_t>(bytes.data()), get_at<uint64_t>(bytes.data() + 8),
          get_at<uint64_t>(bytes.data() + 16), get_at<uint64_t>(bytes.data() + 24)};
}

Result<void> send_all(int sk, const void* data, std::size_t len) {
  const char* p = static_cast<const char*>(data);
  while (len > 0) {
    ssize_t n = ::send(sk, p, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_errno("page-server protocol: send");
    p += n;
    len -= static_cast<std::size_t>(n);
  }
  return {};
}

}  // namespace arch
