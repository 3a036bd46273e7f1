// RootfsDiff: overlay upperdir -> OCI layer tar (capture), OCI layer tar -> rootfs (apply).
//
// Format. A POSIX pax tar written by libarchive, its headers in the binary charset so
// names round-trip as raw bytes, in the OCI image-layer conventions. Paths are relative
// ("etc/passwd"); a directory comes before its children; names are sorted byte-wise at
// each level, so the same upperdir always gives the same order. Overlay's whiteout of
// `d/x` (a 0/0 character device, or a file carrying trusted.overlay.whiteout) becomes an
// empty regular file `d/.wh.x`; a directory with trusted.overlay.opaque=y is its own entry
// followed at once by an empty file `d/.wh..wh..opq`. Files keep their holes as GNU
// sparse 1.0 entries (extents found with SEEK_DATA/SEEK_HOLE). The second and later names
// of an inode are tar hardlinks to the first. Owners are numeric; mtime and atime keep
// their nanoseconds; xattrs are kept, except overlay's own trusted.overlay.*.
//
// Safety. Capture walks by directory fds and never follows a symlink (fstatat with
// AT_SYMLINK_NOFOLLOW, O_NOFOLLOW opens; devices and fifos are never opened). Apply treats
// the tar as hostile and the rootfs as full of symlinks pointing out of it (an image's
// absolute symlinks resolve against the host when walked from the host). An entry's path
// must be relative and free of "..". Its parent directory is resolved with
// openat2(rootfd, parent, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS), so symlinks resolve
// as they would inside the container and never leave it; missing parents are created one
// component at a time the same way. The last component is only used with *at() calls
// that do not follow it: whatever is there (a symlink included) is unlinked and replaced.
// Hardlink targets are resolved the same way. Metadata goes through fds opened
// O_NOFOLLOW, AT_SYMLINK_NOFOLLOW calls, or /proc/self/fd/<parent fd>/<name> with the
// l*xattr calls. A capture that fails never ends its tar, so it cannot look complete; an
// apply requires the end-of-archive marker, so a tar cut at an entry boundary fails too.
//
// Length (~1,200 lines): capture and apply are the two directions of one format, and they
// share its conventions (whiteout and opaque names, sparse maps, xattr filtering, the
// expansion budget) as private helpers in this file; splitting them would make those
// helpers a public header that nothing else should use. Splitting capture and apply into
// two files over a private header is the next step when either grows.
#include "container/rootfs_diff.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <linux/openat2.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <utility>

#include "base/file_util.h"
#include "base/unique_fd.h"

namespace arch {
namespace {

constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kMarkerPrefix = ".wh..wh.";
constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";
constexpr std::string_view kOverlayXattrPrefix = "trusted.overlay.";
constexpr size_t kIoBlock = 256 * 1024;
constexpr size_t kZeroBlock = 1 << 20;

// ---- Small helpers shared by both directions ----

std::string shown(const std::string& path) {
  return path.empty() ? "." : path;
}

std::string join_path(const std::string& parent, std::string_view name) {
  return parent.empty() ? std::string(name) : parent + "/" + std::string(name);
}

std::vector<std::string_view> split(std::string_view text, char sep) {
  std::vector<std::string_view> out;
  for (size_t start = 0;;) {
    size_t end = text.find(sep, start);
    out.push_back(text.substr(start, end == std::string_view::npos ? end : end - start));
    if (end == std::string_view::npos) return out;
    start = end + 1;
  }
}

// "/proc/self/fd/<dirfd>/<name>": `name` inside the directory `dirfd`, for the l*xattr
// calls, which have no *at() form. The last component is never followed by them.
std::string proc_path(int dirfd, std::string_view name) {
  return fmt::format("/proc/self/fd/{}/{}", dirfd, name);
}

// openat with O_NOATIME where allowed (owner or CAP_FOWNER): capturing and clearing
// leave atimes alone, so the same tree always captures to the same bytes.
int open_noatime(int dirfd, const char* name, int flags) {
  int fd = retry_eintr([&] { return ::openat(dirfd, name, flags | O_NOATIME | O_CLOEXEC); });
  if (fd < 0 && errno == EPERM)
    fd = retry_eintr([&] { return ::openat(dirfd, name, flags | O_CLOEXEC); });
  return fd;
}

// The names in directory `dirfd` (without "." and ".."), sorted byte-wise; read through
// an O_NOATIME descriptor where allowed so capture leaves atimes alone.
Result<std::vector<std::string>> list_dir(int dirfd) {
  UniqueFd fd(open_noatime(dirfd, ".", O_RDONLY | O_DIRECTORY));
  if (!fd) return fail_errno("open directory");
  return list_directory(fd.get());
}

struct Xattr {
  std::string name;
  std::string value;
};
using Xattrs = std::vector<Xattr>;

// One l*xattr "size, then fetch" round, retried while the value grows under us.
template <class Call>
Result<std::string> xattr_buffer(Call&& call, const char* what) {
  for (;;) {
    ssize_t size = call(nullptr, 0);
    if (size < 0) return fail_errno(what);
    std::string buf(static_cast<size_t>(size), '\0');
    ssize_t got = call(buf.data(), buf.size());
    if (got >= 0) {
      buf.resize(static_cast<size_t>(got));
      return buf;
    }
    if (errno != ERANGE) return fail_errno(what);
  }
}

// Every xattr of `path` itself (never followed), sorted by name. None when unsupported.
Result<Xattrs> read_xattrs(const std::string& path) {
  auto names = xattr_buffer(
      [&](char* buf, size_t size) { return ::llistxattr(path.c_str(), buf, size); }, "llistxattr");
  if (!names)
    return names.error().code() == ENOTSUP ? Result<Xattrs>() : std::unexpected(names.error());
  Xattrs out;
  for (std::string_view name : split(*names, '\0')) {
    if (name.empty()) continue;
    std::string n(name);
    auto value = xattr_buffer(
        [&](char* buf, size_t size) { return ::lgetxattr(path.c_str(), n.c_str(), buf, size); },
        "lgetxattr");
    if (!value && value.error().code() == ENODATA) continue;  // removed meanwhile
    if (!value) return std::unexpected(value.error().wrap(n));
    out.push_back({std::move(n), std::move(*value)});
  }
  std::sort(out.begin(), out.end(), [](const Xattr& a, const Xattr& b) { return a.name < b.name; });
  return out;
}

const Xattr* find_xattr(const Xattrs& xattrs, std::string_view name) {
  auto it =
      std::find_if(xattrs.begin(), xattrs.end(), [&](const Xattr& x) { return x.name == name; });
  return it == xattrs.end() ? nullptr : &*it;
}

bool is_overlay_xattr(std::string_view name) {
  return name.starts_with(kOverlayXattrPrefix);
}

// libarchive's message for its last failure, or the I/O error our callback recorded.
Error tar_error(archive* a, const std::optional<Error>& io_error) {
  if (io_error) return *io_error;
  const char* message = archive_error_string(a);
  return Error(message != nullptr ? message : "unknown libarchive error");
}

// ---- overlay_upperdir ----

// Undoes the octal escapes of /proc/self/mountinfo ("\040" is a space, "\054" a comma).
std::string unescape_octal(std::string_view text) {
  auto is_octal = [](char c) { return c >= '0' && c <= '7'; };
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 3 < text.size() && is_octal(text[i + 1]) && is_octal(text[i + 2]) &&
        is_octal(text[i + 3])) {
      out.push_back(static_cast<char>((text[i + 1] - '0') * 64 + (text[i + 2] - '0') * 8 +
                                      (text[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

struct MountEntry {
  std::string mount_point;
  std::string fstype;
  std::string super_options;
};

// "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue"
std::optional<MountEntry> parse_mountinfo_line(std::string_view line) {
  auto fields = split(line, ' ');
  if (fields.size() < 10) return std::nullopt;
  auto dash = std::find(fields.begin() + 6, fields.end(), "-");
  if (fields.end() - dash < 4) return std::nullopt;
  return MountEntry{unescape_octal(fields[4]), std::string(dash[1]), std::string(dash[3])};
}

// ---- Capture ----

struct TarSink {
  int fd = -1;
  std::optional<Error> error;
};

la_ssize_t write_to_sink(archive* a, void* data, const void* buf, size_t size) {
  auto* sink = static_cast<TarSink*>(data);
  auto written = write_all(sink->fd, {static_cast<const char*>(buf), size});
  if (!written) {
    sink->error = written.error().wrap("write tar");
    archive_set_error(a, written.error().code(), "write failed");
    return -1;
  }
  return static_cast<la_ssize_t>(size);
}

struct Extent {
  off_t offset = 0;
  off_t length = 0;
};

// The data extents of a regular file: one for a dense file, none for an all-hole one.
Result<std::vector<Extent>> data_extents(int fd, const struct stat& st) {
  if (st.st_size == 0) return std::vector<Extent>{};
  std::vector<Extent> whole{{0, st.st_size}};
  if (st.st_blocks * 512 >= st.st_size) return whole;  // no room for holes
  std::vector<Extent> out;
  for (off_t pos = 0; pos < st.st_size;) {
    off_t data = ::lseek(fd, pos, SEEK_DATA);
    if (data < 0 && errno == ENXIO) break;  // only a hole from here on
    if (data < 0 && (errno == EINVAL || errno == EOPNOTSUPP)) return whole;
    if (data < 0) return fail_errno("lseek SEEK_DATA");
    if (data >= st.st_size) break;
    off_t hole = ::lseek(fd, data, SEEK_HOLE);
    if (hole < 0) return fail_errno("lseek SEEK_HOLE");
    hole = std::min(hole, st.st_size);
    out.push_back({data, hole - data});
    pos = hole;
  }
  return out;
}

using ArchiveWriter = std::unique_ptr<archive, int (*)(archive*)>;
using EntryPtr = std::unique_ptr<archive_entry, void (*)(archive_entry*)>;

// A tar entry for `path` with the metadata of `st` and the xattrs worth keeping.
EntryPtr new_entry(const std::string& path, const struct stat& st, const Xattrs& xattrs) {
  EntryPtr e(archive_entry_new(), &archive_entry_free);
  archive_entry_copy_pathname(e.get(), path.c_str());
  archive_entry_set_mode(e.get(), st.st_mode);
  archive_entry_set_uid(e.get(), st.st_uid);
  archive_entry_set_gid(e.get(), st.st_gid);
  archive_entry_set_mtime(e.get(), st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
  archive_entry_set_atime(e.get(), st.st_atim.tv_sec, st.st_atim.tv_nsec);
  archive_entry_set_size(e.get(), 0);
  for (const Xattr& x : xattrs) {
    if (is_overlay_xattr(x.name)) continue;
    archive_entry_xattr_add_entry(e.get(), x.name.c_str(), x.value.data(), x.value.size());
  }
  return e;
}

// An empty regular file that marks a deletion or an opaque directory.
EntryPtr marker_entry(const std::string& path, const struct stat& st) {
  struct stat marker = st;
  marker.st_mode = S_IFREG | 0644;
  return new_entry(path, marker, {});
}

// An upper entry whose data or contents stay in a lower layer (overlay's metacopy and
// redirect_dir features) cannot be carried by a diff of the upper layer alone.
Result<void> refuse_lower_references(const Xattrs& xattrs, const std::string& path) {
  for (const char* feature : {"trusted.overlay.metacopy", "trusted.overlay.redirect"}) {
    if (find_xattr(xattrs, feature) != nullptr) {
      return fail(
          fmt::format("{}: has {}: part of it lives in a lower layer (overlay metacopy or "
                      "redirect_dir is on), which a diff cannot carry",
                      path, feature));
    }
  }
  return {};
}

// Walks one upperdir and writes its tar.
class DiffWriter {
 public:
  DiffWriter(int out_fd, const RootfsCaptureOptions& options)
      : sink_{out_fd, std::nullopt}, options_(options) {}
  DiffWriter(const DiffWriter&) = delete;
  DiffWriter& operator=(const DiffWriter&) = delete;
  // A capture that did not finish must not end its tar: it would look complete.
  ~DiffWriter() {
    if (a_ && !closed_) archive_write_fail(a_.get());
  }

  Result<void> open();
  Result<void> walk(int dirfd, const std::string& dir);
  /// The marker that empties the target's root before anything else is applied.
  Result<void> opaque_root(int rootfd) {
    struct stat st {};
    if (::fstat(rootfd, &st) != 0) return fail_errno("fstat the root");
    ++stats.opaque_dirs;
    return write_header(marker_entry(std::string(kOpaqueMarker), st).get(),
                        std::string(kOpaqueMarker));
  }
  Result<void> close();
  RootfsDiffStats stats;

 private:
  Result<void> add(int dirfd, const std::string& dir, const std::string& name);
  Result<void> add_directory(int dirfd, const std::string& name, const std::string& path,
                             const struct stat& st, const Xattrs& xattrs);
  Result<void> add_regular(int dirfd, const std::string& name, const std::string& path,
                           const struct stat& st, const Xattrs& xattrs);
  Result<void> add_symlink(int dirfd, const std::string& name, const std::string& path,
                           const struct stat& st, const Xattrs& xattrs);
  Result<void> add_hardlink(const std::string& path, const std::string& target,
                            const struct stat& st);
  Result<void> add_special(const std::string& path, const struct stat& st, const Xattrs& xattrs);
  Result<void> write_header(archive_entry* e, const std::string& path);
  Result<void> write_extents(int fd, const std::vector<Extent>& extents, const std::string& path);
  Result<void> write_data(const char* data, size_t size);
  Result<void> skip(const std::string& path, std::string_view why);
  Result<void> add_zstd(archive* a) const;

  ArchiveWriter a_{nullptr, &archive_write_free};
  TarSink sink_;
  RootfsCaptureOptions options_;
  bool closed_ = false;
  std::map<std::pair<dev_t, ino_t>, std::string> first_link_;
  std::vector<char> buf_ = std::vector<char>(kIoBlock);
};

Result<void> DiffWriter::open() {
  a_.reset(archive_write_new());
  if (!a_) return fail("archive_write_new failed");
  archive* a = a_.get();
  if (options_.zstd_level != 0) {
    if (auto z = add_zstd(a); !z) return z;
  }
  bool ok = archive_write_set_format_pax(a) == ARCHIVE_OK &&
            archive_write_set_format_option(a, "pax", "hdrcharset", "BINARY") == ARCHIVE_OK &&
            archive_write_set_bytes_per_block(a, 64 * 1024) == ARCHIVE_OK &&
            archive_write_set_bytes_in_last_block(a, 1) == ARCHIVE_OK &&
            archive_write_open(a, &sink_, nullptr, write_to_sink, nullptr) == ARCHIVE_OK;
  if (!ok) return std::unexpected(tar_error(a, sink_.error).wrap("start tar"));
  return {};
}

// zstd over the tar stream: libarchive's filter, multithreaded (one worker per CPU unless
// told otherwise) where the libzstd it was built with supports it.
Result<void> DiffWriter::add_zstd(archive* a) const {
  if (options_.zstd_level < 1 || options_.zstd_level > 19) {
    return fail(fmt::format("zstd level {} is not in 1-19", options_.zstd_level));
  }
  int threads = options_.zstd_threads > 0 ? options_.zstd_threads
                                          : static_cast<int>(std::thread::hardware_concurrency());
  std::string level = std::to_string(options_.zstd_level);
  std::string workers = std::to_string(std::max(1, threads));
  if (archive_write_add_filter_zstd(a) != ARCHIVE_OK ||
      archive_write_set_filter_option(a, "zstd", "compression-level", level.c_str()) !=
          ARCHIVE_OK) {
    return std::unexpected(tar_error(a, sink_.error).wrap("zstd filter"));
  }
  // Older libarchive has no "threads" option: single-threaded zstd then.
  (void)archive_write_set_filter_option(a, "zstd", "threads", workers.c_str());
  return {};
}

Result<void> DiffWriter::close() {
  if (archive_write_close(a_.get()) != ARCHIVE_OK) {
    return std::unexpected(tar_error(a_.get(), sink_.error).wrap("finish tar"));
  }
  closed_ = true;
  return {};
}

Result<void> DiffWriter::walk(int dirfd, const std::string& dir) {
  auto names = list_dir(dirfd);
  if (!names) return std::unexpected(names.error().wrap(shown(dir)));
  for (const std::string& name : *names) {
    if (auto r = add(dirfd, dir, name); !r) return r;
  }
  return {};
}

// One directory entry: dispatches on its type after the overlay-specific cases.
Result<void> DiffWriter::add(int dirfd, const std::string& dir, const std::string& name) {
  std::string path = join_path(dir, name);
  struct stat st {};
  if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return fail_errno("fstatat " + path);
  }
  if (name.starts_with(kWhiteoutPrefix)) return skip(path, "file named like a whiteout");
  if (S_ISSOCK(st.st_mode)) return skip(path, "socket");
  auto xattrs = read_xattrs(proc_path(dirfd, name));
  if (!xattrs) return std::unexpected(xattrs.error().wrap(path));
  if (auto r = refuse_lower_references(*xattrs, path); !r) return r;
  bool whiteout = (S_ISCHR(st.st_mode) && st.st_rdev == 0) ||
                  (S_ISREG(st.st_mode) && find_xattr(*xattrs, "trusted.overlay.whiteout"));
  if (whiteout) {
    ++stats.deletions;
    return write_header(marker_entry(join_path(dir, std::string(kWhiteoutPrefix) + name), st).get(),
                        path);
  }
  if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
    auto [it, first] = first_link_.try_emplace({st.st_dev, st.st_ino}, path);
    if (!first) return add_hardlink(path, it->second, st);
  }
  switch (st.st_mode & S_IFMT) {
    case S_IFDIR:
      return add_directory(dirfd, name, path, st, *xattrs);
    case S_IFREG:
      return add_regular(dirfd, name, path, st, *xattrs);
    case S_IFLNK:
      return add_symlink(dirfd, name, path, st, *xattrs);
    case S_IFCHR:
    case S_IFBLK:
    case S_IFIFO:
      return add_special(path, st, *xattrs);
    default:
      return skip(path, "file of unknown type");
  }
}

Result<void> DiffWriter::add_directory(int dirfd, const std::string& name, const std::string& path,
                                       const struct stat& st, const Xattrs& xattrs) {
  if (auto r = write_header(new_entry(path, st, xattrs).get(), path); !r) return r;
  ++stats.directories;
  const Xattr* opaque = find_xattr(xattrs, "trusted.overlay.opaque");
  if (opaque != nullptr && opaque->value == "y") {
    std::string marker = join_path(path, kOpaqueMarker);
    if (auto r = write_header(marker_entry(marker, st).get(), marker); !r) return r;
    ++stats.opaque_dirs;
  }
  UniqueFd fd(retry_eintr([&] {
    return ::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  }));
  if (!fd) return fail_errno("open " + path);
  return walk(fd.get(), path);
}

Result<void> DiffWriter::add_regular(int dirfd, const std::string& name, const std::string& path,
                                     const struct stat& st, const Xattrs& xattrs) {
  UniqueFd fd(open_noatime(dirfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NOCTTY));
  if (!fd) return fail_errno("open " + path);
  auto extents = data_extents(fd.get(), st);
  if (!extents) return std::unexpected(extents.error().wrap(path));
  auto e = new_entry(path, st, xattrs);
  archive_entry_set_size(e.get(), st.st_size);
  bool dense = extents->size() == 1 && extents->front().length == st.st_size;
  if (!dense) {
    for (const Extent& x : *extents) archive_entry_sparse_add_entry(e.get(), x.offset, x.length);
    if (extents->empty()) archive_entry_sparse_add_entry(e.get(), st.st_size, 0);  // all hole
  }
  if (auto r = write_header(e.get(), path); !r) return r;
  ++stats.regular;
  return write_extents(fd.get(), *extents, path);
}

// Feeds the file's data to the tar writer. For a sparse entry libarchive expects the
// whole logical content and drops the bytes that fall in holes, so holes before an
// extent are fed as zeros (cheaply: they are counted, not copied); trailing ones are not.
// libarchive writes a sparse entry's map on the first data call, hence the empty one
// (an all-hole file has no other).
Result<void> DiffWriter::write_extents(int fd, const std::vector<Extent>& extents,
                                       const std::string& path) {
  static const std::array<char, kZeroBlock> zeros{};
  if (archive_write_data(a_.get(), zeros.data(), 0) < 0) {
    return std::unexpected(tar_error(a_.get(), sink_.error).wrap(path));
  }
  off_t pos = 0;
  for (const Extent& x : extents) {
    for (; pos < x.offset;) {
      auto n = static_cast<size_t>(std::min<off_t>(x.offset - pos, kZeroBlock));
      if (auto r = write_data(zeros.data(), n); !r) return std::unexpected(r.error().wrap(path));
      pos += static_cast<off_t>(n);
    }
    for (off_t end = x.offset + x.length; pos < end;) {
      auto want = static_cast<size_t>(std::min<off_t>(end - pos, static_cast<off_t>(buf_.size())));
      ssize_t n = retry_eintr([&] { return ::pread(fd, buf_.data(), want, pos); });
      if (n < 0) return fail_errno("read " + path);
      if (n == 0) return fail(path + ": file shrank while being captured");
      if (auto r = write_data(buf_.data(), static_cast<size_t>(n)); !r) {
        return std::unexpected(r.error().wrap(path));
      }
      pos += n;
      stats.bytes += static_cast<uint64_t>(n);
    }
  }
  return {};
}

Result<void> DiffWriter::write_data(const char* data, size_t size) {
  while (size > 0) {
    la_ssize_t n = archive_write_data(a_.get(), data, size);
    if (n < 0) return std::unexpected(tar_error(a_.get(), sink_.error));
    if (n == 0) return fail("the tar writer took no data");
    data += n;
    size -= static_cast<size_t>(n);
  }
  return {};
}

Result<void> DiffWriter::add_symlink(int dirfd, const std::string& name, const std::string& path,
                                     const struct stat& st, const Xattrs& xattrs) {
  std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
  for (;;) {
    ssize_t n = ::readlinkat(dirfd, name.c_str(), target.data(), target.size());
    if (n < 0) return fail_errno("readlink " + path);
    if (static_cast<size_t>(n) < target.size()) {
      target.resize(static_cast<size_t>(n));
      break;
    }
    target.resize(target.size() * 2);  // grew since the stat
  }
  auto e = new_entry(path, st, xattrs);
  archive_entry_copy_symlink(e.get(), target.c_str());
  if (auto r = write_header(e.get(), path); !r) return r;
  ++stats.symlinks;
  return {};
}

Result<void> DiffWriter::add_hardlink(const std::string& path, const std::string& target,
                                      const struct stat& st) {
  auto e = new_entry(path, st, {});
  archive_entry_copy_hardlink(e.get(), target.c_str());
  if (auto r = write_header(e.get(), path); !r) return r;
  ++stats.hardlinks;
  return {};
}

Result<void> DiffWriter::add_special(const std::string& path, const struct stat& st,
                                     const Xattrs& xattrs) {
  auto e = new_entry(path, st, xattrs);
  if (!S_ISFIFO(st.st_mode)) archive_entry_set_rdev(e.get(), st.st_rdev);
  if (auto r = write_header(e.get(), path); !r) return r;
  ++(S_ISFIFO(st.st_mode) ? stats.fifos : stats.devices);
  return {};
}

Result<void> DiffWriter::write_header(archive_entry* e, const std::string& path) {
  int r = archive_write_header(a_.get(), e);
  ++stats.entries;
  if (r == ARCHIVE_WARN) {
    stats.warnings.push_back(path + ": " + tar_error(a_.get(), sink_.error).message());
  } else if (r != ARCHIVE_OK) {
    return std::unexpected(tar_error(a_.get(), sink_.error).wrap("tar header of " + path));
  }
  return {};
}

Result<void> DiffWriter::skip(const std::string& path, std::string_view why) {
  ++stats.skipped;
  stats.warnings.push_back(fmt::format("skipped {} {}", why, path));
  return {};
}

// ---- Apply ----

struct TarSource {
  int fd = -1;
  std::vector<char> buf = std::vector<char>(kIoBlock);
  uint64_t bytes = 0;  // delivered to libarchive so far
  std::optional<Error> error;
  std::optional<ZstdWindowCheck> zstd;  // watching the frames of a zstd stream
};

la_ssize_t read_from_source(archive* a, void* data, const void** out) {
  auto* source = static_cast<TarSource*>(data);
  ssize_t n =
      retry_eintr([&] { return ::read(source->fd, source->buf.data(), source->buf.size()); });
  if (n < 0) {
    int err = errno;
    source->error = Error("read tar", err);
    archive_set_error(a, err, "read failed");
    return -1;
  }
  std::string_view got(source->buf.data(), static_cast<size_t>(n));
  if (source->bytes == 0 && is_zstd_magic(got)) source->zstd.emplace();
  if (source->zstd) {
    if (auto ok = source->zstd->feed(got); !ok) {
      source->error = ok.error();
      archive_set_error(a, ok.error().code() != 0 ? ok.error().code() : EINVAL, "bad zstd frame");
      return -1;
    }
  }
  source->bytes += static_cast<uint64_t>(n);
  *out = source->buf.data();
  return n;
}

// An entry's path split for resolution: "a/./b//c/" -> parent "a/b", name "c".
struct EntryPath {
  std::string parent;
  std::string name;  // empty for the root itself
  std::string path;  // parent/name, normalized
};

Result<EntryPath> parse_entry_path(const char* raw) {
  if (raw == nullptr) return fail("tar entry without a path");
  std::string_view text = raw;
  if (text.starts_with('/')) return fail(fmt::format("{}: absolute path refused", text));
  std::vector<std::string_view> parts;
  for (std::string_view part : split(text, '/')) {
    if (part == "..") return fail(fmt::format("{}: path with \"..\" refused", text));
    if (!part.empty() && part != ".") parts.push_back(part);
  }
  EntryPath out;
  if (parts.empty()) return out;
  for (size_t i = 0; i + 1 < parts.size(); ++i) out.parent = join_path(out.parent, parts[i]);
  out.name = std::string(parts.back());
  out.path = join_path(out.parent, out.name);
  return out;
}

// openat2(rootfd, path) with every symlink resolved as if rootfd were "/".
Result<UniqueFd> open_in_root(int rootfd, const std::string& path, int flags) {
  open_how how{};
  how.flags = static_cast<__u64>(flags | O_CLOEXEC);
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  const char* p = path.empty() ? "." : path.c_str();
  for (int attempt = 0;; ++attempt) {
    long fd = retry_eintr([&] { return ::syscall(SYS_openat2, rootfd, p, &how, sizeof how); });
    if (fd >= 0) return UniqueFd(static_cast<int>(fd));
    if (errno == EAGAIN && attempt < 16) continue;  // a concurrent rename raced the lookup
    return fail_errno("openat2 " + shown(path));
  }
}

bool is_absent(const Error& e) {
  return e.code() == ENOENT || e.code() == ENOTDIR;
}

std::array<timespec, 2> entry_times(archive_entry* e) {
  std::array<timespec, 2> times{timespec{0, UTIME_OMIT}, timespec{0, UTIME_OMIT}};
  if (archive_entry_atime_is_set(e))
    times[0] = {archive_entry_atime(e), archive_entry_atime_nsec(e)};
  if (archive_entry_mtime_is_set(e))
    times[1] = {archive_entry_mtime(e), archive_entry_mtime_nsec(e)};
  return times;
}

// The entry's xattrs, without overlay's internals (a diff may not forge those).
Xattrs entry_xattrs(archive_entry* e) {
  Xattrs out;
  archive_entry_xattr_reset(e);
  const char* name = nullptr;
  const void* value = nullptr;
  size_t size = 0;
  while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
    if (name == nullptr || is_overlay_xattr(name)) continue;
    out.push_back({name, std::string(static_cast<const char*>(value), value ? size : 0)});
  }
  return out;
}

// The tar bytes the format reader has consumed: what zstd decompressed, or the file's own.
uint64_t tar_stream_bytes(archive* a, const TarSource& source) {
  return archive_filter_count(a) > 1 ? static_cast<uint64_t>(archive_filter_bytes(a, 0))
                                     : source.bytes;
}

// Writes the current entry's data blocks at their offsets (a sparse entry's holes are
// simply not written), each block counted against `budget` before it is written;
// returns the number of bytes written.
Result<uint64_t> copy_entry_data(archive* a, TarSource& source, ExpansionBudget& budget, int fd,
                                 const std::string& path) {
  uint64_t total = 0;
  for (;;) {
    const void* buf = nullptr;
    size_t size = 0;
    la_int64_t offset = 0;
    int r = archive_read_data_block(a, &buf, &size, &offset);
    if (r == ARCHIVE_EOF) return total;
    if (r < ARCHIVE_WARN)
      return std::unexpected(tar_error(a, source.error).wrap("data of " + path));
    if (auto ok = budget.check_stream(tar_stream_bytes(a, source)); !ok)
      return std::unexpected(ok.error().wrap(path));
    if (auto ok = budget.add_bytes(size); !ok) return std::unexpected(ok.error().wrap(path));
    for (const char* data = static_cast<const char*>(buf); size > 0;) {
      ssize_t n = retry_eintr([&] { return ::pwrite(fd, data, size, offset); });
      if (n < 0) return fail_errno("write " + path);
      data += n;
      size -= static_cast<size_t>(n);
      offset += n;
      total += static_cast<uint64_t>(n);
    }
  }
}

// Lays tar entries into one rootfs.
class DiffApplier {
 public:
  DiffApplier(UniqueFd root, const ExpansionLimits& limits)
      : root_(std::move(root)), budget_(limits) {}
  Result<void> apply(archive* a, archive_entry* e, TarSource& source);
  Result<void> finish();
  RootfsDiffStats stats;

 private:
  using Setter = std::function<int(const Xattr&)>;
  Result<UniqueFd> open_dir(const std::string& dir, bool create);
  Result<void> apply_marker(const EntryPath& p);
  Result<void> apply_whiteout(const EntryPath& p);
  Result<void> apply_opaque(const EntryPath& p);
  Result<void> apply_directory(int parent, const EntryPath& p, archive_entry* e);
  Result<void> apply_regular(int parent, const EntryPath& p, archive* a, archive_entry* e,
                             TarSource& source);
  Result<void> set_nofollow_metadata(int parent, const EntryPath& p, archive_entry* e,
                                     bool with_mode);
  Result<void> apply_symlink(int parent, const EntryPath& p, archive_entry* e);
  Result<void> apply_hardlink(int parent, const EntryPath& p, archive_entry* e);
  Result<void> apply_node(int parent, const EntryPath& p, archive_entry* e);
  Result<void> remove_tree(int parent, const std::string& name, const std::string& path);
  Result<void> empty_dir(int dirfd, const std::string& dir);
  Result<void> set_owner_mode(int fd, archive_entry* e, const std::string& path);
  Result<void> set_xattrs(const Xattrs& xattrs, const std::string& path, const Setter& set);
  Result<void> drop_stale_xattrs(int fd, const std::string& where, const Xattrs& keep,
                                 const std::string& path);

  struct DirTimes {
    std::string path;
    std::array<timespec, 2> times;
  };
  UniqueFd root_;
  ExpansionBudget budget_;
  std::unordered_set<std::string> applied_;  // paths this diff created, kept by opaque markers
  std::vector<DirTimes> dir_times_;          // set last: adding children changes them
};

// The directory `dir` (relative to the root; symlinks resolved inside it), with missing
// components created one at a time when `create`.
Result<UniqueFd> DiffApplier::open_dir(const std::string& dir, bool create) {
  auto fd = open_in_root(root_.get(), dir, O_PATH | O_DIRECTORY);
  if (fd || !create || dir.empty() || fd.error().code() != ENOENT) return fd;
  auto slash = dir.find_last_of('/');
  std::string up = slash == std::string::npos ? "" : dir.substr(0, slash);
  std::string name = slash == std::string::npos ? dir : dir.substr(slash + 1);
  auto parent = open_dir(up, true);
  if (!parent) return parent;
  if (::mkdirat(parent->get(), name.c_str(), 0755) != 0 && errno != EEXIST) {
    return fail_errno("mkdirat " + dir);
  }
  return open_in_root(root_.get(), dir, O_PATH | O_DIRECTORY);
}

// Every header counts as an entry. An entry whose data is not written (anything but a
// regular file) must still fit the stream budget, since the reader skips it by
// decompressing it; a regular file's data is counted block by block as it is written.
Result<void> DiffApplier::apply(archive* a, archive_entry* e, TarSource& source) {
  const char* raw = archive_entry_pathname(e);
  std::string shown_path = raw != nullptr ? raw : "";
  if (auto ok = budget_.add_entry(); !ok) return std::unexpected(ok.error().wrap(shown_path));
  ++stats.entries;
  bool writes_data = archive_entry_filetype(e) == AE_IFREG && archive_entry_hardlink(e) == nullptr;
  uint64_t consumed = tar_stream_bytes(a, source);
  if (!writes_data && archive_entry_size_is_set(e) && archive_entry_size(e) > 0)
    consumed += static_cast<uint64_t>(archive_entry_size(e));
  if (auto ok = budget_.check_stream(consumed); !ok)
    return std::unexpected(ok.error().wrap(shown_path));
  auto p = parse_entry_path(raw);
  if (!p) return std::unexpected(p.error());
  if (p->name.empty()) return {};  // the root itself: the new container's stays as it is
  if (p->name.starts_with(kWhiteoutPrefix)) return apply_marker(*p);
  auto parent = open_dir(p->parent, true);
  if (!parent) return std::unexpected(parent.error().wrap(p->path));
  int dirfd = parent->get();
  Result<void> r;
  if (archive_entry_hardlink(e) != nullptr) {
    r = apply_hardlink(dirfd, *p, e);
  } else {
    switch (archive_entry_filetype(e)) {
      case AE_IFDIR:
        r = apply_directory(dirfd, *p, e);
        break;
      case AE_IFREG:
        r = apply_regular(dirfd, *p, a, e, source);
        break;
      case AE_IFLNK:
        r = apply_symlink(dirfd, *p, e);
        break;
      case AE_IFCHR:
      case AE_IFBLK:
      case AE_IFIFO:
        r = apply_node(dirfd, *p, e);
        break;
      default:
        ++stats.skipped;
        stats.warnings.push_back("skipped entry of unsupported type " + p->path);
        return {};
    }
  }
  if (r) applied_.insert(p->path);
  return r;
}

Result<void> DiffApplier::apply_marker(const EntryPath& p) {
  if (p.name == kOpaqueMarker) return apply_opaque(p);
  if (p.name.starts_with(kMarkerPrefix) || p.name.size() == kWhiteoutPrefix.size()) {
    ++stats.skipped;
    stats.warnings.push_back("skipped unknown marker " + p.path);
    return {};
  }
  return apply_whiteout(p);
}

Result<void> DiffApplier::apply_whiteout(const EntryPath& p) {
  ++stats.deletions;
  std::string victim = p.name.substr(kWhiteoutPrefix.size());
  auto parent = open_dir(p.parent, false);
  if (!parent && is_absent(parent.error())) return {};  // nothing there to delete
  if (!parent) return std::unexpected(parent.error().wrap(p.path));
  return remove_tree(parent->get(), victim, join_path(p.parent, victim));
}

// Empties the directory p.parent of what it had before this diff. The directory itself
// is not followed if it is a symlink: opacity belongs to a directory, not to a link.
Result<void> DiffApplier::apply_opaque(const EntryPath& p) {
  ++stats.opaque_dirs;
  if (p.parent.empty()) return empty_dir(root_.get(), "");
  auto slash = p.parent.find_last_of('/');
  std::string up = slash == std::string::npos ? "" : p.parent.substr(0, slash);
  std::string name = slash == std::string::npos ? p.parent : p.parent.substr(slash + 1);
  auto grandparent = open_dir(up, false);
  if (!grandparent && is_absent(grandparent.error())) return {};
  if (!grandparent) return std::unexpected(grandparent.error().wrap(p.path));
  UniqueFd dir(retry_eintr([&] {
    return ::openat(grandparent->get(), name.c_str(),
                    O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  }));
  if (!dir && (errno == ENOENT || errno == ENOTDIR || errno == ELOOP)) return {};
  if (!dir) return fail_errno("open " + p.parent);
  return empty_dir(dir.get(), p.parent);
}

Result<void> DiffApplier::empty_dir(int dirfd, const std::string& dir) {
  auto names = list_dir(dirfd);
  if (!names) return std::unexpected(names.error().wrap(shown(dir)));
  for (const std::string& name : *names) {
    std::string path = join_path(dir, name);
    if (applied_.contains(path)) continue;
    if (auto r = remove_tree(dirfd, name, path); !r) return r;
  }
  return {};
}

// Removes whatever is at `name` in `parent` (recursively for a directory), never
// following a symlink and never crossing into another mount. Absent is fine.
Result<void> DiffApplier::remove_tree(int parent, const std::string& name,
                                      const std::string& path) {
  struct stat st {};
  if (::fstatat(parent, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return {};
    return fail_errno("fstatat " + path);
  }
  if (S_ISDIR(st.st_mode)) {
    struct stat parent_st {};
    if (::fstat(parent, &parent_st) != 0) return fail_errno("fstat parent of " + path);
    if (parent_st.st_dev != st.st_dev) return std::unexpected(Error("remove " + path, EBUSY));
    UniqueFd dir(retry_eintr([&] {
      return ::openat(parent, name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }));
    if (!dir) return fail_errno("open " + path);
    if (auto r = empty_dir(dir.get(), path); !r) return r;
  }
  if (::unlinkat(parent, name.c_str(), S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0) != 0) {
    return fail_errno("unlinkat " + path);
  }
  return {};
}

Result<void> DiffApplier::apply_directory(int parent, const EntryPath& p, archive_entry* e) {
  struct stat st {};
  bool exists = ::fstatat(parent, p.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
  if (!exists && errno != ENOENT) return fail_errno("fstatat " + p.path);
  bool existing_dir = exists && S_ISDIR(st.st_mode);
  if (exists && !existing_dir && ::unlinkat(parent, p.name.c_str(), 0) != 0) {
    return fail_errno("unlinkat " + p.path);
  }
  if (!existing_dir && ::mkdirat(parent, p.name.c_str(), 0700) != 0) {
    return fail_errno("mkdirat " + p.path);
  }
  UniqueFd fd(retry_eintr([&] {
    return ::openat(parent, p.name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  }));
  if (!fd) return fail_errno("open " + p.path);
  if (auto r = set_owner_mode(fd.get(), e, p.path); !r) return r;
  Xattrs xattrs = entry_xattrs(e);
  if (existing_dir) {
    if (auto r = drop_stale_xattrs(fd.get(), proc_path(parent, p.name), xattrs, p.path); !r)
      return r;
  }
  auto set = [&](const Xattr& x) {
    return ::fsetxattr(fd.get(), x.name.c_str(), x.value.data(), x.value.size(), 0);
  };
  if (auto r = set_xattrs(xattrs, p.path, set); !r) return r;
  dir_times_.push_back({p.path, entry_times(e)});
  ++stats.directories;
  return {};
}

// The file is always created anew (never truncated in place: the old name may be a
// hardlink shared with another file, or a symlink). Data goes at its offsets, so the
// holes of a sparse entry stay holes; ftruncate sets the length past a trailing hole.
Result<void> DiffApplier::apply_regular(int parent, const EntryPath& p, archive* a,
                                        archive_entry* e, TarSource& source) {
  if (auto r = remove_tree(parent, p.name, p.path); !r) return r;
  UniqueFd fd(retry_eintr([&] {
    return ::openat(parent, p.name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                    0600);
  }));
  if (!fd) return fail_errno("create " + p.path);
  auto copied = copy_entry_data(a, source, budget_, fd.get(), p.path);
  if (!copied) return std::unexpected(copied.error());
  stats.bytes += *copied;
  if (retry_eintr([&] { return ::ftruncate(fd.get(), archive_entry_size(e)); }) != 0) {
    return fail_errno("ftruncate " + p.path);
  }
  if (auto r = set_owner_mode(fd.get(), e, p.path); !r) return r;
  auto set = [&](const Xattr& x) {
    return ::fsetxattr(fd.get(), x.name.c_str(), x.value.data(), x.value.size(), 0);
  };
  if (auto r = set_xattrs(entry_xattrs(e), p.path, set); !r) return r;
  auto times = entry_times(e);
  if (::futimens(fd.get(), times.data()) != 0) return fail_errno("futimens " + p.path);
  ++stats.regular;
  return {};
}

// Owner, (mode), xattrs and times of an entry that cannot be opened (a symlink, a device,
// a fifo), set by name without following it; the order keeps setuid bits and capabilities.
Result<void> DiffApplier::set_nofollow_metadata(int parent, const EntryPath& p, archive_entry* e,
                                                bool with_mode) {
  auto uid = static_cast<uid_t>(archive_entry_uid(e));
  auto gid = static_cast<gid_t>(archive_entry_gid(e));
  if (::fchownat(parent, p.name.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) != 0) {
    return fail_errno("fchownat " + p.path);
  }
  if (with_mode &&
      ::fchmodat(parent, p.name.c_str(), archive_entry_perm(e), AT_SYMLINK_NOFOLLOW) != 0) {
    return fail_errno("fchmodat " + p.path);
  }
  std::string where = proc_path(parent, p.name);
  auto set = [&](const Xattr& x) {
    return ::lsetxattr(where.c_str(), x.name.c_str(), x.value.data(), x.value.size(), 0);
  };
  if (auto r = set_xattrs(entry_xattrs(e), p.path, set); !r) return r;
  auto times = entry_times(e);
  if (::utimensat(parent, p.name.c_str(), times.data(), AT_SYMLINK_NOFOLLOW) != 0) {
    return fail_errno("utimensat " + p.path);
  }
  return {};
}

Result<void> DiffApplier::apply_symlink(int parent, const EntryPath& p, archive_entry* e) {
  const char* target = archive_entry_symlink(e);
  if (target == nullptr) return fail(p.path + ": symlink without a target");
  if (auto r = remove_tree(parent, p.name, p.path); !r) return r;
  if (::symlinkat(target, parent, p.name.c_str()) != 0) return fail_errno("symlinkat " + p.path);
  if (auto r = set_nofollow_metadata(parent, p, e, false); !r) return r;
  ++stats.symlinks;
  return {};
}

// A second name for an inode the diff (or the rootfs) already has. The target is
// resolved inside the root like any other path, and a symlink there is linked, not followed.
Result<void> DiffApplier::apply_hardlink(int parent, const EntryPath& p, archive_entry* e) {
  auto target = parse_entry_path(archive_entry_hardlink(e));
  if (!target) return std::unexpected(target.error().wrap(p.path + ": hardlink target"));
  if (target->name.empty()) return fail(p.path + ": hardlink to the root refused");
  if (target->path == p.path) return {};
  auto target_dir = open_dir(target->parent, false);
  if (!target_dir) return std::unexpected(target_dir.error().wrap(p.path + ": hardlink target"));
  struct stat st {};
  if (::fstatat(target_dir->get(), target->name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return fail_errno(p.path + ": hardlink target " + target->path);
  }
  if (S_ISDIR(st.st_mode)) return fail(p.path + ": hardlink to a directory refused");
  if (auto r = remove_tree(parent, p.name, p.path); !r) return r;
  if (::linkat(target_dir->get(), target->name.c_str(), parent, p.name.c_str(), 0) != 0) {
    return fail_errno("linkat " + p.path + " to " + target->path);
  }
  ++stats.hardlinks;
  return {};
}

Result<void> DiffApplier::apply_node(int parent, const EntryPath& p, archive_entry* e) {
  if (auto r = remove_tree(parent, p.name, p.path); !r) return r;
  mode_t type = archive_entry_filetype(e);
  dev_t rdev = type == AE_IFIFO ? 0 : archive_entry_rdev(e);
  if (::mknodat(parent, p.name.c_str(), type | 0600, rdev) != 0)
    return fail_errno("mknodat " + p.path);
  if (auto r = set_nofollow_metadata(parent, p, e, true); !r) return r;
  ++(type == AE_IFIFO ? stats.fifos : stats.devices);
  return {};
}

// Owner first: chown clears the setuid/setgid bits and file capabilities.
Result<void> DiffApplier::set_owner_mode(int fd, archive_entry* e, const std::string& path) {
  auto uid = static_cast<uid_t>(archive_entry_uid(e));
  auto gid = static_cast<gid_t>(archive_entry_gid(e));
  if (::fchown(fd, uid, gid) != 0) return fail_errno("fchown " + path);
  if (::fchmod(fd, archive_entry_perm(e)) != 0) return fail_errno("fchmod " + path);
  return {};
}

Result<void> DiffApplier::set_xattrs(const Xattrs& xattrs, const std::string& path,
                                     const Setter& set) {
  for (const Xattr& x : xattrs) {
    if (set(x) == 0) continue;
    if (errno != EOPNOTSUPP) return fail_errno(fmt::format("setxattr {} on {}", x.name, path));
    stats.warnings.push_back(
        fmt::format("xattr {} on {} not supported by the rootfs", x.name, path));
  }
  return {};
}

// An existing directory takes the diff's xattrs exactly: the ones it lacks are removed.
Result<void> DiffApplier::drop_stale_xattrs(int fd, const std::string& where, const Xattrs& keep,
                                            const std::string& path) {
  auto existing = read_xattrs(where);
  if (!existing) return std::unexpected(existing.error().wrap(path));
  for (const Xattr& x : *existing) {
    if (is_overlay_xattr(x.name) || find_xattr(keep, x.name) != nullptr) continue;
    if (::fremovexattr(fd, x.name.c_str()) != 0 && errno != ENODATA) {
      return fail_errno(fmt::format("removexattr {} on {}", x.name, path));
    }
  }
  return {};
}

// Directory times go last, once nothing is added to or removed from them any more.
Result<void> DiffApplier::finish() {
  for (auto it = dir_times_.rbegin(); it != dir_times_.rend(); ++it) {
    auto p = parse_entry_path(it->path.c_str());
    if (!p) continue;
    auto parent = open_dir(p->parent, false);
    if (!parent && is_absent(parent.error())) continue;  // deleted by a later entry
    if (!parent) return std::unexpected(parent.error().wrap(it->path));
    struct stat st {};
    bool still_dir = ::fstatat(parent->get(), p->name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                     S_ISDIR(st.st_mode);  // else replaced by a later entry
    if (still_dir &&
        ::utimensat(parent->get(), p->name.c_str(), it->times.data(), AT_SYMLINK_NOFOLLOW) != 0) {
      return fail_errno("utimensat " + it->path);
    }
  }
  return {};
}

// libarchive accepts a tar that simply stops at an entry boundary; a diff cut there would
// silently lose its tail, so the end-of-archive marker (two zero blocks) must be present.
Result<void> check_end_marker(archive* a, const TarSource& source) {
  la_int64_t end = archive_read_header_position(a);
  // The tar bytes the reader got: the file's own, or what zstd decompressed from it.
  uint64_t got = tar_stream_bytes(a, source);
  if (end < 0 || got < static_cast<uint64_t>(end) + 1024) {
    return fail("read tar: truncated: no end-of-archive marker");
  }
  return {};
}

}  // namespace

namespace {

struct OverlayMount {
  std::string mount_point;
  std::string super_options;  // As in mountinfo (octal escapes kept).
};

Result<OverlayMount> find_overlay_mount(const std::string& mountpoint, const std::string& context) {
  std::unique_ptr<char, void (*)(void*)> real(::realpath(mountpoint.c_str(), nullptr), &std::free);
  if (!real) return std::unexpected(errno_error("realpath").wrap(context));
  auto text = read_file("/proc/self/mountinfo");
  if (!text) return std::unexpected(text.error().wrap(context));
  std::optional<MountEntry> found;
  for (std::string_view line : split(*text, '\n')) {
    auto entry = parse_mountinfo_line(line);
    if (entry && entry->mount_point == real.get()) found = std::move(entry);  // last = topmost
  }
  if (!found) return fail(context + ": not a mount point");
  if (found->fstype != "overlay") {
    return fail(fmt::format("{}: not an overlay mount ({})", context, found->fstype));
  }
  return OverlayMount{real.get(), found->super_options};
}

std::optional<std::string> overlay_option(const OverlayMount& m, std::string_view key) {
  for (std::string_view option : split(m.super_options, ',')) {
    if (option.starts_with(key) && option.size() > key.size() && option[key.size()] == '=') {
      return unescape_octal(option.substr(key.size() + 1));
    }
  }
  return std::nullopt;
}

}  // namespace

Result<std::string> overlay_upperdir(const std::string& mountpoint) {
  std::string context = "overlay upperdir of " + mountpoint;
  auto m = find_overlay_mount(mountpoint, context);
  if (!m) return std::unexpected(m.error());
  if (auto upper = overlay_option(*m, "upperdir")) return *upper;
  return fail(context + ": the overlay has no upper layer");
}

Result<void> reset_overlay(const std::string& mountpoint) {
  std::string context = "reset overlay " + mountpoint;
  auto m = find_overlay_mount(mountpoint, context);
  if (!m) return std::unexpected(m.error());
  auto upper = overlay_option(*m, "upperdir");
  auto work = overlay_option(*m, "workdir");
  if (!upper || !work) return fail(context + ": the overlay has no upper or work directory");
  std::string data;
  for (std::string_view option : split(m->super_options, ',')) {
    if (option == "rw" || option == "ro" || option.empty()) continue;
    if (!data.empty()) data += ',';
    data += unescape_octal(option);
  }
  if (::umount2(m->mount_point.c_str(), UMOUNT_NOFOLLOW) != 0) {
    return std::unexpected(errno_error("umount").wrap(context));
  }
  for (const std::string* dir : {&*upper, &*work}) {
    if (auto r = remove_directory_contents(*dir); !r)
      return std::unexpected(r.error().wrap(context));
  }
  if (::mount("overlay", m->mount_point.c_str(), "overlay", 0, data.c_str()) != 0) {
    return std::unexpected(errno_error("mount " + data).wrap(context));
  }
  return {};
}

Result<RootfsDiffStats> capture_rootfs_diff(const std::string& upperdir, int out_fd) {
  return capture_rootfs_diff(upperdir, out_fd, RootfsCaptureOptions{});
}

Result<RootfsDiffStats> capture_rootfs_diff(const std::string& upperdir, int out_fd,
                                            const RootfsCaptureOptions& options) {
  auto failed = [](const Error& e) { return std::unexpected(e.wrap("capture diff")); };
  auto root = open_file(upperdir, O_RDONLY | O_DIRECTORY);
  if (!root) return failed(root.error());
  DiffWriter writer(out_fd, options);
  if (auto r = writer.open(); !r) return failed(r.error());
  if (options.opaque_root) {
    if (auto r = writer.opaque_root(root->get()); !r) return failed(r.error());
  }
  if (auto r = writer.walk(root->get(), ""); !r) return failed(r.error());
  if (auto r = writer.close(); !r) return failed(r.error());
  return std::move(writer.stats);
}

// Pipeline: open the root -> read entries one by one and apply each -> require the
// end-of-archive marker -> set directory times.
Result<RootfsDiffStats> apply_rootfs_diff(int in_fd, const std::string& rootfs) {
  return apply_rootfs_diff(in_fd, rootfs, ExpansionLimits{});
}

Result<RootfsDiffStats> apply_rootfs_diff(int in_fd, const std::string& rootfs,
                                          const ExpansionLimits& limits) {
  auto failed = [](const Error& e) { return std::unexpected(e.wrap("apply diff")); };
  auto root = open_file(rootfs, O_PATH | O_DIRECTORY);
  if (!root) return failed(root.error());
  TarSource source;
  source.fd = in_fd;
  std::unique_ptr<archive, int (*)(archive*)> a(archive_read_new(), &archive_read_free);
  if (!a) return failed(Error("archive_read_new failed"));
  archive_read_support_format_tar(a.get());
  // Plain tar (every checkpoint before compression existed) or zstd, told by the magic.
  archive_read_support_filter_none(a.get());
  archive_read_support_filter_zstd(a.get());
  if (archive_read_open(a.get(), &source, nullptr, read_from_source, nullptr) != ARCHIVE_OK) {
    return failed(tar_error(a.get(), source.error).wrap("read tar"));
  }
  DiffApplier applier(std::move(*root), limits);
  for (;;) {
    archive_entry* e = nullptr;
    int r = archive_read_next_header(a.get(), &e);
    if (r == ARCHIVE_EOF) break;
    if (r == ARCHIVE_WARN) {
      applier.stats.warnings.push_back(tar_error(a.get(), source.error).message());
    } else if (r != ARCHIVE_OK) {
      return failed(tar_error(a.get(), source.error).wrap("read tar"));
    }
    if (auto applied = applier.apply(a.get(), e, source); !applied) return failed(applied.error());
  }
  if (auto r = check_end_marker(a.get(), source); !r) return failed(r.error());
  if (auto r = applier.finish(); !r) return failed(r.error());
  return std::move(applier.stats);
}

}  // namespace arch
