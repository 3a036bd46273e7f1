// Manifest: JSON (de)serialization, the checkpoint directory walk, and SHA-256 build/verify.
//
// Format (format_version 1), one JSON object in manifest.json at the top of a checkpoint:
//   {"format_version": 1, "namespace": "...", "key": "...", "container_id": "...",
//    "node": "...", "image": "...", "created": "2024-05-01T12:00:00.123456789Z",
//    "versions": {"arch": "...", "criu": "...", "runc": "...", "kernel": "..."},
//    "timings_ms": {"dump": 812.5, ...},
//    "files": [{"path": "images/pages-1.img", "size": 1048576, "sha256": "<64 hex>"}, ...],
//    "extra": {...},                                      (extra only when not null)
//    "spec": {"digest": "<64 hex>", "fields": {"process.capabilities.bounding": "<hex>", ...}},
//    "encryption": null,
//    "seal": {"alg": "HMAC-SHA256", "key_id": "<16 hex>", "mac": "<64 hex>"}}
// Format 2 added spec, encryption and seal (see store/seal.cc for what the seal covers);
// format 1 manifests still parse (to list them) but are never restored: they are unsealed.
// "encryption" is null when the files are plain; {"format": "arch-image-stream-v1", "alg":
// "AES-256-GCM", "stream_id": "<32 hex>"} when CRIU's images were streamed through ARCH
// and stored as sealed chunks (store/image_stream.h); a reader refuses any other value.
// "files" lists every regular file of the checkpoint except manifest.json itself, sorted by
// path; directories are implied by the paths and nothing else (symlinks, devices) may exist.
// A reader refuses a format_version newer than its own and reads older ones; fields it
// does not know are ignored. The manifest is written after every file it lists, so a
// directory whose manifest verifies is complete.
#include "store/manifest.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <future>
#include <memory>
#include <set>

#include "base/file_util.h"
#include "base/hex.h"

namespace arch {
namespace {

constexpr std::size_t kHashBufferSize = 1 << 20;

const char* type_name(mode_t mode) {
  if (S_ISLNK(mode)) return "symlink";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "device";
  if (S_ISFIFO(mode)) return "fifo";
  if (S_ISSOCK(mode)) return "socket";
  return "special file";
}

Result<void> walk_dir(int dirfd, const std::string& prefix,
                      const std::function<Result<void>(const CheckpointEntry&)>& fn) {
  auto names = list_directory(dirfd);
  if (!names) return std::unexpected(names.error().wrap(prefix.empty() ? "." : prefix));
  for (const auto& name : *names) {
    CheckpointEntry entry{dirfd, name, prefix.empty() ? name : prefix + "/" + name, {}};
    if (::fstatat(dirfd, name.c_str(), &entry.st, AT_SYMLINK_NOFOLLOW) != 0) {
      return fail_errno("stat " + entry.path);
    }
    if (S_ISDIR(entry.st.st_mode)) {
      int sub = ::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub < 0) return fail_errno("open " + entry.path);
      UniqueFd sub_fd(sub);
      if (auto r = walk_dir(sub_fd.get(), entry.path, fn); !r) return r;
    } else if (!S_ISREG(entry.st.st_mode)) {
      return fail(fmt::format("{}: a {}, only regular files and directories are allowed",
                              entry.path, type_name(entry.st.st_mode)));
    }
    if (auto r = fn(entry); !r) return r;
  }
  return {};
}

// Opens a regular file met by the walk, refusing anything that is no longer one.
Result<UniqueFd> open_entry(const CheckpointEntry& e) {
  int fd = retry_eintr([&] {
    return ::openat(e.parent_fd, e.name.c_str(),
                    O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  });
  if (fd < 0) return fail_errno("open " + e.path);
  UniqueFd owned(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return fail_errno("stat " + e.path);
  if (!S_ISREG(st.st_mode)) return fail(e.path + ": no longer a regular file");
  return owned;
}

bool is_top_manifest(const CheckpointEntry& e) {
  return e.path == kManifestFileName && S_ISREG(e.st.st_mode);
}

bool valid_sha256(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// A relative path of plain components: no leading '/', no empty, "." or ".." component.
bool valid_relative_path(std::string_view path) {
  if (path.empty() || path.find('\0') != std::string_view::npos) return false;
  std::size_t start = 0;
  for (;;) {
    auto slash = path.find('/', start);
    auto part = path.substr(start, slash == std::string_view::npos ? slash : slash - start);
    if (part.empty() || part == "." || part == "..") return false;
    if (slash == std::string_view::npos) return true;
    start = slash + 1;
  }
}

Result<void> validate_chunks(const Manifest& m) {
  for (const auto& [path, c] : m.chunks) {
    auto f = std::find_if(m.files.begin(), m.files.end(),
                          [&](const ManifestFile& x) { return x.path == path; });
    if (f == m.files.end()) return fail("chunk digests of an unlisted file " + path);
    if (c.size == 0 || c.size % 4096 != 0 || c.size > (uint64_t{64} << 20))
      return fail(fmt::format("{}: bad chunk size {}", path, c.size));
    if (c.sha256.size() != (f->size + c.size - 1) / c.size)
      return fail(fmt::format("{}: {} chunk digests for {} bytes", path, c.sha256.size(), f->size));
    for (const auto& d : c.sha256)
      if (!valid_sha256(d)) return fail(path + ": a chunk sha256 is not 64 lower-case hex digits");
  }
  return {};
}

Result<void> validate_files(const std::vector<ManifestFile>& files) {
  std::set<std::string_view> seen;
  for (const auto& f : files) {
    if (!valid_relative_path(f.path)) return fail(fmt::format("bad file path \"{}\"", f.path));
    if (f.path == kManifestFileName) return fail("manifest lists manifest.json itself");
    if (!seen.insert(f.path).second) return fail("file listed twice: " + f.path);
    if (!valid_sha256(f.sha256)) return fail(f.path + ": sha256 is not 64 lower-case hex digits");
  }
  return {};
}

template <class T>
void get_optional(const nlohmann::json& j, const char* key, T& out) {
  auto it = j.find(key);
  if (it != j.end() && !it->is_null()) it->get_to(out);
}

Result<UniqueFd> open_dir(const std::string& dir) {
  return open_file(dir, O_RDONLY | O_DIRECTORY);
}

}  // namespace

void to_json(nlohmann::json& j, const Manifest& m) {
  nlohmann::json files = nlohmann::json::array();
  for (const auto& f : m.files) {
    files.push_back({{"path", f.path}, {"size", f.size}, {"sha256", f.sha256}});
  }
  j = {{"format_version", m.format_version},
       {"namespace", m.ns},
       {"key", m.key},
       {"container_id", m.container_id},
       {"node", m.node},
       {"image", m.image},
       {"created", m.created},
       {"versions",
        {{"arch", m.versions.arch},
         {"criu", m.versions.criu},
         {"runc", m.versions.runc},
         {"kernel", m.versions.kernel}}},
       {"timings_ms", m.timings_ms},
       {"files", std::move(files)}};
  if (!m.extra.is_null()) j["extra"] = m.extra;
  if (!m.chunks.empty()) {
    nlohmann::json chunks = nlohmann::json::object();
    for (const auto& [path, c] : m.chunks) chunks[path] = {{"size", c.size}, {"sha256", c.sha256}};
    j["chunks"] = std::move(chunks);
  }
  if (m.format_version >= 2) {
    j["spec"] = {{"digest", m.spec.digest}, {"fields", m.spec.fields}};
    j["encryption"] = m.encryption;
    if (!m.seal.alg.empty()) {
      j["seal"] = {{"alg", m.seal.alg}, {"key_id", m.seal.key_id}, {"mac", m.seal.mac}};
    }
  }
}

void from_json(const nlohmann::json& j, Manifest& m) {
  j.at("format_version").get_to(m.format_version);
  get_optional(j, "namespace", m.ns);
  get_optional(j, "key", m.key);
  get_optional(j, "container_id", m.container_id);
  get_optional(j, "node", m.node);
  get_optional(j, "image", m.image);
  get_optional(j, "created", m.created);
  if (auto v = j.find("versions"); v != j.end() && !v->is_null()) {
    get_optional(*v, "arch", m.versions.arch);
    get_optional(*v, "criu", m.versions.criu);
    get_optional(*v, "runc", m.versions.runc);
    get_optional(*v, "kernel", m.versions.kernel);
  }
  get_optional(j, "timings_ms", m.timings_ms);
  m.files.clear();
  for (const auto& f : j.at("files")) {
    ManifestFile file;
    f.at("path").get_to(file.path);
    const auto& size = f.at("size");
    if (!size.is_number_unsigned()) {
      throw nlohmann::json::type_error::create(302, "size of " + file.path + " is not a count",
                                               &size);
    }
    size.get_to(file.size);
    f.at("sha256").get_to(file.sha256);
    m.files.push_back(std::move(file));
  }
  m.extra = j.value("extra", nlohmann::json());
  m.chunks.clear();
  if (auto chunks = j.find("chunks"); chunks != j.end() && !chunks->is_null()) {
    for (const auto& [path, c] : chunks->items()) {
      FileChunks fc;
      const auto& size = c.at("size");
      if (!size.is_number_unsigned()) {
        throw nlohmann::json::type_error::create(302, "chunk size of " + path, &size);
      }
      size.get_to(fc.size);
      c.at("sha256").get_to(fc.sha256);
      m.chunks.emplace(path, std::move(fc));
    }
  }
  if (auto spec = j.find("spec"); spec != j.end() && !spec->is_null()) {
    get_optional(*spec, "digest", m.spec.digest);
    get_optional(*spec, "fields", m.spec.fields);
  }
  m.encryption = j.value("encryption", nlohmann::json());
  if (auto seal = j.find("seal"); seal != j.end() && !seal->is_null()) {
    seal->at("alg").get_to(m.seal.alg);
    seal->at("key_id").get_to(m.seal.key_id);
    seal->at("mac").get_to(m.seal.mac);
  }
}

std::string serialize_manifest(const Manifest& m) {
  return nlohmann::json(m).dump(2) + "\n";
}

Result<Manifest> parse_manifest(std::string_view text) {
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return fail("manifest: not valid JSON");
  return parse_manifest_json(j);
}

Result<Manifest> parse_manifest_json(const nlohmann::json& j) {
  if (!j.is_object()) return fail("manifest: not a JSON object");
  auto version = j.find("format_version");
  if (version == j.end() || !version->is_number_integer()) {
    return fail("manifest: format_version missing or not an integer");
  }
  auto v = version->get<int64_t>();
  if (v > kManifestFormatVersion) {
    return fail(fmt::format(
        "manifest: format version {} is newer than this ARCH reads (up to {}); upgrade ARCH", v,
        kManifestFormatVersion));
  }
  if (v < 1) return fail(fmt::format("manifest: invalid format version {}", v));
  Manifest m;
  try {
    j.get_to(m);
  } catch (const nlohmann::json::exception& e) {
    return fail(std::string("manifest: ") + e.what());
  }
  if (auto files = validate_files(m.files); !files) {
    return std::unexpected(files.error().wrap("manifest"));
  }
  if (auto chunks = validate_chunks(m); !chunks) {
    return std::unexpected(chunks.error().wrap("manifest"));
  }
  if (!m.encryption.is_null() && manifest_stream_id(m).empty()) {
    return fail("manifest: encrypted checkpoint (\"encryption\" is set): this ARCH cannot read it");
  }
  return m;
}

nlohmann::json stream_encryption(std::string_view stream_id) {
  return {{"format", "arch-image-stream-v1"}, {"alg", "AES-256-GCM"}, {"stream_id", stream_id}};
}

std::string manifest_stream_id(const Manifest& m) {
  const auto& e = m.encryption;
  if (!e.is_object() || e.size() != 3) return {};
  auto format = e.find("format"), alg = e.find("alg"), id = e.find("stream_id");
  if (format == e.end() || alg == e.end() || id == e.end() || !id->is_string() ||
      *format != "arch-image-stream-v1" || *alg != "AES-256-GCM") {
    return {};
  }
  auto text = id->get<std::string>();
  if (text.size() != 32 || text.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return {};
  }
  return text;
}

namespace {

using DigestCtx = std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)>;

Result<DigestCtx> new_sha256() {
  DigestCtx ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    return fail("sha256: cannot initialise OpenSSL digest");
  }
  return ctx;
}

std::string final_hex(EVP_MD_CTX* ctx) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  if (EVP_DigestFinal_ex(ctx, md, &md_len) != 1) return {};
  return to_hex(md, md_len);
}

std::string sha256_of(const unsigned char* data, std::size_t len) {
  auto ctx = new_sha256();
  if (!ctx || EVP_DigestUpdate(ctx->get(), data, len) != 1) return {};
  return final_hex(ctx->get());
}

// Fills `buffer` (up to `len` bytes) unless the file ends first; returns the bytes read.
Result<std::size_t> read_up_to(int fd, unsigned char* buffer, std::size_t len) {
  std::size_t got = 0;
  while (got < len) {
    ssize_t n = retry_eintr([&] { return ::read(fd, buffer + got, len - got); });
    if (n < 0) return fail_errno("read");
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  return got;
}

}  // namespace

Result<FileDigest> digest_fd(int fd, uint64_t chunk_size) {
  if (chunk_size != 0 && chunk_size % kHashBufferSize != 0)
    return fail("digest: chunk size must be a multiple of 1 MiB");
  auto ctx = new_sha256();
  if (!ctx) return std::unexpected(ctx.error());
  std::size_t step = chunk_size != 0 ? static_cast<std::size_t>(chunk_size) : kHashBufferSize;
  auto buffer = std::make_unique_for_overwrite<unsigned char[]>(step);
  FileDigest out;
  for (;;) {
    auto n = read_up_to(fd, buffer.get(), step);
    if (!n) return std::unexpected(n.error());
    if (*n == 0) break;
    // The chunk's own digest on a second thread while this one feeds the file's.
    std::future<std::string> chunk;
    if (chunk_size != 0) {
      chunk = std::async(std::launch::async,
                         [p = buffer.get(), len = *n] { return sha256_of(p, len); });
    }
    bool updated = EVP_DigestUpdate(ctx->get(), buffer.get(), *n) == 1;
    if (chunk.valid()) out.chunks.push_back(chunk.get());
    if (!updated) return fail("sha256: digest update failed");
    if (chunk_size != 0 && out.chunks.back().empty()) return fail("sha256: chunk digest failed");
    out.size += *n;
    if (*n < step) break;
  }
  out.sha256 = final_hex(ctx->get());
  if (out.sha256.empty()) return fail("sha256: digest final failed");
  return out;
}

bool is_pages_image_path(std::string_view path) {
  constexpr std::string_view kPrefix = "images/pages-";
  return path.starts_with(kPrefix) && path.ends_with(".img") && path.size() > kPrefix.size() + 4 &&
         path.find('/', kPrefix.size()) == std::string_view::npos;
}

bool has_chunked_pages(const Manifest& m) {
  bool any = false;
  for (const auto& f : m.files) {
    if (!is_pages_image_path(f.path)) continue;
    if (!m.chunks.contains(f.path)) return false;
    any = true;
  }
  return any;
}

Result<void> walk_checkpoint_dir(int dirfd,
                                 const std::function<Result<void>(const CheckpointEntry&)>& fn) {
  return walk_dir(dirfd, "", fn);
}

// A file `base.files` already lists (the writer hashed it as it wrote it: a streamed image,
// criu/criu_stream.h) is taken as listed when its size on disk matches, not read again.
Result<Manifest> build_manifest_files(int dirfd, Manifest base) {
  std::map<std::string, ManifestFile> known;
  for (auto& f : base.files) known.emplace(f.path, std::move(f));
  base.files.clear();
  // A listed pages image keeps the chunk digests its writer computed (criu/page_receiver.h;
  // a migrated checkpoint's pages, peer/migrate.h).
  std::map<std::string, FileChunks> known_chunks = std::move(base.chunks);
  base.chunks.clear();
  auto walked = walk_checkpoint_dir(dirfd, [&](const CheckpointEntry& e) -> Result<void> {
    if (!S_ISREG(e.st.st_mode) || is_top_manifest(e)) return {};
    if (auto it = known.find(e.path); it != known.end() &&
                                      it->second.size == static_cast<uint64_t>(e.st.st_size) &&
                                      it->second.sha256.size() == 64) {
      base.files.push_back(it->second);
      if (auto c = known_chunks.find(e.path); c != known_chunks.end())
        base.chunks[e.path] = std::move(c->second);
      return {};
    }
    auto fd = open_entry(e);
    if (!fd) return std::unexpected(fd.error());
    bool pages = is_pages_image_path(e.path);
    auto digest = digest_fd(fd->get(), pages ? kPagesChunkSize : 0);
    if (!digest) return std::unexpected(digest.error().wrap(e.path));
    base.files.push_back({e.path, digest->size, std::move(digest->sha256)});
    if (pages) base.chunks[e.path] = {kPagesChunkSize, std::move(digest->chunks)};
    return {};
  });
  if (!walked) return std::unexpected(walked.error().wrap("manifest"));
  std::sort(base.files.begin(), base.files.end(),
            [](const ManifestFile& a, const ManifestFile& b) { return a.path < b.path; });
  return base;
}

Result<Manifest> build_manifest_files(const std::string& dir, Manifest base) {
  auto fd = open_dir(dir);
  if (!fd) return std::unexpected(fd.error());
  auto m = build_manifest_files(fd->get(), std::move(base));
  if (!m) return std::unexpected(m.error().wrap(dir));
  return m;
}

// The sealed image streams of a streamed checkpoint (images/*.arch under a manifest whose
// "encryption" names its stream id) are checked by size only: their every chunk is
// authenticated, bound to the sealed stream id, image name, index and final flag, when it
// is read (store/image_stream.h), so the restore reads them once instead of hashing them
// first. Every other file is hashed.
static bool authenticated_when_read(const Manifest& m, std::string_view path) {
  return path.starts_with("images/") && path.ends_with(".arch") &&
         path.find('/', 7) == std::string_view::npos && !manifest_stream_id(m).empty();
}

Result<void> verify_manifest(int dirfd, const Manifest& m) {
  return verify_manifest(dirfd, m, VerifyScope::kAllFiles);
}

Result<void> verify_manifest(int dirfd, const Manifest& m, VerifyScope scope) {
  std::map<std::string_view, const ManifestFile*> listed;
  for (const auto& f : m.files) listed.emplace(f.path, &f);
  std::set<std::string_view> seen;
  auto walked = walk_checkpoint_dir(dirfd, [&](const CheckpointEntry& e) -> Result<void> {
    if (!S_ISREG(e.st.st_mode) || is_top_manifest(e)) return {};
    auto it = listed.find(e.path);
    if (it == listed.end()) return fail("unlisted file " + e.path);
    const ManifestFile& want = *it->second;
    auto size = static_cast<uint64_t>(e.st.st_size);
    if (size != want.size) {
      return fail(fmt::format("{}: size {} bytes, manifest says {}", e.path, size, want.size));
    }
    if (authenticated_when_read(m, e.path) ||
        (scope == VerifyScope::kDeferChunked && m.chunks.contains(e.path))) {
      seen.insert(it->first);
      return {};
    }
    auto fd = open_entry(e);
    if (!fd) return std::unexpected(fd.error());
    auto digest = digest_fd(fd->get());
    if (!digest) return std::unexpected(digest.error().wrap(e.path));
    if (digest->size != want.size) {
      return fail(
          fmt::format("{}: read {} bytes, manifest says {}", e.path, digest->size, want.size));
    }
    if (digest->sha256 != want.sha256) {
      return fail(
          fmt::format("{}: sha256 {}, manifest says {}", e.path, digest->sha256, want.sha256));
    }
    seen.insert(it->first);
    return {};
  });
  if (!walked) return std::unexpected(walked.error().wrap("verify"));
  for (const auto& f : m.files) {
    if (!seen.contains(f.path)) return fail("verify: missing file " + f.path);
  }
  return {};
}

Result<void> verify_manifest(const std::string& dir, const Manifest& m) {
  auto fd = open_dir(dir);
  if (!fd) return std::unexpected(fd.error());
  auto r = verify_manifest(fd->get(), m);
  if (!r) return std::unexpected(r.error().wrap(dir));
  return r;
}

}  // namespace arch
