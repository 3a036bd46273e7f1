// CRIU's page-server protocol on the wire (criu/page-xfer.c): the commands both of ARCH's
// sides use (PageServer, serving lazy pages to a restore; PageReceiver, taking a dump's
// pages), the 32-byte request header and a blocking send of a whole buffer.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "base/error.h"

namespace arch {

/// Commands (the low 16 bits of page_server_iov.cmd; flags such as PE_PRESENT above).
inline constexpr uint32_t kPsIovAdd = 1;
inline constexpr uint32_t kPsIovHole = 2;
inline constexpr uint32_t kPsIovOpen = 3;
inline constexpr uint32_t kPsIovOpen2 = 4;
inline constexpr uint32_t kPsIovParent = 5;
inline constexpr uint32_t kPsIovAddF = 6;
inline constexpr uint32_t kPsIovGet = 7;
/// PS_IOV_FLUSH: answered with an int32 0 (the lazy daemon's PS_IOV_CLOSE is the same value).
inline constexpr uint32_t kPsIovFlush = 0x1023;
/// PS_IOV_FLUSH_N_CLOSE (the lazy daemon's PS_IOV_FORCE_CLOSE): the same, and the session ends.
inline constexpr uint32_t kPsIovFlushNClose = 0x1024;
/// Size of struct page_server_iov on the wire.
inline constexpr std::size_t kPageServerIovSize = 32;

/// One protocol header: {u32 cmd; 4 bytes padding; u64 nr_pages; u64 vaddr; u64 dst_id},
/// host byte order.
struct PageServerIov {
  uint32_t cmd = 0;
  uint64_t nr_pages = 0;
  uint64_t vaddr = 0;
  uint64_t dst_id = 0;
};
std::array<char, kPageServerIovSize> encode_page_server_iov(const PageServerIov& iov);
PageServerIov decode_page_server_iov(const std::array<char, kPageServerIovSize>& bytes);

/// Sends all `len` bytes on the stream socket `sk` (EINTR retried, no SIGPIPE).
Result<void> send_all(int sk, const void* data, std::size_t len);

}  // namespace arch
