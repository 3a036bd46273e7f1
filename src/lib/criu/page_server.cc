// PageServer: request parsing and bounds, verified chunk reads, the answers.
#include "criu/page_server.h"

#include <fmt/core.h>
#include <openssl/evp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "base/hex.h"

namespace arch {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

Result<std::array<unsigned char, 32>> parse_digest(const std::string& hex) {
  std::array<unsigned char, 32> out{};
  if (hex.size() != 64) return fail("chunk digest is not 64 hex digits");
  for (std::size_t i = 0; i < 32; ++i) {
    int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return fail("chunk digest is not lower-case hex");
    out[i] = static_cast<unsigned char>(hi << 4 | lo);
  }
  return out;
}

// Reads exactly `len` bytes (false: the peer hung up before the first byte).
Result<bool> recv_exact(int sk, char* buf, std::size_t len) {
  std::size_t got = 0;
  while (got < len) {
    ssize_t n = ::recv(sk, buf + got, len - got, MSG_WAITALL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_errno("page server: recv");
    if (n == 0) {
      if (got == 0) return false;
      return fail(fmt::format("page server: truncated request ({} of {} bytes)", got, len));
    }
    got += static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace

Result<VerifiedPagesFile> VerifiedPagesFile::make(UniqueFd fd, std::string name, uint64_t size,
                                                  uint64_t chunk_size,
                                                  const std::vector<std::string>& chunk_sha256) {
  if (chunk_size == 0 || chunk_size % kCriuPageSize != 0 || chunk_size > (uint64_t{64} << 20))
    return fail(fmt::format("{}: bad chunk size {}", name, chunk_size));
  if (chunk_sha256.size() != (size + chunk_size - 1) / chunk_size)
    return fail(fmt::format("{}: {} chunk digests for {} bytes", name, chunk_sha256.size(), size));
  VerifiedPagesFile f;
  for (const auto& hex : chunk_sha256) {
    auto d = parse_digest(hex);
    if (!d) return std::unexpected(d.error().wrap(name));
    f.digests_.push_back(*d);
  }
  f.fd_ = std::move(fd);
  f.name_ = std::move(name);
  f.size_ = size;
  f.chunk_size_ = chunk_size;
  return f;
}

Result<VerifiedPagesFile> VerifiedPagesFile::make(PageChunkSource source, std::string name,
                                                  uint64_t size, uint64_t chunk_size,
                                                  const std::vector<std::string>& chunk_sha256) {
  if (!source) return fail(fmt::format("{}: no chunk source", name));
  auto f = make(UniqueFd{}, std::move(name), size, chunk_size, chunk_sha256);
  if (!f) return f;
  f->source_ = std::move(source);
  return f;
}

Result<const std::vector<char>*> VerifiedPagesFile::chunk(uint64_t index) {
  if (index >= digests_.size()) return fail(fmt::format("{}: no chunk {}", name_, index));
  ++tick_;
  for (auto& c : cache_) {
    if (c.index == index) {
      c.used = tick_;
      return &c.data;
    }
  }
  uint64_t offset = index * chunk_size_;
  std::size_t len = static_cast<std::size_t>(std::min(chunk_size_, size_ - offset));
  std::vector<char> data;
  if (source_) {
    auto got = source_(offset, len);
    if (!got) return std::unexpected(got.error().wrap(fmt::format("{} chunk {}", name_, index)));
    if (got->size() != len)
      return std::unexpected(Error(
          fmt::format("{} chunk {}: source gave {} of {} bytes", name_, index, got->size(), len),
          EBADMSG));
    data = std::move(*got);
  } else {
    data.resize(len);
  }
  std::size_t got = source_ ? len : 0;
  while (got < len) {
    ssize_t n = ::pread(fd_.get(), data.data() + got, len - got, static_cast<off_t>(offset + got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_errno(fmt::format("read {} chunk {}", name_, index));
    if (n == 0)
      return std::unexpected(Error(
          fmt::format("{} chunk {}: file shorter than its sealed size", name_, index), EBADMSG));
    got += static_cast<std::size_t>(n);
  }
  ++chunks_read_;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &md_len, EVP_sha256(), nullptr) != 1 ||
      md_len != 32) {
    return fail("sha256: digest failed");
  }
  if (std::memcmp(md, digests_[index].data(), 32) != 0) {
    return std::unexpected(
        Error(fmt::format("{} chunk {} (bytes {}..{}) does not match its sealed digest (sha256 "
                          "{}, sealed {})",
                          name_, index, offset, offset + len, to_hex(md, 32),
                          to_hex(digests_[index].data(), 32)),
              EBADMSG));
  }
  if (cache_.size() < kCachedChunks) {
    cache_.push_back({index, tick_, std::move(data)});
    return &cache_.back().data;
  }
  auto oldest = std::min_element(cache_.begin(), cache_.end(),
                                 [](const Cached& a, const Cached& b) { return a.used < b.used; });
  *oldest = {index, tick_, std::move(data)};
  return &oldest->data;
}

Result<void> VerifiedPagesFile::read(uint64_t offset, char* out, uint64_t len) {
  if (offset > size_ || len > size_ - offset)
    return std::unexpected(Error(
        fmt::format("{}: bytes {}+{} outside its {} bytes", name_, offset, len, size_), ERANGE));
  while (len > 0) {
    uint64_t index = offset / chunk_size_;
    auto c = chunk(index);
    if (!c) return std::unexpected(c.error());
    uint64_t in_chunk = offset - index * chunk_size_;
    uint64_t n = std::min<uint64_t>(len, (*c)->size() - in_chunk);
    std::memcpy(out, (*c)->data() + in_chunk, n);
    out += n;
    offset += n;
    len -= n;
  }
  return {};
}

Result<void> PageServer::get(int sk, const PageServerIov& req) {
  auto refuse = [&](const std::string& why) {
    return fail(ErrorKind::kInvalidInput,
                fmt::format("page server: refused request for {} pages at {:#x} of task {}: {}",
                            req.nr_pages, req.vaddr, req.dst_id, why));
  };
  if (req.nr_pages == 0 || req.nr_pages > kMaxRequestPages)
    return refuse(fmt::format("page count outside 1..{}", kMaxRequestPages));
  if (req.vaddr % kCriuPageSize != 0) return refuse("unaligned address");
  auto map = pagemaps_.find(req.dst_id);
  if (map == pagemaps_.end()) return refuse("no pagemap for this task");
  const PagemapRange* range = map->second.find(req.vaddr);
  if (range == nullptr) return refuse("address outside the pagemap");
  if (!range->present() || !range->lazy()) return refuse("not a lazy range of this checkpoint");
  auto file = pages_.find(map->second.pages_id);
  if (file == pages_.end()) return refuse("its pages image is not served");
  uint64_t n = std::min(req.nr_pages, (range->end() - req.vaddr) / kCriuPageSize);
  uint64_t offset = range->offset + (req.vaddr - range->vaddr);
  std::size_t bytes = static_cast<std::size_t>(n * kCriuPageSize);
  buffer_.resize(kPageServerIovSize + bytes);
  // Every byte is verified before the header goes out: a refused chunk sends nothing.
  if (auto ok = file->second.read(offset, buffer_.data() + kPageServerIovSize, bytes); !ok)
    return std::unexpected(ok.error().wrap("page server"));
  PageServerIov reply{kPsIovAddF | (kPePresent << 16), n, req.vaddr, req.dst_id};
  auto head = encode_page_server_iov(reply);
  std::memcpy(buffer_.data(), head.data(), head.size());
  if (auto ok = send_all(sk, buffer_.data(), buffer_.size()); !ok) return ok;
  stats_.pages_served += n;
  return {};
}

Result<bool> PageServer::serve_one(int sk) {
  std::array<char, kPageServerIovSize> raw{};
  auto got = recv_exact(sk, raw.data(), raw.size());
  if (!got) return std::unexpected(got.error());
  if (!*got) return false;
  PageServerIov req = decode_page_server_iov(raw);
  ++stats_.requests;
  switch (req.cmd) {
    case kPsIovGet:
      if (auto ok = get(sk, req); !ok) return std::unexpected(ok.error());
      return true;
    case kPsIovFlush:
    case kPsIovFlushNClose: {
      int32_t status = 0;
      if (auto ok = send_all(sk, &status, sizeof status); !ok) return std::unexpected(ok.error());
      stats_.closed_by_command = true;
      return false;
    }
    default:
      return fail(ErrorKind::kInvalidInput,
                  fmt::format("page server: refused unknown command {:#x}", req.cmd));
  }
}

std::vector<int> PageServer::fds() const {
  std::vector<int> out;
  for (const auto& [id, file] : pages_)
    if (file.fd() >= 0) out.push_back(file.fd());
  return out;
}

Result<void> PageServer::serve(int sk) {
  for (;;) {
    auto more = serve_one(sk);
    if (!more) return std::unexpected(more.error());
    if (!*more) return {};
  }
}

}  // namespace arch
