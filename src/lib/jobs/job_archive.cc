// JobArchive: libarchive (pax tar + zstd filter) in both directions.
#include "jobs/job_archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <sys/stat.h>
#include <unistd.h>

#include <memory>
#include <vector>

#include "base/file_util.h"
#include "base/unique_fd.h"
#include "store/manifest.h"

namespace arch {
namespace {

using WriteArchive = std::unique_ptr<archive, int (*)(archive*)>;

Error archive_error(archive* a, const std::string& what) {
  const char* msg = archive_error_string(a);
  return Error(what + ": " + (msg != nullptr ? msg : "libarchive error"));
}

Result<void> add_file(archive* a, const CheckpointEntry& e, const std::string& ckpt_dir) {
  std::unique_ptr<archive_entry, void (*)(archive_entry*)> entry(archive_entry_new(),
                                                                 archive_entry_free);
  archive_entry_set_pathname(entry.get(), e.path.c_str());
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
  auto walked = walk_checkpoint_dir(
      dir->get(), [&](const CheckpointEntry& e) { return add_file(a.get(), e, ckpt_dir); });
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

Result<void> extract_entry(archive* a, archive_entry* e, const std::string& dest) {
  std::string path = archive_entry_pathname(e) != nullptr ? archive_entry_pathname(e) : "";
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  if (!safe_relative_path(path)) return fail("archive holds an unsafe path '" + path + "'");
  std::string target = dest + "/" + path;
  // Directories follow their contents in our archives: make the parents first (only
  // directories and files are ever created here, so no component can be a link).
  for (auto slash = path.find('/'); slash != std::string::npos; slash = path.find('/', slash + 1)) {
    std::string parent = dest + "/" + path.substr(0, slash);
    if (::mkdir(parent.c_str(), 0700) != 0 && errno != EEXIST) return fail_errno("mkdir " + parent);
  }
  mode_t type = archive_entry_filetype(e);
  if (type == AE_IFDIR) {
    if (::mkdir(target.c_str(), 0700) != 0 && errno != EEXIST) return fail_errno("mkdir " + path);
    return {};
  }
  if (type != AE_IFREG) return fail("archive holds '" + path + "', which is not a regular file");
  auto fd = open_file(target, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
  if (!fd) return std::unexpected(fd.error());
  for (;;) {
    const void* buf = nullptr;
    size_t size = 0;
    la_int64_t offset = 0;
    int r = archive_read_data_block(a, &buf, &size, &offset);
    if (r == ARCHIVE_EOF) break;
    if (r != ARCHIVE_OK) return std::unexpected(archive_error(a, "read " + path));
    if (::lseek(fd->get(), offset, SEEK_SET) < 0) return fail_errno("seek " + path);
    auto w = write_all(fd->get(), std::string_view(static_cast<const char*>(buf), size));
    if (!w) return w;
  }
  return {};
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
  std::unique_ptr<archive, int (*)(archive*)> a(archive_read_new(), archive_read_free);
  if (!a) return fail("archive_read_new failed");
  archive_read_support_format_tar(a.get());
  archive_read_support_filter_all(a.get());
  auto fd = open_file(archive_path, O_RDONLY);
  if (!fd) return std::unexpected(fd.error().wrap("archive"));
  if (archive_read_open_fd(a.get(), fd->get(), 1 << 20) != ARCHIVE_OK) {
    return std::unexpected(archive_error(a.get(), archive_path + " is not a readable archive"));
  }
  std::size_t entries = 0;
  for (;;) {
    archive_entry* e = nullptr;
    int r = archive_read_next_header(a.get(), &e);
    if (r == ARCHIVE_EOF) break;
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
      return std::unexpected(archive_error(a.get(), archive_path + " is damaged"));
    }
    auto done = extract_entry(a.get(), e, dest_dir);
    if (!done) return std::unexpected(done.error().wrap(archive_path + " is damaged"));
    ++entries;
  }
  if (entries == 0) return fail(archive_path + " is empty");
  return {};
}

}  // namespace arch
