// StreamCompression: zstd (libzstd) per chunk, the level policy, bounded decompression.
#include "store/stream_compression.h"

#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <thread>

namespace arch {
namespace {

constexpr int kDefaultZstdLevel = 3;
constexpr int kMaxWorkers = 4;
constexpr std::size_t kJobBytes = 1 << 20;         // zstd's job per worker: a 4 MiB chunk = 4 jobs
constexpr std::size_t kMinSampleBytes = 64 << 10;  // smaller chunks time mostly overheads
constexpr double kWorthIt = 0.97;                  // compress only if it saves 3% or more
constexpr int kWindowLogMax = 23;                  // 8 MiB: the largest chunk

std::unexpected<Error> refuse(std::string why) {
  return std::unexpected(Error(std::move(why), EBADMSG));
}

double ewma(double old, double sample, bool known) {
  return known ? (old + sample) / 2 : sample;
}

}  // namespace

Result<StreamCompression> parse_stream_compression(std::string_view text) {
  if (text == "auto") return StreamCompression::kAuto;
  if (text == "off") return StreamCompression::kOff;
  if (text == "zstd") return StreamCompression::kZstd;
  return fail(ErrorKind::kInvalidInput, "stream compression must be auto, off or zstd");
}

LevelPolicy::LevelPolicy(const StreamCompressionOptions& options)
    : mode_(options.mode),
      fixed_level_(options.level),
      store_bps_(options.store_bps > 0 ? options.store_bps : kAssumedStoreBps) {
  if (fixed_level_ > 0) {
    levels_.resize(1);
    current_ = 0;
  } else {
    levels_.resize(std::size(kAutoLevels));
  }
}

int LevelPolicy::next_level() {
  if (mode_ == StreamCompression::kOff) return 0;
  int level = fixed_level_ > 0 ? fixed_level_ : kAutoLevels[current_];
  if (mode_ == StreamCompression::kZstd) return fixed_level_ > 0 ? fixed_level_ : kDefaultZstdLevel;
  if (!raw_) return level;
  if (++since_probe_ < kProbeEvery) return 0;
  since_probe_ = 0;
  return level;
}

double LevelPolicy::cost(int index) const {
  if (index < 0) return 1 / store_bps_;
  const Measured& m = levels_[static_cast<std::size_t>(index)];
  return m.known ? m.seconds_per_byte + m.ratio / store_bps_ : -1;
}

void LevelPolicy::observe(int level, std::size_t plain, std::size_t compressed, double seconds) {
  if (mode_ != StreamCompression::kAuto || plain == 0) return;
  int index = 0;
  if (fixed_level_ <= 0) {
    const int* at = std::find(std::begin(kAutoLevels), std::end(kAutoLevels), level);
    if (at == std::end(kAutoLevels)) return;
    index = static_cast<int>(at - std::begin(kAutoLevels));
  } else if (level != fixed_level_) {
    return;
  }
  Measured& m = levels_[static_cast<std::size_t>(index)];
  double p = static_cast<double>(plain);
  m.seconds_per_byte = ewma(m.seconds_per_byte, std::max(seconds, 0.0) / p, m.known);
  m.ratio = ewma(m.ratio, static_cast<double>(std::min(compressed, plain)) / p, m.known);
  m.known = true;
  current_ = index;
  decide();
}

// After a measurement at current_: explore a neighbour that may be cheaper, else take the
// cheapest level measured, or raw when no level saves time.
void LevelPolicy::decide() {
  const Measured& m = levels_[static_cast<std::size_t>(current_)];
  bool worth = cost(current_) < kWorthIt * cost(-1);
  bool store_bound = m.ratio / store_bps_ > m.seconds_per_byte;
  int up = current_ + 1, down = current_ - 1;
  int n = static_cast<int>(levels_.size());
  if (worth && store_bound && up < n && !levels_[static_cast<std::size_t>(up)].known) {
    current_ = up;
    raw_ = false;
    return;
  }
  if (!store_bound && down >= 0 && !levels_[static_cast<std::size_t>(down)].known) {
    current_ = down;
    raw_ = false;
    return;
  }
  int best = current_;
  for (int i = 0; i < n; ++i) {
    if (cost(i) >= 0 && cost(i) < cost(best)) best = i;
  }
  current_ = best;
  raw_ = !(cost(best) < kWorthIt * cost(-1));
  since_probe_ = 0;
}

struct ChunkCompressor::Ctx {
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ~Ctx() { ZSTD_freeCCtx(cctx); }
};

ChunkCompressor::ChunkCompressor(std::unique_ptr<Ctx> ctx, const StreamCompressionOptions& options)
    : ctx_(std::move(ctx)), policy_(options) {}
ChunkCompressor::~ChunkCompressor() = default;

Result<std::unique_ptr<ChunkCompressor>> ChunkCompressor::create(
    const StreamCompressionOptions& options) {
  if (options.mode == StreamCompression::kOff) return std::unique_ptr<ChunkCompressor>();
  if (options.level < 0 || options.level > ZSTD_maxCLevel())
    return fail(ErrorKind::kInvalidInput, "stream compression: zstd level out of range");
  auto ctx = std::make_unique<Ctx>();
  if (ctx->cctx == nullptr) return fail("stream compression: ZSTD_createCCtx failed");
  int workers =
      options.workers > 0
          ? options.workers
          : std::clamp(static_cast<int>(std::thread::hardware_concurrency()), 1, kMaxWorkers);
  // A libzstd built without threads refuses workers: compress on this thread then.
  if (!ZSTD_isError(ZSTD_CCtx_setParameter(ctx->cctx, ZSTD_c_nbWorkers, workers)))
    (void)ZSTD_CCtx_setParameter(ctx->cctx, ZSTD_c_jobSize, static_cast<int>(kJobBytes));
  (void)ZSTD_CCtx_setParameter(ctx->cctx, ZSTD_c_contentSizeFlag, 1);
  (void)ZSTD_CCtx_setParameter(ctx->cctx, ZSTD_c_checksumFlag, 0);  // GCM authenticates
  return std::unique_ptr<ChunkCompressor>(new ChunkCompressor(std::move(ctx), options));
}

Result<bool> ChunkCompressor::compress(std::string_view plain, std::string& frame) {
  int level = policy_.next_level();
  if (level == 0 || plain.empty()) return false;
  if (ZSTD_isError(ZSTD_CCtx_setParameter(ctx_->cctx, ZSTD_c_compressionLevel, level)))
    return fail("stream compression: bad zstd level");
  frame.resize(ZSTD_compressBound(plain.size()));
  auto start = std::chrono::steady_clock::now();
  std::size_t n =
      ZSTD_compress2(ctx_->cctx, frame.data(), frame.size(), plain.data(), plain.size());
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (ZSTD_isError(n))
    return fail(std::string("stream compression: zstd: ") + ZSTD_getErrorName(n));
  if (plain.size() >= kMinSampleBytes) policy_.observe(level, plain.size(), n, seconds);
  if (n >= plain.size()) return false;
  frame.resize(n);
  ++compressed_;
  return true;
}

struct ChunkDecompressor::Ctx {
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  ~Ctx() { ZSTD_freeDCtx(dctx); }
};

ChunkDecompressor::ChunkDecompressor(std::unique_ptr<Ctx> ctx) : ctx_(std::move(ctx)) {}
ChunkDecompressor::~ChunkDecompressor() = default;

Result<std::unique_ptr<ChunkDecompressor>> ChunkDecompressor::create() {
  auto ctx = std::make_unique<Ctx>();
  if (ctx->dctx == nullptr) return fail("stream compression: ZSTD_createDCtx failed");
  (void)ZSTD_DCtx_setParameter(ctx->dctx, ZSTD_d_windowLogMax, kWindowLogMax);
  return std::unique_ptr<ChunkDecompressor>(new ChunkDecompressor(std::move(ctx)));
}

Result<void> ChunkDecompressor::decompress(std::string_view frame, std::size_t plain_len,
                                           std::size_t limit, std::string& plain) {
  if (plain_len > limit) return refuse("compressed chunk larger than the chunk limit");
  // Exactly one frame, declaring exactly plain_len bytes: nothing else is decoded.
  std::size_t frame_len = ZSTD_findFrameCompressedSize(frame.data(), frame.size());
  if (ZSTD_isError(frame_len) || frame_len != frame.size())
    return refuse("compressed chunk is not one zstd frame");
  unsigned long long declared = ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (declared == ZSTD_CONTENTSIZE_UNKNOWN || declared == ZSTD_CONTENTSIZE_ERROR ||
      declared != plain_len) {
    return refuse("compressed chunk does not declare its authenticated length");
  }
  // One shot into exactly plain_len bytes: a frame that decodes to more fails here.
  plain.resize(plain_len);
  std::size_t n =
      ZSTD_decompressDCtx(ctx_->dctx, plain.data(), plain.size(), frame.data(), frame.size());
  if (ZSTD_isError(n) || n != plain_len) {
    plain.clear();
    return refuse(std::string("compressed chunk does not decompress to its length") +
                  (ZSTD_isError(n) ? std::string(" (") + ZSTD_getErrorName(n) + ")" : ""));
  }
  return {};
}

}  // namespace arch
