// CheckpointArchive: libarchive (pax tar + zstd filter) in both directions.
#include "store/checkpoint_archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string_view>
#include <vector>

#include "base/expansion_limit.h"
#include "base/file_util.h"
#include "base/names.h"
#include "base/unique_fd.h"
#include "store/manifest.h"
#include "store/seal.h"

namespace arch {
namespace {

using WriteArchive = std::unique_ptr<archive, int (*)(archive*)>;

Error archive_error(archive* a, const std::string& what) {
  const char* msg = archive_error_string(a);
  return Error(what + ": " + (msg != nullptr ? msg : "libarchive error"));
}

// The store's names and the archive's (Podman's and CRI-O's checkpoint archive layout, which
// checkpointctl reads): CRIU's images are `checkpoint/` there, `images/` in the store.
constexpr std::string_view kStoreImages = "images";
constexpr std::string_view kArchiveImages = "checkpoint";

std::string archive_name_of(const std::string& store_path) {
  if (store_path == kStoreImages) return std::string(kArchiveImages);
  if (store_path.starts_with(std::string(kStoreImages) + "/")) {
    return std::string(kArchiveImages) + store_path.substr(kStoreImages.size());
  }
  return store_path;
}

// The inverse, for import (an archive of the older layout, `images/` itself, maps to itself).
std::string store_name_of(const std::string& archive_path) {
  if (archive_path == kArchiveImages) return std::string(kStoreImages);
  if (archive_path.starts_with(std::string(kArchiveImages) + "/")) {
    return std::string(kStoreImages) + archive_path.substr(kArchiveImages.size());
  }
  return archive_path;
}

// Entries export derives for other tools (not sealed, never written to a store by import):
// Podman's config.dump, spec.dump (the sealed spec.json with the annotations checkpointctl
// names a container by), deleted.files and network.status, and a top-level copy of CRIU's
// stats-dump.
bool derived_entry(const std::string& path) {
  return path == "config.dump" || path == "deleted.files" || path == "network.status" ||
         path == "stats-dump" || path == "spec.dump";
}
constexpr uint64_t kMaxDerivedEntryBytes = 4 << 20;
constexpr uint64_t kDerivedEntries = 5;

Result<void> add_bytes(archive* a, const std::string& path, std::string_view data, time_t mtime) {
  std::unique_ptr<archive_entry, void (*)(archive_entry*)> entry(archive_entry_new(),
                                                                 archive_entry_free);
  archive_entry_set_pathname(entry.get(), path.c_str());
  archive_entry_set_mode(entry.get(), S_IFREG | 0600);
  archive_entry_set_mtime(entry.get(), mtime, 0);
  archive_entry_set_size(entry.get(), static_cast<la_int64_t>(data.size()));
  if (archive_write_header(a, entry.get()) != ARCHIVE_OK) {
    return std::unexpected(archive_error(a, "write " + path));
  }
  if (!data.empty() &&
      archive_write_data(a, data.data(), data.size()) != static_cast<la_ssize_t>(data.size())) {
    return std::unexpected(archive_error(a, "write " + path));
  }
  return {};
}

// The paths the rootfs diff deletes ("/d/x" for its whiteout `d/.wh.x`), as deleted.files
// lists them; empty when there is no diff or it cannot be read.
std::vector<std::string> deleted_files(const std::string& diff_path) {
  std::vector<std::string> out;
  std::unique_ptr<archive, int (*)(archive*)> a(archive_read_new(), archive_read_free);
  if (!a) return out;
  archive_read_support_format_tar(a.get());
  archive_read_support_filter_none(a.get());
  archive_read_support_filter_zstd(a.get());
  if (archive_read_open_filename(a.get(), diff_path.c_str(), 1 << 16) != ARCHIVE_OK) return out;
  archive_entry* e = nullptr;
  while (archive_read_next_header(a.get(), &e) == ARCHIVE_OK) {
    const char* p = archive_entry_pathname(e);
    if (p == nullptr) continue;
    std::string path = p;
    auto slash = path.rfind('/');
    std::string dir = slash == std::string::npos ? "" : path.substr(0, slash + 1);
    std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
    if (!name.starts_with(".wh.") || name.starts_with(".wh..wh.")) continue;
    if (dir.starts_with("./")) dir.erase(0, 2);
    out.push_back("/" + dir + name.substr(4));
  }
  return out;
}

// config.dump (Podman's container config, the fields checkpointctl reads), spec.dump when the
// checkpoint has none, deleted.files, network.status and stats-dump: what checkpointctl and
// Podman-style tools expect beside the images, derived from the sealed manifest and files.
Result<void> add_derived(archive* a, const std::string& ckpt_dir, const std::string& manifest_text,
                         time_t mtime) {
  auto m = parse_manifest(manifest_text);
  if (!m) return {};  // not a manifest ARCH reads: the archive holds the checkpoint only
  bool has_spec = false, has_stats = false;
  for (const auto& f : m->files) {
    has_spec = has_spec || f.path == "spec.json";
    has_stats = has_stats || f.path == "criu/stats-dump";
  }
  nlohmann::json spec;
  if (has_spec) {
    auto text = read_file(ckpt_dir + "/spec.json", kMaxDerivedEntryBytes);
    if (text) spec = nlohmann::json::parse(*text, nullptr, false);
  }
  if (!spec.is_object()) {
    // A job's checkpoint (or one older than spec.json): a stand-in naming what is known.
    spec = {{"ociVersion", "1.0.2"},
            {"annotations", {{"org.arch.spec", "stand-in: the checkpoint holds no spec"}}}};
  }
  if (!spec.contains("annotations") || !spec["annotations"].is_object()) {
    spec["annotations"] = nlohmann::json::object();
  }
  nlohmann::json& notes = spec["annotations"];
  auto annotation = [&](const char* name) -> std::string {
    auto it = notes.find(name);
    return it != notes.end() && it->is_string() ? it->get<std::string>() : "";
  };
  std::string id = m->container_id.empty() ? m->key : m->container_id;
  std::string image = !m->image.empty() ? m->image : annotation("io.kubernetes.cri.image-name");
  // checkpointctl names a containerd container by its CRI name: a plain one by its id.
  if (annotation("io.kubernetes.cri.container-name").empty()) {
    notes["io.kubernetes.cri.container-name"] = id;
  }
  notes["org.arch.namespace"] = m->ns;
  notes["org.arch.key"] = m->key;
  std::string name = annotation("io.kubernetes.cri.container-name");
  nlohmann::json config = {
      {"id", id},
      {"name", name},
      {"rootfsImageName", image},
      {"runtime", "arch-runc"},
      // Go's time.Time reads RFC 3339 only (an empty string is an error).
      {"createdTime", m->created.empty() ? "0001-01-01T00:00:00Z" : m->created},
      {"checkpointedTime", m->created.empty() ? "0001-01-01T00:00:00Z" : m->created},
      // ARCH's own: where the checkpoint belongs (its sealed manifest says the same).
      {"archNamespace", m->ns},
      {"archKey", m->key},
      {"archNode", m->node},
      {"archVersion", m->versions.arch},
      {"criuVersion", m->versions.criu},
      {"runcVersion", m->versions.runc}};
  if (auto ok = add_bytes(a, "config.dump", config.dump(2) + "\n", mtime); !ok) return ok;
  if (auto ok = add_bytes(a, "spec.dump", spec.dump(2) + "\n", mtime); !ok) return ok;
  std::string deleted = nlohmann::json(deleted_files(ckpt_dir + "/rootfs-diff.tar")).dump() + "\n";
  // Import bounds each derived entry; a longer list (~100k paths) stays in the diff only.
  if (deleted.size() > kMaxDerivedEntryBytes) deleted = "[]\n";
  if (auto ok = add_bytes(a, "deleted.files", deleted, mtime); !ok) return ok;
  if (auto ok = add_bytes(a, "network.status", "[]\n", mtime); !ok) return ok;
  if (has_stats) {
    auto text = read_file(ckpt_dir + "/criu/stats-dump", kMaxDerivedEntryBytes);
    if (text) {
      if (auto ok = add_bytes(a, "stats-dump", *text, mtime); !ok) return ok;
    }
  }
  return {};
}

// Bytes of the checkpoint's files written so far, for ExportOptions::progress.
struct ExportCount {
  const ByteProgress* progress = nullptr;
  uint64_t done = 0;
  uint64_t total = 0;
};

Result<void> add_file(archive* a, const CheckpointEntry& e, const std::string& ckpt_dir,
                      ExportCount* count = nullptr) {
  std::unique_ptr<archive_entry, void (*)(archive_entry*)> entry(archive_entry_new(),
                                                                 archive_entry_free);
  archive_entry_set_pathname(entry.get(), archive_name_of(e.path).c_str());
  archive_entry_set_mode(entry.get(), e.st.st_mode);
  archive_entry_set_mtime(entry.get(), e.st.st_mtim.tv_sec, 0);
  bool regular = S_ISREG(e.st.st_mode);
  archive_entry_set_size(entry.get(), regular ? e.st.st_size : 0);
  if (archive_write_header(a, entry.get()) != ARCHIVE_OK) {
    return std::unexpected(archive_error(a, "write " + e.path));
  }
  if (!regular) return {};
  UniqueFd fd(::openat(e.parent_fd, e.name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return fail_errno("open " + ckpt_dir + "/" + e.path);
  std::vector<char> buf(1 << 20);
  for (;;) {
    ssize_t n = retry_eintr([&] { return ::read(fd.get(), buf.data(), buf.size()); });
    if (n < 0) return fail_errno("read " + e.path);
    if (n == 0) break;
    if (archive_write_data(a, buf.data(), static_cast<std::size_t>(n)) != n) {
      return std::unexpected(archive_error(a, "write " + e.path));
    }
    if (count != nullptr && count->progress != nullptr && *count->progress) {
      count->done += static_cast<uint64_t>(n);
      (*count->progress)(count->done, count->total);
    }
  }
  return {};
}

Result<void> write_archive(const std::string& ckpt_dir, int out_fd, const ExportOptions& o) {
  WriteArchive a(archive_write_new(), archive_write_free);
  if (!a) return fail("archive_write_new failed");
  bool ok = archive_write_set_format_pax_restricted(a.get()) == ARCHIVE_OK &&
            archive_write_set_bytes_in_last_block(a.get(), 1) == ARCHIVE_OK;
  if (ok && o.compress) {
    ok = archive_write_add_filter_zstd(a.get()) == ARCHIVE_OK &&
         archive_write_set_filter_option(a.get(), "zstd", "compression-level",
                                         std::to_string(o.level).c_str()) == ARCHIVE_OK;
  }
  if (!ok || archive_write_open_fd(a.get(), out_fd) != ARCHIVE_OK) {
    return std::unexpected(archive_error(a.get(), "start archive"));
  }
  auto dir = open_file(ckpt_dir, O_RDONLY | O_DIRECTORY);
  if (!dir) return std::unexpected(dir.error());
  // manifest.json first: import plans (and bounds) everything after it from the manifest.
  CheckpointEntry top{dir->get(), kManifestFileName, kManifestFileName, {}};
  if (::fstatat(dir->get(), kManifestFileName, &top.st, AT_SYMLINK_NOFOLLOW) != 0) {
    return fail_errno("stat " + ckpt_dir + "/" + kManifestFileName);
  }
  if (!S_ISREG(top.st.st_mode)) return fail(ckpt_dir + "/manifest.json is not a regular file");
  if (auto added = add_file(a.get(), top, ckpt_dir); !added) return added;
  auto manifest_text = read_file(ckpt_dir + "/" + kManifestFileName, kMaxArchiveManifestBytes);
  if (!manifest_text) return std::unexpected(manifest_text.error());
  if (auto added = add_derived(a.get(), ckpt_dir, *manifest_text, top.st.st_mtim.tv_sec); !added) {
    return added;
  }
  ExportCount count{&o.progress, 0, 0};
  if (o.progress) {
    auto sized = walk_checkpoint_dir(dir->get(), [&](const CheckpointEntry& e) -> Result<void> {
      if (e.path != kManifestFileName && S_ISREG(e.st.st_mode))
        count.total += static_cast<uint64_t>(e.st.st_size);
      return {};
    });
    if (!sized) return sized;
  }
  auto walked = walk_checkpoint_dir(dir->get(), [&](const CheckpointEntry& e) -> Result<void> {
    if (e.path == kManifestFileName) return {};
    return add_file(a.get(), e, ckpt_dir, &count);
  });
  if (!walked) return walked;
  if (archive_write_close(a.get()) != ARCHIVE_OK) {
    return std::unexpected(archive_error(a.get(), "finish archive"));
  }
  return {};
}

// A relative path of plain components: no "", ".", ".." and no leading '/'.
bool safe_relative_path(const std::string& p) {
  if (p.empty() || p.front() == '/') return false;
  std::size_t start = 0;
  while (start <= p.size()) {
    auto slash = p.find('/', start);
    std::string c = p.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (c == ".." || c == ".") return false;
    if (c.empty() && slash != std::string::npos && slash + 1 != p.size()) return false;
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return true;
}

// The archive file read by hand so that a zstd stream's frame headers are checked (window
// size) before libarchive's decompressor sees them.
struct ArchiveSource {
  int fd = -1;
  std::vector<char> buf = std::vector<char>(1 << 20);
  uint64_t bytes = 0;
  std::optional<Error> error;
  std::optional<ZstdWindowCheck> zstd;
  const ByteProgress* progress = nullptr;  // import's: bytes of the archive read
  uint64_t total = 0;                      // the archive's size
};

la_ssize_t read_source(archive* a, void* data, const void** out) {
  auto* s = static_cast<ArchiveSource*>(data);
  ssize_t n = retry_eintr([&] { return ::read(s->fd, s->buf.data(), s->buf.size()); });
  if (n < 0) {
    s->error = errno_error("read");
    archive_set_error(a, s->error->code(), "read failed");
    return -1;
  }
  std::string_view got(s->buf.data(), static_cast<std::size_t>(n));
  if (s->bytes == 0 && is_zstd_magic(got)) s->zstd.emplace();
  if (s->zstd) {
    if (auto ok = s->zstd->feed(got); !ok) {
      s->error = ok.error();
      archive_set_error(a, ok.error().code() != 0 ? ok.error().code() : EINVAL, "%s",
                        ok.error().message().c_str());
      return -1;
    }
  }
  s->bytes += static_cast<uint64_t>(n);
  if (s->progress != nullptr && *s->progress && n > 0) (*s->progress)(s->bytes, s->total);
  *out = s->buf.data();
  return n;
}

// What the archive's manifest allows: its files with their sizes, and their parent
// directories. Every other entry is refused before anything of it is written.
struct ArchivePlan {
  std::map<std::string, uint64_t> files;  // path -> size; erased once extracted
  std::set<std::string> dirs;
  ExpansionLimits limits;
};

ArchivePlan plan_from(const Manifest& m, uint64_t manifest_size, const ExpansionLimits& caps) {
  ArchivePlan plan;
  uint64_t bytes = manifest_size;
  for (const auto& f : m.files) {
    plan.files.emplace(f.path, f.size);
    bytes = f.size > kUnlimited - bytes ? kUnlimited : bytes + f.size;
    for (auto slash = f.path.find('/'); slash != std::string::npos;
         slash = f.path.find('/', slash + 1)) {
      plan.dirs.insert(f.path.substr(0, slash));
    }
  }
  // Plus the entries export derives for other tools (skipped, but they pass by in the stream).
  bytes = bytes > kUnlimited - kDerivedEntries * kMaxDerivedEntryBytes
              ? kUnlimited
              : bytes + kDerivedEntries * kMaxDerivedEntryBytes;
  plan.limits = caps.min({bytes, 1 + plan.files.size() + plan.dirs.size() + kDerivedEntries});
  return plan;
}

// Extracts one archive into a directory, within its manifest and the node's caps.
class Extractor {
 public:
  Extractor(archive* a, const ArchiveSource& source, std::string dest, const ExpansionLimits& caps)
      : a_(a), source_(source), dest_(std::move(dest)), caps_(caps), budget_(caps) {}
  Result<void> entry(archive_entry* e);

 private:
  Result<void> manifest(archive_entry* e, const std::string& path);
  Result<void> file(archive_entry* e, const std::string& path);
  Result<void> write_data(int fd, const std::string& path, uint64_t allowed, std::string* keep);
  Result<void> make_parents(const std::string& path);
  uint64_t stream_bytes() const {
    return archive_filter_count(a_) > 1 ? static_cast<uint64_t>(archive_filter_bytes(a_, 0))
                                        : source_.bytes;
  }

  archive* a_;
  const ArchiveSource& source_;
  std::string dest_;
  ExpansionLimits caps_;
  ExpansionBudget budget_;
  std::optional<ArchivePlan> plan_;
};

Result<void> Extractor::entry(archive_entry* e) {
  std::string path = archive_entry_pathname(e) != nullptr ? archive_entry_pathname(e) : "";
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  if (!safe_relative_path(path)) return fail("archive holds an unsafe path '" + path + "'");
  if (plan_) {
    // What export derived for other tools is skipped, unwritten (its data is never read, but
    // it counts against the stream and is bounded); everything else by its store name.
    if (derived_entry(path) && !plan_->files.contains(path)) {
      if (archive_entry_filetype(e) != AE_IFREG || !archive_entry_size_is_set(e) ||
          archive_entry_size(e) < 0 ||
          static_cast<uint64_t>(archive_entry_size(e)) > kMaxDerivedEntryBytes) {
        return std::unexpected(Error("'" + path + "' is not a small regular file", EFBIG));
      }
      if (auto ok = budget_.add_entry(); !ok) return ok;
      return budget_.check_stream(stream_bytes());
    }
    path = store_name_of(path);
  }
  if (auto ok = budget_.add_entry(); !ok) return ok;
  if (auto ok = budget_.check_stream(stream_bytes()); !ok) return ok;
  mode_t type = archive_entry_filetype(e);
  if (!plan_) {
    if (path != kManifestFileName || type != AE_IFREG) {
      return fail("archive does not begin with manifest.json but with '" + path +
                  "' (not written by this ARCH version?)");
    }
    return manifest(e, path);
  }
  if (type == AE_IFDIR) {
    if (!plan_->dirs.contains(path)) return fail("directory '" + path + "' is not in the manifest");
    if (auto ok = make_parents(path); !ok) return ok;
    std::string target = dest_ + "/" + path;
    if (::mkdir(target.c_str(), 0700) != 0 && errno != EEXIST) return fail_errno("mkdir " + path);
    return {};
  }
  if (type != AE_IFREG) return fail("archive holds '" + path + "', which is not a regular file");
  return file(e, path);
}

// The first entry: kept in memory as it is written (bounded), then parsed for the plan.
Result<void> Extractor::manifest(archive_entry* e, const std::string& path) {
  if (!archive_entry_size_is_set(e) || archive_entry_size(e) < 0 ||
      static_cast<uint64_t>(archive_entry_size(e)) > kMaxArchiveManifestBytes) {
    return fail("manifest.json is larger than " + std::to_string(kMaxArchiveManifestBytes) +
                " bytes");
  }
  auto fd = open_file(dest_ + "/" + path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
  if (!fd) return std::unexpected(fd.error());
  std::string text;
  auto size = static_cast<uint64_t>(archive_entry_size(e));
  if (auto ok = write_data(fd->get(), path, size, &text); !ok) return ok;
  auto m = parse_manifest(text);
  if (!m) return std::unexpected(m.error().wrap("manifest.json"));
  plan_ = plan_from(*m, size, caps_);
  budget_ = ExpansionBudget(plan_->limits);
  (void)budget_.add_entry();  // manifest.json itself, within its own plan
  (void)budget_.add_bytes(size);
  return {};
}

// A file the manifest lists, once, with the size it lists: checked before a byte is written.
Result<void> Extractor::file(archive_entry* e, const std::string& path) {
  auto it = plan_->files.find(path);
  if (it == plan_->files.end()) return fail("file '" + path + "' is not in the manifest");
  uint64_t size = it->second;
  plan_->files.erase(it);
  if (!archive_entry_size_is_set(e) || archive_entry_size(e) < 0 ||
      static_cast<uint64_t>(archive_entry_size(e)) != size) {
    return std::unexpected(Error("file '" + path + "' holds " +
                                     std::to_string(archive_entry_size(e)) +
                                     " bytes, the manifest says " + std::to_string(size),
                                 EFBIG));
  }
  if (auto ok = budget_.fits(size); !ok) return std::unexpected(ok.error().wrap(path));
  if (auto ok = make_parents(path); !ok) return ok;
  auto fd = open_file(dest_ + "/" + path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
  if (!fd) return std::unexpected(fd.error());
  return write_data(fd->get(), path, size, nullptr);
}

// Directories follow their contents in our archives: the parents are made first (only
// directories and files are ever created here, so no component can be a link).
Result<void> Extractor::make_parents(const std::string& path) {
  for (auto slash = path.find('/'); slash != std::string::npos; slash = path.find('/', slash + 1)) {
    std::string parent = dest_ + "/" + path.substr(0, slash);
    if (::mkdir(parent.c_str(), 0700) != 0 && errno != EEXIST) return fail_errno("mkdir " + parent);
  }
  return {};
}

// The entry's data blocks at their offsets, never more than `allowed` bytes in all, each
// block counted against the budget before it is written.
Result<void> Extractor::write_data(int fd, const std::string& path, uint64_t allowed,
                                   std::string* keep) {
  uint64_t written = 0;
  for (;;) {
    const void* buf = nullptr;
    std::size_t size = 0;
    la_int64_t offset = 0;
    int r = archive_read_data_block(a_, &buf, &size, &offset);
    if (r == ARCHIVE_EOF) return {};
    if (r != ARCHIVE_OK) return std::unexpected(archive_error(a_, "read " + path));
    if (auto ok = budget_.check_stream(stream_bytes()); !ok) return ok;
    if (size > allowed - written || offset < 0 || static_cast<uint64_t>(offset) > allowed - size) {
      return std::unexpected(Error(
          path + " holds more than the " + std::to_string(allowed) + " bytes it declares", EFBIG));
    }
    if (keep == nullptr) {
      if (auto ok = budget_.add_bytes(size); !ok) return std::unexpected(ok.error().wrap(path));
    }
    written += size;
    std::string_view data(static_cast<const char*>(buf), size);
    if (keep != nullptr) {
      if (static_cast<uint64_t>(offset) != keep->size()) return fail(path + " is sparse");
      keep->append(data);
    }
    if (::lseek(fd, offset, SEEK_SET) < 0) return fail_errno("seek " + path);
    if (auto w = write_all(fd, data); !w) return w;
  }
}

}  // namespace

Result<uint64_t> export_checkpoint(const std::string& ckpt_dir, const std::string& archive_path,
                                   const ExportOptions& options) {
  std::string dir = dirname_of(archive_path);
  std::string tmp = archive_path + ".tmp-" + std::to_string(::getpid());
  auto out = open_file(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
  if (!out) return std::unexpected(out.error().wrap("export"));
  auto written = write_archive(ckpt_dir, out->get(), options);
  struct stat st {};
  if (written && ::fsync(out->get()) != 0) written = fail_errno("fsync " + tmp);
  if (written && ::fstat(out->get(), &st) != 0) written = fail_errno("stat " + tmp);
  if (written && ::rename(tmp.c_str(), archive_path.c_str()) != 0)
    written = fail_errno("rename to " + archive_path);
  if (!written) {
    ::unlink(tmp.c_str());
    return std::unexpected(written.error().wrap("export " + archive_path));
  }
  if (auto d = open_file(dir, O_RDONLY | O_DIRECTORY)) ::fsync(d->get());
  return static_cast<uint64_t>(st.st_size);
}

Result<void> import_archive(const std::string& archive_path, const std::string& dest_dir) {
  return import_archive(archive_path, dest_dir, ExpansionLimits{});
}

namespace {

using ReadArchive = std::unique_ptr<archive, int (*)(archive*)>;

// A reader over `source` (fd from offset 0) for what export writes: tar, zstd or nothing
// (no external decompressor programs, no xz memory).
Result<ReadArchive> open_reader(ArchiveSource& source, const std::string& name) {
  ReadArchive a(archive_read_new(), archive_read_free);
  if (!a) return fail("archive_read_new failed");
  archive_read_support_format_tar(a.get());
  archive_read_support_filter_none(a.get());
  archive_read_support_filter_zstd(a.get());
  if (::lseek(source.fd, 0, SEEK_SET) < 0) return fail_errno("seek " + name);
  if (archive_read_open(a.get(), &source, nullptr, read_source, nullptr) != ARCHIVE_OK) {
    return std::unexpected(archive_error(a.get(), name + " is not a readable archive"));
  }
  return a;
}

}  // namespace

Result<std::string> read_archive_manifest(int fd, const std::string& name) {
  ArchiveSource source;
  source.fd = fd;
  auto a = open_reader(source, name);
  if (!a) return std::unexpected(a.error());
  archive_entry* e = nullptr;
  int r = archive_read_next_header(a->get(), &e);
  if (r == ARCHIVE_EOF) return fail(name + " is empty");
  if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
    return std::unexpected(archive_error(a->get(), name + " is damaged"));
  }
  const char* path = archive_entry_pathname(e);
  if (path == nullptr || std::string_view(path) != kManifestFileName ||
      archive_entry_filetype(e) != AE_IFREG) {
    return fail(name + " does not begin with manifest.json: not an ARCH checkpoint archive");
  }
  if (!archive_entry_size_is_set(e) || archive_entry_size(e) < 0 ||
      static_cast<uint64_t>(archive_entry_size(e)) > kMaxArchiveManifestBytes) {
    return fail(name + ": manifest.json is larger than " +
                std::to_string(kMaxArchiveManifestBytes) + " bytes");
  }
  auto size = static_cast<std::size_t>(archive_entry_size(e));
  std::string text(size, '\0');
  std::size_t got = 0;
  while (got < size) {
    la_ssize_t n = archive_read_data(a->get(), text.data() + got, size - got);
    if (n < 0) return std::unexpected(archive_error(a->get(), name + " is damaged"));
    if (n == 0) return fail(name + " is damaged: manifest.json is cut short");
    got += static_cast<std::size_t>(n);
  }
  return text;
}

Result<void> import_archive(const std::string& archive_path, const std::string& dest_dir,
                            const ExpansionLimits& caps, const ByteProgress& progress) {
  auto fd = open_file(archive_path, O_RDONLY);
  if (!fd) return std::unexpected(fd.error().wrap("archive"));
  return import_archive_fd(fd->get(), archive_path, dest_dir, caps, progress);
}

Result<void> import_archive_fd(int fd, const std::string& archive_path, const std::string& dest_dir,
                               const ExpansionLimits& caps, const ByteProgress& progress) {
  ArchiveSource source;
  source.fd = fd;
  if (progress) {
    struct stat st {};
    if (::fstat(fd, &st) == 0) source.total = static_cast<uint64_t>(st.st_size);
    source.progress = &progress;
  }
  auto reader = open_reader(source, archive_path);
  if (!reader) return std::unexpected(reader.error());
  archive* a = reader->get();
  Extractor extractor(a, source, dest_dir, caps);
  std::size_t entries = 0;
  for (;;) {
    archive_entry* e = nullptr;
    int r = archive_read_next_header(a, &e);
    if (r == ARCHIVE_EOF) break;
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
      return std::unexpected(archive_error(a, archive_path + " is damaged"));
    }
    auto done = extractor.entry(e);
    if (!done && done.error().code() == EFBIG) {
      return std::unexpected(done.error().wrap(archive_path + " is refused"));
    }
    if (!done) return std::unexpected(done.error().wrap(archive_path + " is damaged"));
    ++entries;
  }
  if (entries == 0) return fail(archive_path + " is empty");
  return {};
}

Result<ImportedCheckpoint> import_checkpoint(const CheckpointStore& store, int fd,
                                             const std::string& name, const ExpansionLimits& caps,
                                             std::string_view expect,
                                             const ByteProgress& progress) {
  // 1. The sealed manifest, before anything is written.
  auto text = read_archive_manifest(fd, name);
  if (!text) return std::unexpected(text.error());
  if (store.keys() == nullptr) {
    return fail(ErrorKind::kPermission,
                name + ": no node key to check its seal (create one with `archctl key init`)");
  }
  auto manifest = open_sealed_manifest(*text, *store.keys());
  if (!manifest) {
    return fail(ErrorKind::kInvalidInput, name + ": " + manifest.error().message() +
                                              " (import the exporting node's key first: "
                                              "`archctl key export` there, `key import` here)");
  }
  if (auto ok = validate_owner(manifest->ns); !ok)
    return fail(ErrorKind::kInvalidInput, name + ": " + ok.error().message());
  if (auto ok = validate_name("key", manifest->key); !ok)
    return fail(ErrorKind::kInvalidInput, name + ": " + ok.error().message());
  std::string sealed_for = manifest->ns + "/" + manifest->key;
  if (!expect.empty() && expect != sealed_for) {
    return fail(ErrorKind::kInvalidInput,
                name + " holds a checkpoint of " + sealed_for + ", not of " + std::string(expect));
  }
  // 2. Into a staging directory of that key, then checked against the same manifest.
  auto lock = store.lock(manifest->ns, manifest->key, std::chrono::seconds(60));
  if (!lock) return std::unexpected(lock.error().wrap("lock " + sealed_for));
  (void)store.cleanup_stale(*lock);
  auto staging = store.begin(*lock);
  if (!staging) return std::unexpected(staging.error());
  if (auto ok = import_archive_fd(fd, name, staging->path(), caps, progress); !ok) {
    return fail(ok.error().code() == EFBIG ? ErrorKind::kInvalidInput : ok.error().kind(),
                ok.error().message());
  }
  auto extracted = read_file(staging->path() + "/" + kManifestFileName, kMaxArchiveManifestBytes);
  if (!extracted || *extracted != *text) {
    return fail(ErrorKind::kInvalidInput, name + " changed while it was imported");
  }
  if (auto ok = verify_manifest(staging->path(), *manifest); !ok) {
    return fail(ErrorKind::kInvalidInput,
                name + " does not verify (damaged?): " + ok.error().message());
  }
  // 3. Committed as this node's: the manifest is rebuilt over the same files and sealed
  // with the active key (the files were just checked against the exporter's seal).
  if (::unlinkat(staging->dirfd(), kManifestFileName, 0) != 0) {
    return fail_errno("remove the imported manifest.json");
  }
  Manifest base = *manifest;
  base.files.clear();
  auto committed = store.commit(std::move(*staging), std::move(base), *lock);
  if (!committed) return std::unexpected(committed.error());
  return ImportedCheckpoint{*committed, std::move(*manifest)};
}

}  // namespace arch
