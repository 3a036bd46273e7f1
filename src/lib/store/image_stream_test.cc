// Tests for the image stream format: round trip, and every way a stored stream can be
// altered (a flipped bit, truncation, reordered or spliced chunks, another checkpoint's or
// image's stream, a wrong key, trailing data) is refused before its plaintext is handed on.
#include "store/image_stream.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <random>
#include <tuple>
#include <vector>

#include "base/file_util.h"
#include "base/unique_fd.h"
#include "store/manifest.h"

namespace arch {
namespace {

NodeKey make_key() {
  auto k = generate_node_key();
  EXPECT_TRUE(k);
  return *k;
}

Keyring ring_of(const NodeKey& k) {
  Keyring r;
  r.add(k, true);
  return r;
}

UniqueFd memfd() {
  return UniqueFd(::memfd_create("image-stream-test", MFD_CLOEXEC));
}

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(gen());
  return s;
}

// Writes `plain` as a stream (in uneven pieces) and returns the stored bytes.
std::string write_stream(const NodeKey& key, std::string_view id, std::string_view name,
                         std::string_view plain, const StreamCompressionOptions& z = {}) {
  auto fd = memfd();
  auto w = ImageStreamWriter::create(fd.get(), key, id, name, z);
  EXPECT_TRUE(w) << w.error().message();
  for (std::size_t off = 0; off < plain.size();) {
    std::size_t n = std::min<std::size_t>(plain.size() - off, 1000003);
    EXPECT_TRUE(w->write(plain.substr(off, n)));
    off += n;
  }
  auto stats = w->finish();
  EXPECT_TRUE(stats);
  EXPECT_EQ(stats->plain_bytes, plain.size());
  ::lseek(fd.get(), 0, SEEK_SET);
  auto text = read_all(fd.get(), 1 << 30);
  EXPECT_TRUE(text);
  EXPECT_EQ(stats->stored_bytes, text->size());
  // The digest the manifest gets without reading the file again.
  auto again = memfd();
  EXPECT_TRUE(write_all(again.get(), *text));
  ::lseek(again.get(), 0, SEEK_SET);
  auto digest = digest_fd(again.get());
  EXPECT_TRUE(digest);
  EXPECT_EQ(stats->sha256, digest->sha256);
  return *text;
}

// Reads stored bytes back; returns the plaintext handed on, and the result.
std::pair<std::string, Result<ImageStreamStats>> read_stream(const Keyring& keys,
                                                             std::string_view id,
                                                             std::string_view name,
                                                             const std::string& stored) {
  auto fd = memfd();
  EXPECT_TRUE(write_all(fd.get(), stored));
  ::lseek(fd.get(), 0, SEEK_SET);
  std::string out;
  auto r = read_image_stream(fd.get(), keys, id, name, [&](std::string_view p) -> Result<void> {
    out.append(p);
    return {};
  });
  return {out, std::move(r)};
}

constexpr std::size_t kHeader = 60;
constexpr std::size_t kChunk = 9 + kImageChunkBytes + 16;

TEST(ImageStream, RoundTripsEmptySmallAndMultiChunk) {
  NodeKey key = make_key();
  Keyring keys = ring_of(key);
  for (std::size_t n :
       {std::size_t{0}, std::size_t{1}, kImageChunkBytes, 3 * kImageChunkBytes + 7}) {
    std::string plain = random_bytes(n, static_cast<unsigned>(n));
    std::string stored = write_stream(key, "id1", "pages-1.img", plain);
    auto [out, r] = read_stream(keys, "id1", "pages-1.img", stored);
    ASSERT_TRUE(r) << n << ": " << r.error().message();
    EXPECT_EQ(out, plain) << n;
    EXPECT_EQ(r->plain_bytes, n);
    // Encrypted: the plaintext does not appear in the file.
    if (n >= 64) {
      EXPECT_EQ(stored.find(plain.substr(0, 64)), std::string::npos);
    }
  }
}

TEST(ImageStream, FlippedBitInAnyChunkIsRefusedBeforeItsPlaintextIsHandedOn) {
  NodeKey key = make_key();
  std::string plain = random_bytes(2 * kImageChunkBytes + 100, 1);
  std::string stored = write_stream(key, "id1", "pages-1.img", plain);
  // In the second chunk's ciphertext: only the first chunk's plaintext may be handed on.
  std::string bad = stored;
  bad[kHeader + kChunk + 9 + 12345] ^= 1;
  auto [out, r] = read_stream(ring_of(key), "id1", "pages-1.img", bad);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), EBADMSG);
  EXPECT_NE(r.error().message().find("chunk 1 does not verify"), std::string::npos)
      << r.error().message();
  EXPECT_EQ(out, plain.substr(0, kImageChunkBytes));
  // In the header (salt), a tag, and a record header's final flag.
  for (std::size_t at : {std::size_t{30}, kHeader + kChunk - 1, kHeader + 8}) {
    std::string b = stored;
    b[at] ^= 1;
    EXPECT_FALSE(read_stream(ring_of(key), "id1", "pages-1.img", b).second) << at;
  }
}

TEST(ImageStream, TruncationIsRefused) {
  NodeKey key = make_key();
  std::string stored = write_stream(key, "id1", "a.img", random_bytes(2 * kImageChunkBytes + 5, 2));
  // At a chunk boundary (the final chunk dropped), mid-chunk, inside the header.
  for (std::size_t len :
       {kHeader + kChunk, kHeader + 2 * kChunk, kHeader + kChunk + 100, std::size_t{20}, kHeader}) {
    auto r = read_stream(ring_of(key), "id1", "a.img", stored.substr(0, len)).second;
    ASSERT_FALSE(r) << len;
    EXPECT_EQ(r.error().code(), EBADMSG) << len;
  }
}

TEST(ImageStream, ReorderedChunksAndTrailingDataAreRefused) {
  NodeKey key = make_key();
  std::string stored = write_stream(key, "id1", "a.img", random_bytes(3 * kImageChunkBytes, 3));
  std::string c0 = stored.substr(kHeader, kChunk), c1 = stored.substr(kHeader + kChunk, kChunk);
  std::string swapped = stored.substr(0, kHeader) + c1 + c0 + stored.substr(kHeader + 2 * kChunk);
  EXPECT_FALSE(read_stream(ring_of(key), "id1", "a.img", swapped).second);
  // A chunk repeated, and bytes after the final chunk.
  std::string repeated = stored.substr(0, kHeader) + c0 + c0 + stored.substr(kHeader + 2 * kChunk);
  EXPECT_FALSE(read_stream(ring_of(key), "id1", "a.img", repeated).second);
  auto trailing = read_stream(ring_of(key), "id1", "a.img", stored + "x").second;
  ASSERT_FALSE(trailing);
  EXPECT_NE(trailing.error().message().find("after the final chunk"), std::string::npos);
}

TEST(ImageStream, SplicingFromAnotherCheckpointOrImageIsRefused) {
  NodeKey key = make_key();
  std::string a = write_stream(key, "id1", "pages-1.img", random_bytes(2 * kImageChunkBytes, 4));
  std::string other_ckpt =
      write_stream(key, "id2", "pages-1.img", random_bytes(2 * kImageChunkBytes, 5));
  // A whole stream read as another checkpoint's or another image's.
  EXPECT_FALSE(read_stream(ring_of(key), "id2", "pages-1.img", a).second);
  EXPECT_FALSE(read_stream(ring_of(key), "id1", "pages-2.img", a).second);
  // Another checkpoint's chunk spliced in at the same index, header kept.
  std::string spliced = a.substr(0, kHeader + kChunk) + other_ckpt.substr(kHeader + kChunk);
  EXPECT_FALSE(read_stream(ring_of(key), "id1", "pages-1.img", spliced).second);
}

TEST(ImageStream, WrongOrMissingKeyIsRefused) {
  NodeKey key = make_key(), other = make_key();
  std::string stored = write_stream(key, "id1", "a.img", "secret memory");
  auto missing = read_stream(ring_of(other), "id1", "a.img", stored).second;
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message().find("not held here"), std::string::npos);
  // A different secret under the same id (a forged key file) fails authentication.
  NodeKey forged = other;
  forged.id = key.id;
  auto wrong = read_stream(ring_of(forged), "id1", "a.img", stored).second;
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code(), EBADMSG);
}

TEST(ImageStream, SinkErrorStopsTheRead) {
  NodeKey key = make_key();
  std::string stored = write_stream(key, "id1", "a.img", random_bytes(2 * kImageChunkBytes, 6));
  auto fd = memfd();
  ASSERT_TRUE(write_all(fd.get(), stored));
  ::lseek(fd.get(), 0, SEEK_SET);
  int calls = 0;
  auto r = read_image_stream(fd.get(), ring_of(key), "id1", "a.img",
                             [&](std::string_view) -> Result<void> {
                               ++calls;
                               return fail("CRIU went away");
                             });
  ASSERT_FALSE(r);
  EXPECT_EQ(calls, 1);
}

// Compression: compressed before encryption, so the reader verifies, then decompresses.
const StreamCompressionOptions kZstd{.mode = StreamCompression::kZstd, .level = 3};

std::string repetitive_bytes(std::size_t n) {
  std::string unit = random_bytes(4096, 9);
  std::string s;
  while (s.size() < n) s += unit;
  s.resize(n);
  return s;
}

// The stored bytes of a stream whose chunks are sealed as given (record fields as they are).
std::string write_records(const NodeKey& key, std::string_view id, std::string_view name,
                          const std::vector<std::tuple<std::string, uint32_t, bool>>& chunks) {
  auto fd = memfd();
  auto w = ImageStreamWriter::create(fd.get(), key, id, name);
  EXPECT_TRUE(w);
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    const auto& [payload, plain_len, zstd] = chunks[i];
    EXPECT_TRUE(w->write_record_for_testing(payload, plain_len, zstd, i + 1 == chunks.size()));
  }
  ::lseek(fd.get(), 0, SEEK_SET);
  auto text = read_all(fd.get(), 1 << 30);
  EXPECT_TRUE(text);
  return *text;
}

// One zstd frame of `plain` (through the writer's own compressor).
std::string zstd_frame(std::string_view plain) {
  auto c = ChunkCompressor::create(kZstd);
  EXPECT_TRUE(c && *c);
  std::string frame;
  auto z = (*c)->compress(plain, frame);
  EXPECT_TRUE(z && *z);
  return frame;
}

TEST(ImageStreamCompression, RoundTripsCompressibleAndRandomData) {
  NodeKey key = make_key();
  Keyring keys = ring_of(key);
  std::string compressible = repetitive_bytes(3 * kImageChunkBytes + 11);
  std::string stored = write_stream(key, "id1", "pages-1.img", compressible, kZstd);
  EXPECT_LT(stored.size(), compressible.size() / 10);
  auto [out, r] = read_stream(keys, "id1", "pages-1.img", stored);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(out, compressible);
  EXPECT_EQ(r->compressed_chunks, 3u);  // the last 11 bytes do not shrink: raw
  EXPECT_EQ(r->plain_bytes, compressible.size());
  // Encrypted after compression: the plaintext does not appear.
  EXPECT_EQ(stored.find(compressible.substr(0, 64)), std::string::npos);
  // Random data does not get smaller: its chunks are kept raw (same size as uncompressed).
  std::string random = random_bytes(2 * kImageChunkBytes + 5, 7);
  std::string raw = write_stream(key, "id1", "pages-2.img", random, kZstd);
  EXPECT_EQ(raw.size(), kHeader + 2 * kChunk + 9 + 5 + 16);
  auto [out2, r2] = read_stream(keys, "id1", "pages-2.img", raw);
  ASSERT_TRUE(r2) << r2.error().message();
  EXPECT_EQ(out2, random);
  EXPECT_EQ(r2->compressed_chunks, 0u);
  // Auto mode against a slow store compresses the compressible data too.
  StreamCompressionOptions slow{.mode = StreamCompression::kAuto, .store_bps = 10e6};
  std::string autoz = write_stream(key, "id1", "pages-3.img", compressible, slow);
  EXPECT_LT(autoz.size(), compressible.size() / 10);
  EXPECT_EQ(read_stream(keys, "id1", "pages-3.img", autoz).first, compressible);
}

TEST(ImageStreamCompression, UncompressedStreamsOfTheFirstFormatStillRead) {
  // Compression off writes exactly the first format (no chunk flagged, plain_len ==
  // cipher_len); a reader with compression support reads it.
  NodeKey key = make_key();
  std::string plain = repetitive_bytes(kImageChunkBytes + 3);
  std::string stored = write_stream(key, "id1", "a.img", plain);
  EXPECT_EQ(stored.size(), kHeader + kChunk + 9 + 3 + 16);
  EXPECT_EQ(stored[kHeader + 8], 0);  // the first chunk's flags
  auto [out, r] = read_stream(ring_of(key), "id1", "a.img", stored);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(out, plain);
}

TEST(ImageStreamCompression, ChunkDecompressingBeyondItsLengthIsRefused) {
  // A chunk that authenticates (sealed with the key) but claims 1 MiB of plaintext while its
  // frame holds 16 MiB: refused, nothing handed on, never decoded beyond 1 MiB.
  NodeKey key = make_key();
  std::string big(16 << 20, 'a');
  std::string bomb = write_records(key, "id1", "a.img", {{zstd_frame(big), 1 << 20, true}});
  auto [out, r] = read_stream(ring_of(key), "id1", "a.img", bomb);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), EBADMSG);
  EXPECT_TRUE(out.empty());
  // Claiming more than the chunk limit is refused from the record, before the body is read.
  std::string huge = write_records(key, "id1", "a.img",
                                   {{zstd_frame(big), static_cast<uint32_t>(16 << 20), true}});
  auto r2 = read_stream(ring_of(key), "id1", "a.img", huge).second;
  ASSERT_FALSE(r2);
  EXPECT_NE(r2.error().message().find("malformed header"), std::string::npos)
      << r2.error().message();
  // Two frames in one chunk, and a raw chunk whose plain_len differs from its length.
  std::string small(1000, 'b');
  std::string two =
      write_records(key, "id1", "a.img", {{zstd_frame(small) + zstd_frame(small), 2000, true}});
  EXPECT_FALSE(read_stream(ring_of(key), "id1", "a.img", two).second);
  std::string lying = write_records(key, "id1", "a.img", {{small, 500, false}});
  EXPECT_FALSE(read_stream(ring_of(key), "id1", "a.img", lying).second);
}

TEST(ImageStreamCompression, TamperedCompressedChunkIsRefusedBeforeDecompression) {
  NodeKey key = make_key();
  std::string plain = repetitive_bytes(2 * kImageChunkBytes);
  std::string stored = write_stream(key, "id1", "a.img", plain, kZstd);
  ASSERT_EQ(stored[kHeader + 8], 2);  // the first chunk is compressed, not final
  // A bit of the first chunk's ciphertext: GCM refuses it (zstd never sees it).
  std::string bad = stored;
  bad[kHeader + 9 + 5] ^= 1;
  auto r = read_stream(ring_of(key), "id1", "a.img", bad).second;
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("chunk 0 does not verify"), std::string::npos)
      << r.error().message();
}

TEST(ImageStreamCompression, FlippedCompressionFlagOrLengthIsRefused) {
  NodeKey key = make_key();
  std::string plain = repetitive_bytes(2 * kImageChunkBytes);
  std::string stored = write_stream(key, "id1", "a.img", plain, kZstd);
  // The flag cleared: the frame would be handed on as plaintext; the AAD refuses it.
  std::string unflagged = stored;
  unflagged[kHeader + 8] ^= 2;
  auto [out, r] = read_stream(ring_of(key), "id1", "a.img", unflagged);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("does not verify"), std::string::npos);
  EXPECT_TRUE(out.empty());
  // The claimed plaintext length changed (to 1 MiB).
  std::string shorter = stored;
  shorter[kHeader + 4 + 2] = 0x10;
  shorter[kHeader + 4 + 3] = 0;
  EXPECT_FALSE(read_stream(ring_of(key), "id1", "a.img", shorter).second);
  // The flag set on a raw chunk.
  std::string raw = write_stream(key, "id1", "a.img", random_bytes(1000, 8));
  raw[kHeader + 8] ^= 2;
  EXPECT_FALSE(read_stream(ring_of(key), "id1", "a.img", raw).second);
}

}  // namespace
}  // namespace arch
