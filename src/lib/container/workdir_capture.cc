// Shared mode's work directory captured with a checkpoint and put back by its restore.
#include "container/workdir_capture.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <memory>

#include "base/file_util.h"
#include "base/unique_fd.h"
#include "container/rootfs_diff.h"

namespace arch {
namespace {

using DigestCtx = std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)>;

char type_letter(mode_t mode) {
  switch (mode & S_IFMT) {
    case S_IFDIR:
      return 'd';
    case S_IFREG:
      return 'f';
    case S_IFLNK:
      return 'l';
    case S_IFCHR:
      return 'c';
    case S_IFBLK:
      return 'b';
    case S_IFIFO:
      return 'p';
    case S_IFSOCK:
      return 's';
    default:
      return '?';
  }
}

class Walker {
 public:
  Walker(uint64_t max_bytes, uint64_t max_entries)
      : max_bytes_(max_bytes), max_entries_(max_entries), ctx_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {}

  Result<WorkdirSummary> run(int rootfd) {
    if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1)
      return fail("SHA-256 unavailable");
    struct stat st {};
    if (::fstat(rootfd, &st) != 0) return fail_errno("fstat the work directory");
    dev_ = st.st_dev;
    if (auto ok = walk(rootfd, ""); !ok) return std::unexpected(ok.error());
    if (!summary_.refused.empty()) return summary_;
    std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(ctx_.get(), md.data(), &len) != 1) return fail("SHA-256 failed");
    for (unsigned int i = 0; i < len; ++i) summary_.fingerprint += fmt::format("{:02x}", md[i]);
    return summary_;
  }

 private:
  Result<void> walk(int dirfd, const std::string& dir) {
    auto names = list_directory(dirfd);
    if (!names) return std::unexpected(names.error().wrap(dir.empty() ? "." : dir));
    for (const auto& name : *names) {
      if (!summary_.refused.empty()) return {};
      std::string path = dir.empty() ? name : dir + "/" + name;
      struct stat st {};
      if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
        return fail_errno("stat " + path);
      if (++summary_.entries > max_entries_) {
        summary_.refused = fmt::format("more than {} entries", max_entries_);
        return {};
      }
      std::string line = path;
      line += '\0';
      line += type_letter(st.st_mode);
      line += fmt::format("\x1f{:o}\x1f{}\x1f{}", st.st_mode & 07777, st.st_uid, st.st_gid);
      if (S_ISREG(st.st_mode)) {
        summary_.bytes += static_cast<uint64_t>(st.st_size);
        if (summary_.bytes > max_bytes_) {
          summary_.refused = fmt::format("its files hold more than {} bytes", max_bytes_);
          return {};
        }
      }
      if (!S_ISDIR(st.st_mode)) {
        line +=
            fmt::format("\x1f{}\x1f{}.{:09}", st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
      }
      if (S_ISLNK(st.st_mode)) {
        std::array<char, 4097> target{};
        ssize_t n = ::readlinkat(dirfd, name.c_str(), target.data(), target.size() - 1);
        if (n < 0) return fail_errno("readlink " + path);
        line += '\x1f';
        line.append(target.data(), static_cast<std::size_t>(n));
      }
      if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) line += fmt::format("\x1f{}", st.st_rdev);
      line += '\n';
      if (EVP_DigestUpdate(ctx_.get(), line.data(), line.size()) != 1)
        return fail("SHA-256 failed");
      if (!S_ISDIR(st.st_mode)) continue;
      if (st.st_dev != dev_) {
        summary_.refused = "another file system is mounted at " + path;
        return {};
      }
      UniqueFd child(
          ::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!child) return fail_errno("open " + path);
      if (auto ok = walk(child.get(), path); !ok) return ok;
    }
    return {};
  }

  uint64_t max_bytes_;
  uint64_t max_entries_;
  dev_t dev_ = 0;
  DigestCtx ctx_;
  WorkdirSummary summary_;
};

}  // namespace

Result<WorkdirSummary> summarize_workdir(int dirfd, uint64_t max_bytes, uint64_t max_entries) {
  return Walker(max_bytes, max_entries).run(dirfd);
}

Result<nlohmann::json> capture_workdir(const std::string& dir, uint64_t max_bytes,
                                       const std::string& out_path) {
  auto root = open_file(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!root) return std::unexpected(root.error().wrap("the work directory"));
  auto summary = summarize_workdir(root->get(), max_bytes, kWorkdirMaxEntries);
  if (!summary) return std::unexpected(summary.error().wrap("the work directory"));
  if (!summary->refused.empty()) {
    return nlohmann::json{{"captured", false}, {"reason", summary->refused}};
  }
  auto out = open_file(out_path, O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (!out) return std::unexpected(out.error());
  RootfsCaptureOptions options;
  options.opaque_root = true;
  auto stats = capture_rootfs_diff(dir, out->get(), options);
  if (!stats) {
    (void)::unlink(out_path.c_str());
    return std::unexpected(stats.error().wrap("capture the work directory"));
  }
  return nlohmann::json{{"captured", true},
                        {"file", kWorkdirFile},
                        {"bytes", stats->bytes},
                        {"entries", stats->entries},
                        {"fingerprint", summary->fingerprint}};
}

Result<std::string> put_back_workdir(const std::string& dir, const nlohmann::json& recorded,
                                     int tar_fd, const ExpansionLimits& caps) {
  if (!recorded.is_object() || !recorded.value("captured", false)) return std::string();
  auto fingerprint = recorded.find("fingerprint");
  auto bytes = recorded.find("bytes");
  auto entries = recorded.find("entries");
  if (fingerprint == recorded.end() || !fingerprint->is_string() || bytes == recorded.end() ||
      !bytes->is_number_unsigned() || entries == recorded.end() || !entries->is_number_unsigned()) {
    return fail("the checkpoint's work directory record is malformed");
  }
  auto root = open_file(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!root) return std::unexpected(root.error().wrap("the work directory"));
  // Walked only as far as the capture reached: one that grew past it has changed.
  auto now = summarize_workdir(root->get(), bytes->get<uint64_t>(), entries->get<uint64_t>());
  if (!now) return std::unexpected(now.error().wrap("the work directory"));
  if (now->refused.empty() && now->fingerprint == fingerprint->get<std::string>()) {
    return std::string();
  }
  ExpansionLimits limits{bytes->get<uint64_t>(), entries->get<uint64_t>()};
  auto applied = apply_rootfs_diff(tar_fd, dir, limits.min(caps));
  if (!applied) return std::unexpected(applied.error().wrap("put the work directory back"));
  return fmt::format(
      "work directory put back as it was at this checkpoint ({} entries, {} bytes; it had "
      "changed since)",
      applied->entries, applied->bytes);
}

}  // namespace arch
