// ImageStream: AES-256-GCM chunks with HKDF-derived keys (OpenSSL EVP); format in the header.
// Compression (flag bit 1): zstd before encryption, bounded decompression after verification
// (store/stream_compression.h).
#include "store/image_stream.h"

#include <fmt/core.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include "base/file_util.h"

namespace arch {
namespace {

constexpr std::string_view kMagic = "ARCHIMG1";
constexpr unsigned char kAlgAesGcm = 1;
constexpr std::size_t kKeyIdBytes = 16;
constexpr std::size_t kSaltBytes = 32;
constexpr std::size_t kHeaderBytes = 8 + 4 + kKeyIdBytes + kSaltBytes;
constexpr std::size_t kRecordBytes = 9;
constexpr std::size_t kTagBytes = 16;
constexpr unsigned char kFinal = 1;
constexpr unsigned char kZstd = 2;

std::unexpected<Error> refuse(std::string why) {
  return std::unexpected(Error("image stream: " + why, EBADMSG));
}

void put_u32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}
void put_u64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}
uint32_t get_u32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

using Key = std::array<unsigned char, 32>;

Result<Key> derive_key(const NodeKey& node, std::string_view salt, std::string_view stream_id,
                       std::string_view name) {
  std::string info(kImageStreamFormat);
  info += '\0';
  info += node.id;
  info += '\0';
  info += stream_id;
  info += '\0';
  info += name;
  Key key{};
  std::size_t len = key.size();
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr);
  bool ok =
      ctx != nullptr && EVP_PKEY_derive_init(ctx) > 0 &&
      EVP_PKEY_CTX_set_hkdf_md(ctx, EVP_sha256()) > 0 &&
      EVP_PKEY_CTX_set1_hkdf_salt(ctx, reinterpret_cast<const unsigned char*>(salt.data()),
                                  static_cast<int>(salt.size())) > 0 &&
      EVP_PKEY_CTX_set1_hkdf_key(ctx, reinterpret_cast<const unsigned char*>(node.secret.data()),
                                 static_cast<int>(node.secret.size())) > 0 &&
      EVP_PKEY_CTX_add1_hkdf_info(ctx, reinterpret_cast<const unsigned char*>(info.data()),
                                  static_cast<int>(info.size())) > 0 &&
      EVP_PKEY_derive(ctx, key.data(), &len) > 0 && len == key.size();
  EVP_PKEY_CTX_free(ctx);
  if (!ok) return fail("image stream: HKDF-SHA256 failed");
  return key;
}

std::array<unsigned char, 12> nonce_for(uint64_t index) {
  std::array<unsigned char, 12> n{};
  for (std::size_t i = 0; i < 8; ++i)
    n[4 + i] = static_cast<unsigned char>((index >> (56 - 8 * i)) & 0xff);
  return n;
}

// The AAD of one chunk (see the header comment).
std::string chunk_aad(std::string_view header, std::string_view stream_id, std::string_view name,
                      uint64_t index, std::string_view record) {
  std::string aad(header);
  aad += stream_id;
  aad += '\0';
  aad += name;
  aad += '\0';
  put_u64(aad, index);
  aad += record;
  return aad;
}

struct CipherCtx {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  CipherCtx() = default;
  CipherCtx(const CipherCtx&) = delete;
  CipherCtx& operator=(const CipherCtx&) = delete;
  ~CipherCtx() { EVP_CIPHER_CTX_free(ctx); }
};

// Encrypts `plain` in place into `out` (ciphertext then tag appended).
bool seal_chunk(const Key& key, uint64_t index, std::string_view aad, std::string_view plain,
                std::string& out) {
  CipherCtx c;
  auto nonce = nonce_for(index);
  int len = 0;
  std::size_t start = out.size();
  out.resize(start + plain.size() + kTagBytes);
  auto* dst = reinterpret_cast<unsigned char*>(out.data() + start);
  if (c.ctx == nullptr ||
      EVP_EncryptInit_ex(c.ctx, EVP_aes_256_gcm(), nullptr, key.data(), nonce.data()) != 1 ||
      EVP_EncryptUpdate(c.ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(aad.data()),
                        static_cast<int>(aad.size())) != 1 ||
      EVP_EncryptUpdate(c.ctx, dst, &len, reinterpret_cast<const unsigned char*>(plain.data()),
                        static_cast<int>(plain.size())) != 1 ||
      EVP_EncryptFinal_ex(c.ctx, dst + len, &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(c.ctx, EVP_CTRL_GCM_GET_TAG, kTagBytes, dst + plain.size()) != 1) {
    return false;
  }
  return true;
}

bool open_chunk(const Key& key, uint64_t index, std::string_view aad, std::string_view cipher,
                std::string_view tag, std::string& plain) {
  CipherCtx c;
  auto nonce = nonce_for(index);
  int len = 0;
  plain.resize(cipher.size());
  auto* dst = reinterpret_cast<unsigned char*>(plain.data());
  std::array<unsigned char, kTagBytes> t{};
  std::memcpy(t.data(), tag.data(), kTagBytes);
  return c.ctx != nullptr &&
         EVP_DecryptInit_ex(c.ctx, EVP_aes_256_gcm(), nullptr, key.data(), nonce.data()) == 1 &&
         EVP_DecryptUpdate(c.ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(aad.data()),
                           static_cast<int>(aad.size())) == 1 &&
         EVP_DecryptUpdate(c.ctx, dst, &len, reinterpret_cast<const unsigned char*>(cipher.data()),
                           static_cast<int>(cipher.size())) == 1 &&
         EVP_CIPHER_CTX_ctrl(c.ctx, EVP_CTRL_GCM_SET_TAG, kTagBytes, t.data()) == 1 &&
         EVP_DecryptFinal_ex(c.ctx, dst + len, &len) == 1;
}

// Reads exactly n bytes; returns how many were read before EOF.
Result<std::size_t> read_exact(int fd, char* buf, std::size_t n) {
  std::size_t got = 0;
  while (got < n) {
    ssize_t r = ::read(fd, buf + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return fail_errno("image stream: read");
    if (r == 0) break;
    got += static_cast<std::size_t>(r);
  }
  return got;
}

}  // namespace

Result<std::string> new_stream_id() {
  std::array<unsigned char, 16> b{};
  if (::getrandom(b.data(), b.size(), 0) != static_cast<ssize_t>(b.size()))
    return fail_errno("getrandom");
  std::string out;
  for (unsigned char c : b) out += fmt::format("{:02x}", c);
  return out;
}

struct ImageStreamWriter::State {
  int fd = -1;
  EVP_MD_CTX* digest = EVP_MD_CTX_new();  // SHA-256 of every stored byte, as written
  ~State() { EVP_MD_CTX_free(digest); }
  Result<void> store(std::string_view bytes) {
    if (EVP_DigestUpdate(digest, bytes.data(), bytes.size()) != 1)
      return fail("image stream: SHA-256 failed");
    return sink ? sink(bytes) : write_all(fd, bytes);
  }
  std::function<Result<void>(std::string_view)> sink;  // set: instead of fd
  Key key{};
  std::string header, stream_id, name, buffer, out;
  uint64_t index = 0;
  ImageStreamStats stats;
  bool finished = false;

  std::unique_ptr<ChunkCompressor> compressor;  // null: compression off
  std::string frame;

  Result<void> emit(std::string_view plain, bool final) {
    bool zstd = false;
    if (compressor) {
      auto z = compressor->compress(plain, frame);
      if (!z) return std::unexpected(z.error());
      zstd = *z;
    }
    if (auto ok = seal_record(zstd ? std::string_view(frame) : plain,
                              static_cast<uint32_t>(plain.size()), zstd, final);
        !ok) {
      return ok;
    }
    stats.plain_bytes += plain.size();
    stats.compressed_chunks += zstd ? 1 : 0;
    return {};
  }

  // Seals and writes one chunk: its record (lengths and flags), then `payload` encrypted.
  Result<void> seal_record(std::string_view payload, uint32_t plain_len, bool zstd, bool final) {
    out.clear();
    put_u32(out, static_cast<uint32_t>(payload.size()));
    put_u32(out, plain_len);
    out += static_cast<char>((final ? kFinal : 0) | (zstd ? kZstd : 0));
    std::string aad = chunk_aad(header, stream_id, name, index, out);
    if (!seal_chunk(key, index, aad, payload, out)) return fail("image stream: AES-256-GCM failed");
    if (auto ok = store(out); !ok) return ok;
    stats.stored_bytes += out.size();
    stats.chunks += 1;
    ++index;
    return {};
  }
};

ImageStreamWriter::ImageStreamWriter(std::unique_ptr<State> s) : s_(std::move(s)) {}
ImageStreamWriter::ImageStreamWriter(ImageStreamWriter&&) noexcept = default;
ImageStreamWriter& ImageStreamWriter::operator=(ImageStreamWriter&&) noexcept = default;
ImageStreamWriter::~ImageStreamWriter() {
  if (s_) OPENSSL_cleanse(s_->key.data(), s_->key.size());
}

Result<ImageStreamWriter> ImageStreamWriter::create(int fd, const NodeKey& key,
                                                    std::string_view stream_id,
                                                    std::string_view image_name,
                                                    const StreamCompressionOptions& compression) {
  return create_impl(fd, nullptr, key, stream_id, image_name, compression);
}

Result<ImageStreamWriter> ImageStreamWriter::create_impl(
    int fd, std::function<Result<void>(std::string_view)> sink, const NodeKey& key,
    std::string_view stream_id, std::string_view image_name,
    const StreamCompressionOptions& compression) {
  if (key.id.size() != kKeyIdBytes) return fail("image stream: malformed node key id");
  auto s = std::make_unique<State>();
  auto compressor = ChunkCompressor::create(compression);
  if (!compressor) return std::unexpected(compressor.error());
  s->compressor = std::move(*compressor);
  std::array<char, kSaltBytes> salt{};
  if (::getrandom(salt.data(), salt.size(), 0) != static_cast<ssize_t>(salt.size()))
    return fail_errno("getrandom");
  s->header = std::string(kMagic);
  s->header += static_cast<char>(kAlgAesGcm);
  s->header += std::string(3, '\0');
  s->header += key.id;
  s->header.append(salt.data(), salt.size());
  auto k = derive_key(key, std::string_view(salt.data(), salt.size()), stream_id, image_name);
  if (!k) return std::unexpected(k.error());
  s->key = *k;
  s->fd = fd;
  s->sink = std::move(sink);
  s->stream_id = stream_id;
  s->name = image_name;
  s->buffer.reserve(kImageChunkBytes);
  if (s->digest == nullptr || EVP_DigestInit_ex(s->digest, EVP_sha256(), nullptr) != 1)
    return fail("image stream: SHA-256 failed");
  if (auto ok = s->store(s->header); !ok) return std::unexpected(ok.error());
  s->stats.stored_bytes = s->header.size();
  return ImageStreamWriter(std::move(s));
}

Result<ImageStreamWriter> ImageStreamWriter::create(
    std::function<Result<void>(std::string_view)> sink, const NodeKey& key,
    std::string_view stream_id, std::string_view image_name,
    const StreamCompressionOptions& compression) {
  if (!sink) return fail("image stream: no sink");
  return create_impl(-1, std::move(sink), key, stream_id, image_name, compression);
}

Result<void> ImageStreamWriter::write(std::string_view data) {
  State& s = *s_;
  while (!data.empty()) {
    if (s.buffer.empty() && data.size() >= kImageChunkBytes) {
      if (auto ok = s.emit(data.substr(0, kImageChunkBytes), false); !ok) return ok;
      data.remove_prefix(kImageChunkBytes);
      continue;
    }
    std::size_t take = std::min(data.size(), kImageChunkBytes - s.buffer.size());
    s.buffer.append(data.substr(0, take));
    data.remove_prefix(take);
    if (s.buffer.size() == kImageChunkBytes) {
      if (auto ok = s.emit(s.buffer, false); !ok) return ok;
      s.buffer.clear();
    }
  }
  return {};
}

Result<void> ImageStreamWriter::write_record_for_testing(std::string_view payload,
                                                         uint32_t plain_len, bool zstd,
                                                         bool final) {
  s_->finished = final;
  return s_->seal_record(payload, plain_len, zstd, final);
}

Result<ImageStreamStats> ImageStreamWriter::finish() {
  State& s = *s_;
  if (s.finished) return s.stats;
  if (auto ok = s.emit(s.buffer, true); !ok) return std::unexpected(ok.error());
  s.buffer.clear();
  s.finished = true;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(s.digest, md, &len) != 1) return fail("image stream: SHA-256 failed");
  for (unsigned int i = 0; i < len; ++i) s.stats.sha256 += fmt::format("{:02x}", md[i]);
  return s.stats;
}

Result<ImageStreamStats> read_image_stream(
    int fd, const Keyring& keys, std::string_view stream_id, std::string_view image_name,
    const std::function<Result<void>(std::string_view plain)>& sink) {
  ImageStreamStats stats;
  std::string header(kHeaderBytes, '\0');
  auto got = read_exact(fd, header.data(), header.size());
  if (!got) return std::unexpected(got.error());
  if (*got != header.size() || header.compare(0, kMagic.size(), kMagic) != 0)
    return refuse(std::string(image_name) + ": not an ARCH image stream");
  if (static_cast<unsigned char>(header[8]) != kAlgAesGcm || header[9] != 0 || header[10] != 0 ||
      header[11] != 0) {
    return refuse(std::string(image_name) + ": unknown algorithm or flags");
  }
  std::string key_id = header.substr(12, kKeyIdBytes);
  const NodeKey* node = keys.find(key_id);
  if (node == nullptr)
    return refuse(std::string(image_name) + ": sealed with key " + key_id + ", not held here");
  auto key = derive_key(*node, std::string_view(header).substr(12 + kKeyIdBytes, kSaltBytes),
                        stream_id, image_name);
  if (!key) return std::unexpected(key.error());
  stats.stored_bytes = header.size();
  std::string record(kRecordBytes, '\0'), body, plain, inflated;
  std::unique_ptr<ChunkDecompressor> decompressor;
  for (uint64_t index = 0;; ++index) {
    auto r = read_exact(fd, record.data(), record.size());
    if (!r) return std::unexpected(r.error());
    if (*r != record.size())
      return refuse(
          fmt::format("{}: truncated before chunk {} (no final chunk)", image_name, index));
    uint32_t cipher_len = get_u32(record.data());
    uint32_t plain_len = get_u32(record.data() + 4);
    auto flags = static_cast<unsigned char>(record[8]);
    if (cipher_len > kMaxImageChunkBytes || plain_len > kMaxImageChunkBytes ||
        (flags & ~(kFinal | kZstd)) != 0) {
      return refuse(fmt::format("{}: chunk {} has a malformed header", image_name, index));
    }
    body.resize(cipher_len + kTagBytes);
    auto b = read_exact(fd, body.data(), body.size());
    if (!b) return std::unexpected(b.error());
    if (*b != body.size())
      return refuse(fmt::format("{}: chunk {} is truncated", image_name, index));
    std::string aad = chunk_aad(header, stream_id, image_name, index, record);
    if (!open_chunk(*key, index, aad, std::string_view(body).substr(0, cipher_len),
                    std::string_view(body).substr(cipher_len), plain)) {
      return refuse(
          fmt::format("{}: chunk {} does not verify (tampered, reordered, from another "
                      "checkpoint, or another key)",
                      image_name, index));
    }
    // Authenticated: only now do its flags and lengths mean anything.
    std::string_view chunk = plain;
    if ((flags & kZstd) != 0) {
      if (!decompressor) {
        auto d = ChunkDecompressor::create();
        if (!d) return std::unexpected(d.error());
        decompressor = std::move(*d);
      }
      if (auto ok = decompressor->decompress(plain, plain_len, kMaxImageChunkBytes, inflated);
          !ok) {
        return refuse(fmt::format("{}: chunk {}: {}", image_name, index, ok.error().message()));
      }
      chunk = inflated;
      stats.compressed_chunks += 1;
    } else if (plain_len != cipher_len) {
      return refuse(fmt::format("{}: chunk {} has a malformed header", image_name, index));
    }
    stats.stored_bytes += record.size() + body.size();
    stats.plain_bytes += chunk.size();
    stats.chunks += 1;
    if (auto ok = sink(chunk); !ok) return std::unexpected(ok.error());
    if ((flags & kFinal) != 0) break;
  }
  char extra = 0;
  auto more = read_exact(fd, &extra, 1);
  if (!more) return std::unexpected(more.error());
  if (*more != 0) return refuse(std::string(image_name) + ": data after the final chunk");
  return stats;
}

}  // namespace arch

namespace arch {
namespace {

Result<void> pread_exact(int fd, char* buf, std::size_t n, uint64_t at) {
  std::size_t got = 0;
  while (got < n) {
    ssize_t r = ::pread(fd, buf + got, n - got, static_cast<off_t>(at + got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return fail_errno("image stream: read");
    if (r == 0) return refuse("truncated");
    got += static_cast<std::size_t>(r);
  }
  return {};
}

}  // namespace

struct ImageStreamReader::State {
  UniqueFd fd;
  Key key{};
  std::string header, stream_id, name;
  struct Chunk {
    uint64_t at = 0;  // file offset of its record
    uint32_t cipher_len = 0, plain_len = 0;
    unsigned char flags = 0;
  };
  std::vector<Chunk> chunks;
  uint64_t size = 0;
  uint64_t cached = UINT64_MAX;  // index of `plain`
  std::string record, body, opened, plain;
  std::unique_ptr<ChunkDecompressor> decompressor;
  ~State() { OPENSSL_cleanse(key.data(), key.size()); }

  // Decrypts and verifies chunk `i` into `plain`.
  Result<void> load(uint64_t i) {
    if (cached == i) return {};
    cached = UINT64_MAX;
    const Chunk& c = chunks[i];
    record.resize(kRecordBytes);
    body.resize(c.cipher_len + kTagBytes);
    if (auto ok = pread_exact(fd.get(), record.data(), record.size(), c.at); !ok) return ok;
    if (auto ok = pread_exact(fd.get(), body.data(), body.size(), c.at + kRecordBytes); !ok)
      return ok;
    std::string aad = chunk_aad(header, stream_id, name, i, record);
    if (!open_chunk(key, i, aad, std::string_view(body).substr(0, c.cipher_len),
                    std::string_view(body).substr(c.cipher_len), opened)) {
      return refuse(
          fmt::format("{}: chunk {} does not verify (tampered, reordered, from another "
                      "checkpoint, or another key)",
                      name, i));
    }
    if ((c.flags & kZstd) != 0) {
      if (!decompressor) {
        auto d = ChunkDecompressor::create();
        if (!d) return std::unexpected(d.error());
        decompressor = std::move(*d);
      }
      if (auto ok = decompressor->decompress(opened, c.plain_len, kMaxImageChunkBytes, plain); !ok)
        return refuse(fmt::format("{}: chunk {}: {}", name, i, ok.error().message()));
    } else {
      plain.swap(opened);
    }
    if (plain.size() != c.plain_len)
      return refuse(fmt::format("{}: chunk {} has a malformed header", name, i));
    cached = i;
    return {};
  }
};

ImageStreamReader::ImageStreamReader(std::unique_ptr<State> s) : s_(std::move(s)) {}
ImageStreamReader::ImageStreamReader(ImageStreamReader&&) noexcept = default;
ImageStreamReader& ImageStreamReader::operator=(ImageStreamReader&&) noexcept = default;
ImageStreamReader::~ImageStreamReader() = default;

uint64_t ImageStreamReader::size() const {
  return s_->size;
}

Result<ImageStreamReader> ImageStreamReader::open(UniqueFd fd, const Keyring& keys,
                                                  std::string_view stream_id,
                                                  std::string_view image_name) {
  auto s = std::make_unique<State>();
  s->stream_id = stream_id;
  s->name = image_name;
  s->header.resize(kHeaderBytes);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return fail_errno("image stream: fstat");
  auto file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < kHeaderBytes) return refuse(s->name + ": not an ARCH image stream");
  if (auto ok = pread_exact(fd.get(), s->header.data(), kHeaderBytes, 0); !ok)
    return std::unexpected(ok.error());
  const std::string& header = s->header;
  if (header.compare(0, kMagic.size(), kMagic) != 0)
    return refuse(s->name + ": not an ARCH image stream");
  if (static_cast<unsigned char>(header[8]) != kAlgAesGcm || header[9] != 0 || header[10] != 0 ||
      header[11] != 0) {
    return refuse(s->name + ": unknown algorithm or flags");
  }
  std::string key_id = header.substr(12, kKeyIdBytes);
  const NodeKey* node = keys.find(key_id);
  if (node == nullptr) return refuse(s->name + ": sealed with key " + key_id + ", not held here");
  auto key = derive_key(*node, std::string_view(header).substr(12 + kKeyIdBytes, kSaltBytes),
                        stream_id, image_name);
  if (!key) return std::unexpected(key.error());
  s->key = *key;
  uint64_t at = kHeaderBytes;
  std::array<char, kRecordBytes> record{};
  for (uint64_t index = 0;; ++index) {
    if (file_size - at < kRecordBytes)
      return refuse(fmt::format("{}: truncated before chunk {} (no final chunk)", s->name, index));
    if (auto ok = pread_exact(fd.get(), record.data(), record.size(), at); !ok)
      return std::unexpected(ok.error());
    State::Chunk c{at, get_u32(record.data()), get_u32(record.data() + 4),
                   static_cast<unsigned char>(record[8])};
    bool final = (c.flags & kFinal) != 0;
    if (c.cipher_len > kMaxImageChunkBytes || c.plain_len > kMaxImageChunkBytes ||
        (c.flags & ~(kFinal | kZstd)) != 0 || (!final && c.plain_len != kImageChunkBytes) ||
        ((c.flags & kZstd) == 0 && c.plain_len != c.cipher_len)) {
      return refuse(fmt::format("{}: chunk {} has a malformed header", s->name, index));
    }
    uint64_t next = at + kRecordBytes + c.cipher_len + kTagBytes;
    if (next > file_size) return refuse(fmt::format("{}: chunk {} is truncated", s->name, index));
    s->chunks.push_back(c);
    s->size += c.plain_len;
    at = next;
    if (final) break;
  }
  if (at != file_size) return refuse(s->name + ": data after the final chunk");
  s->fd = std::move(fd);
  return ImageStreamReader(std::move(s));
}

Result<std::vector<char>> ImageStreamReader::read(uint64_t offset, std::size_t len) {
  State& s = *s_;
  if (offset > s.size || len > s.size - offset)
    return std::unexpected(Error(
        fmt::format("{}: bytes {}+{} outside its {} bytes", s.name, offset, len, s.size), ERANGE));
  std::vector<char> out(len);
  std::size_t done = 0;
  while (done < len) {
    uint64_t i = (offset + done) / kImageChunkBytes;
    if (i >= s.chunks.size()) return refuse(s.name + ": read past the last chunk");
    if (auto ok = s.load(i); !ok) return std::unexpected(ok.error());
    uint64_t in = offset + done - i * kImageChunkBytes;
    if (in >= s.plain.size()) return refuse(s.name + ": chunk shorter than its place");
    std::size_t n = std::min<std::size_t>(len - done, s.plain.size() - in);
    std::memcpy(out.data() + done, s.plain.data() + in, n);
    done += n;
  }
  return out;
}

}  // namespace arch
