// Tests for RootfsDiff: capture of hand-made and real overlay upper layers, apply, and the
// rule that applying never touches anything outside the rootfs.
#include "container/rootfs_diff.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "base/file_util.h"
#include "base/temp_dir.h"
#include "base/unique_fd.h"

namespace arch {
namespace {

namespace fs = std::filesystem;

bool is_root() {
  return ::geteuid() == 0;
}

// Unmounts what it holds, on every path out of a test.
class MountGuard {
 public:
  MountGuard() = default;
  MountGuard(const MountGuard&) = delete;
  MountGuard& operator=(const MountGuard&) = delete;
  ~MountGuard() { unmount(); }
  void hold(std::string path) { path_ = std::move(path); }
  void unmount() {
    if (!path_.empty()) ::umount2(path_.c_str(), MNT_DETACH);
    path_.clear();
  }

 private:
  std::string path_;
};

void write_file(const std::string& path, std::string_view data, mode_t mode = 0644) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  ASSERT_TRUE(fd) << path << ": " << std::strerror(errno);
  ASSERT_TRUE(write_all(fd.get(), data));
  ASSERT_EQ(::fchmod(fd.get(), mode), 0);
}

void make_dirs(const std::string& path) {
  fs::create_directories(path);
}

std::string slurp(const std::string& path) {
  auto data = read_file(path, 64 << 20);
  return data ? *data : "<unreadable: " + data.error().message() + ">";
}

std::string sha256_hex(std::string_view data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md.data(), &len, EVP_sha256(), nullptr);
  std::string out;
  for (unsigned i = 0; i < len; ++i) out += fmt::format("{:02x}", md[i]);
  return out;
}

// "name=value;..." of a path's own xattrs, overlay's internals left out.
std::string xattr_text(const std::string& path) {
  std::array<char, 8192> names{};
  ssize_t n = ::llistxattr(path.c_str(), names.data(), names.size());
  if (n <= 0) return "";
  std::vector<std::string> items;
  for (const char* name = names.data(); name < names.data() + n; name += std::strlen(name) + 1) {
    if (std::string_view(name).starts_with("trusted.overlay.")) continue;
    std::array<char, 4096> value{};
    ssize_t v = ::lgetxattr(path.c_str(), name, value.data(), value.size());
    items.push_back(fmt::format("{}={}", name, std::string(value.data(), v > 0 ? size_t(v) : 0)));
  }
  std::sort(items.begin(), items.end());
  std::string out;
  for (const auto& item : items) out += item + ";";
  return out;
}

// One line per entry under `root` (the root itself left out): type, mode, owner, size,
// content digest or link target, device numbers, xattrs and mtime to the nanosecond.
using Listing = std::map<std::string, std::string>;
Listing listing(const std::string& root) {
  Listing out;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    std::string path = entry.path().string();
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) continue;
    std::string content;
    char type = '?';
    switch (st.st_mode & S_IFMT) {
      case S_IFREG:
        type = 'f';
        content = "sha256=" + sha256_hex(slurp(path));
        break;
      case S_IFDIR:
        type = 'd';
        break;
      case S_IFLNK:
        type = 'l';
        content = "-> " + fs::read_symlink(path).string();
        break;
      case S_IFCHR:
        type = 'c';
        break;
      case S_IFBLK:
        type = 'b';
        break;
      case S_IFIFO:
        type = 'p';
        break;
      case S_IFSOCK:
        type = 's';
        break;
      default:
        break;
    }
    out[path.substr(root.size() + 1)] = fmt::format(
        "{} {:04o} {}:{} size={} {} rdev={}:{} xattrs[{}] mtime={}.{:09}", type, st.st_mode & 07777,
        st.st_uid, st.st_gid, S_ISDIR(st.st_mode) ? 0 : st.st_size, content, major(st.st_rdev),
        minor(st.st_rdev), xattr_text(path), st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
  }
  return out;
}

std::string listing_text(const Listing& l) {
  std::string out;
  for (const auto& [path, line] : l) out += path + "  " + line + "\n";
  return out;
}

// What overlay shows for `upper` over `lower`: the reference an apply must reproduce.
Listing overlay_model(Listing lower, const Listing& upper, const std::set<std::string>& opaque) {
  auto erase_below = [&](const std::string& path) {
    std::erase_if(lower, [&](const auto& kv) { return kv.first.starts_with(path + "/"); });
  };
  for (const auto& [path, line] : upper) {  // map order: a directory before its contents
    if (line.starts_with("c") && line.find("rdev=0:0") != std::string::npos) {
      lower.erase(path);  // whiteout
      erase_below(path);
      continue;
    }
    if (line.starts_with("s")) continue;  // sockets are not captured
    if (opaque.contains(path) || !line.starts_with("d")) erase_below(path);
    lower[path] = line;
  }
  return lower;
}

// Distinct, known times on every entry under `root`, children before parents.
void stamp_tree(const std::string& root, time_t base) {
  std::vector<std::string> paths;
  for (const auto& entry : fs::recursive_directory_iterator(root)) paths.push_back(entry.path());
  std::sort(paths.rbegin(), paths.rend());
  long i = 0;
  for (const auto& path : paths) {
    ++i;
    std::array<timespec, 2> times{timespec{base - 1000 + i, 500000000 + i},
                                  timespec{base + i * 60, 123456789 - i * 7}};
    ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times.data(), AT_SYMLINK_NOFOLLOW), 0) << path;
  }
}

struct TarItem {
  std::string path;
  mode_t type = 0;
  std::string hardlink;
  std::string symlink;
  int sparse_blocks = 0;
  int64_t size = 0;
};

std::vector<TarItem> read_tar(const std::string& file) {
  std::vector<TarItem> out;
  archive* a = archive_read_new();
  archive_read_support_format_tar(a);
  EXPECT_EQ(archive_read_open_filename(a, file.c_str(), 10240), ARCHIVE_OK);
  archive_entry* e = nullptr;
  while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
    TarItem item;
    item.path = archive_entry_pathname(e);
    if (item.path.ends_with('/')) item.path.pop_back();
    item.type = archive_entry_filetype(e);
    if (const char* h = archive_entry_hardlink(e)) item.hardlink = h;
    if (const char* s = archive_entry_symlink(e)) item.symlink = s;
    item.sparse_blocks = archive_entry_sparse_count(e);
    item.size = archive_entry_size(e);
    out.push_back(item);
  }
  archive_read_free(a);
  return out;
}

const TarItem* find_item(const std::vector<TarItem>& items, const std::string& path) {
  auto it =
      std::find_if(items.begin(), items.end(), [&](const TarItem& i) { return i.path == path; });
  return it == items.end() ? nullptr : &*it;
}

Result<RootfsDiffStats> capture_to(const std::string& upper, const std::string& tar) {
  UniqueFd fd(::open(tar.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  return capture_rootfs_diff(upper, fd.get());
}

Result<RootfsDiffStats> apply_from(const std::string& tar, const std::string& rootfs) {
  UniqueFd fd(::open(tar.c_str(), O_RDONLY | O_CLOEXEC));
  return apply_rootfs_diff(fd.get(), rootfs);
}

// A sparse file: 4 KiB of 'A', a 1 MiB hole, 4 KiB of 'B'.
void write_sparse(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  ASSERT_TRUE(fd);
  std::string a(4096, 'A');
  std::string b(4096, 'B');
  ASSERT_EQ(::pwrite(fd.get(), a.data(), a.size(), 0), 4096);
  ASSERT_EQ(::pwrite(fd.get(), b.data(), b.size(), 4096 + (1 << 20)), 4096);
}

void bind_socket(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::close(fd);
}

// ---- The hand-made upper layer ----

// Every kind of entry an upperdir holds, and the lower rootfs it lands on.
void build_fake_upper(const TempDir& t) {
  std::string u = t / "upper";
  make_dirs(u + "/links");
  make_dirs(u + "/a/b/c");
  make_dirs(u + "/etc");
  make_dirs(u + "/opq/sub");
  make_dirs(u + "/dir with space");
  write_file(u + "/hello.txt", "hello\n");
  ASSERT_EQ(::lsetxattr((u + "/hello.txt").c_str(), "user.note", "hi there", 8, 0), 0);
  write_sparse(u + "/sparse.bin");
  write_file(u + "/links/a", "linked\n");
  ASSERT_EQ(::link((u + "/links/a").c_str(), (u + "/links/b").c_str()), 0);
  ASSERT_EQ(::symlink("/etc/passwd", (u + "/abs-link").c_str()), 0);
  ASSERT_EQ(::symlink("../hello.txt", (u + "/a/rel-link").c_str()), 0);
  ASSERT_EQ(::mkfifo((u + "/fifo").c_str(), 0640), 0);
  ASSERT_EQ(::mknod((u + "/null").c_str(), S_IFCHR | 0666, makedev(1, 3)), 0);
  write_file(u + "/suid", "#!/bin/true\n", 04755);
  write_file(u + "/secret", "s3cret\n", 0600);
  write_file(u + "/capped", "#!/bin/true\n", 0755);
  // vfs_cap_data revision 2, effective, permitted = cap_net_bind_service (bit 10).
  const std::array<unsigned char, 20> cap{0x01, 0, 0, 0x02, 0, 0x04};
  ASSERT_EQ(::lsetxattr((u + "/capped").c_str(), "security.capability", cap.data(), cap.size(), 0),
            0);
  ASSERT_EQ(::chown((u + "/secret").c_str(), 1234, 5678), 0);
  ASSERT_EQ(::mknod((u + "/gone").c_str(), S_IFCHR, makedev(0, 0)), 0);
  ASSERT_EQ(::mknod((u + "/etc/old.conf").c_str(), S_IFCHR, makedev(0, 0)), 0);
  write_file(u + "/etc/new.conf", "new\n");
  ASSERT_EQ(::lsetxattr((u + "/opq").c_str(), "trusted.overlay.opaque", "y", 1, 0), 0);
  write_file(u + "/opq/new", "fresh\n");
  write_file(u + "/opq/sub/deeper", "deeper\n");
  write_file(u + "/a/b/c/deep.txt", "deep\n");
  write_file(u + "/dir with space/h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93.txt", "unicode\n");
  bind_socket(u + "/sock");
  stamp_tree(u, 1700000000);

  std::string l = t / "lower";
  make_dirs(l + "/etc");
  make_dirs(l + "/opq/olddir");
  make_dirs(l + "/unrelated");
  write_file(l + "/gone", "delete me\n");
  write_file(l + "/etc/old.conf", "old\n");
  write_file(l + "/etc/keep.conf", "keep\n");
  ASSERT_EQ(::lsetxattr((l + "/etc").c_str(), "user.stale", "x", 1, 0), 0);
  write_file(l + "/opq/old1", "old1\n");
  write_file(l + "/opq/olddir/x", "x\n");
  write_file(l + "/hello.txt", "old hello\n");
  write_file(l + "/unrelated/stay.txt", "stay\n");
  stamp_tree(l, 1600000000);
}

TEST(RootfsDiff, CapturesAndAppliesEveryKindOfEntry) {
  if (!is_root()) GTEST_SKIP() << "needs root (mknod, chown, trusted.* xattrs)";
  TempDir t;
  ASSERT_FALSE(t.path().empty());
  build_fake_upper(t);
  if (HasFatalFailure()) return;
  Listing upper = listing(t / "upper");
  Listing lower = listing(t / "lower");

  auto captured = capture_to(t / "upper", t / "diff.tar");
  ASSERT_TRUE(captured) << captured.error().message();
  EXPECT_EQ(captured->regular, 11u);  // hello sparse links/a suid secret capped etc/new
                                      // opq/new opq/sub/deeper deep.txt unicode
  EXPECT_EQ(captured->hardlinks, 1u);
  EXPECT_EQ(captured->symlinks, 2u);
  EXPECT_EQ(captured->fifos, 1u);
  EXPECT_EQ(captured->devices, 1u);
  EXPECT_EQ(captured->deletions, 2u);
  EXPECT_EQ(captured->opaque_dirs, 1u);
  EXPECT_EQ(captured->skipped, 1u);
  ASSERT_EQ(captured->warnings.size(), 1u);
  EXPECT_NE(captured->warnings[0].find("socket sock"), std::string::npos) << captured->warnings[0];

  // The tar: OCI markers, hardlinks, sparse entries, parents before children.
  auto items = read_tar(t / "diff.tar");
  ASSERT_FALSE(items.empty());
  std::vector<std::string> names;
  for (const auto& item : items) names.push_back(item.path);
  for (const char* want : {".wh.gone", "etc/.wh.old.conf", "opq/.wh..wh..opq"}) {
    const TarItem* marker = find_item(items, want);
    ASSERT_NE(marker, nullptr) << want;
    EXPECT_EQ(marker->type, AE_IFREG);
    EXPECT_EQ(marker->size, 0);
  }
  EXPECT_EQ(find_item(items, "gone"), nullptr);
  EXPECT_EQ(find_item(items, "sock"), nullptr);
  auto opq = std::find(names.begin(), names.end(), "opq");
  ASSERT_NE(opq, names.end());
  EXPECT_EQ(*(opq + 1), "opq/.wh..wh..opq");
  ASSERT_NE(find_item(items, "links/b"), nullptr);
  EXPECT_EQ(find_item(items, "links/b")->hardlink, "links/a");
  EXPECT_GT(find_item(items, "sparse.bin")->sparse_blocks, 0);
  EXPECT_EQ(find_item(items, "abs-link")->symlink, "/etc/passwd");
  ASSERT_NE(find_item(items, "dir with space/h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93.txt"), nullptr);
  for (size_t i = 0; i < names.size(); ++i) {
    auto slash = names[i].find_last_of('/');
    if (slash == std::string::npos) continue;
    auto parent = std::find(names.begin(), names.begin() + long(i), names[i].substr(0, slash));
    EXPECT_NE(parent, names.begin() + long(i)) << names[i] << " before its parent";
  }
  struct stat tar_st {};
  ASSERT_EQ(::stat((t / "diff.tar").c_str(), &tar_st), 0);
  EXPECT_LT(tar_st.st_size, 256 * 1024) << "the hole was stored as data";

  // Apply over the lower tree and compare with what overlay would show.
  auto applied = apply_from(t / "diff.tar", t / "lower");
  ASSERT_TRUE(applied) << applied.error().message();
  EXPECT_EQ(applied->deletions, 2u);
  EXPECT_EQ(applied->opaque_dirs, 1u);
  EXPECT_EQ(applied->hardlinks, 1u);
  Listing expected = overlay_model(lower, upper, {"opq"});
  EXPECT_EQ(listing_text(listing(t / "lower")), listing_text(expected));

  struct stat sa {
  }, sb{}, sparse{};
  ASSERT_EQ(::stat((t / "lower/links/a").c_str(), &sa), 0);
  ASSERT_EQ(::stat((t / "lower/links/b").c_str(), &sb), 0);
  EXPECT_EQ(sa.st_ino, sb.st_ino);
  EXPECT_EQ(sa.st_nlink, 2u);
  ASSERT_EQ(::stat((t / "lower/sparse.bin").c_str(), &sparse), 0);
  EXPECT_EQ(sparse.st_size, 8192 + (1 << 20));
  EXPECT_LT(sparse.st_blocks * 512, 128 * 1024) << "the hole was filled";
  EXPECT_FALSE(fs::exists(t / "lower/opq/old1"));
  EXPECT_FALSE(fs::exists(t / "lower/opq/olddir"));
  EXPECT_TRUE(fs::exists(t / "lower/etc/keep.conf"));
  EXPECT_TRUE(fs::exists(t / "lower/unrelated/stay.txt"));
  EXPECT_NE(expected["capped"].find("security.capability="), std::string::npos);
}

TEST(RootfsDiff, RoundTripWithoutPrivileges) {
  TempDir t;
  std::string u = t / "upper";
  make_dirs(u + "/d/e");
  write_file(u + "/d/e/f.txt", std::string(300000, 'x') + "end");
  write_sparse(u + "/d/sparse");
  UniqueFd hole(::open((u + "/all-hole").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_EQ(::ftruncate(hole.get(), 5 << 20), 0);
  hole.reset();
  write_file(u + "/empty", "");
  write_file(u + "/one", "1");
  ASSERT_EQ(::link((u + "/one").c_str(), (u + "/d/one-again").c_str()), 0);
  ASSERT_EQ(::symlink("e/f.txt", (u + "/d/to-f").c_str()), 0);
  ASSERT_EQ(::mkfifo((u + "/d/pipe").c_str(), 0600), 0);
  bool user_xattrs = ::lsetxattr((u + "/one").c_str(), "user.k", "v\0w", 3, 0) == 0;
  stamp_tree(u, 1650000000);
  Listing before = listing(u);

  auto first = capture_to(u, t / "1.tar");
  ASSERT_TRUE(first) << first.error().message();
  auto second = capture_to(u, t / "2.tar");
  ASSERT_TRUE(second);
  EXPECT_EQ(slurp(t / "1.tar"), slurp(t / "2.tar")) << "capture is not deterministic";
  EXPECT_EQ(first->bytes, 300003u + 8192u + 1u);

  make_dirs(t / "root");
  auto applied = apply_from(t / "1.tar", t / "root");
  ASSERT_TRUE(applied) << applied.error().message();
  struct stat up {
  }, down{};
  ASSERT_EQ(::lstat((u + "/d/e/f.txt").c_str(), &up), 0);
  ASSERT_EQ(::lstat((t / "root/d/e/f.txt").c_str(), &down), 0);
  EXPECT_EQ(up.st_atim.tv_sec, down.st_atim.tv_sec);
  EXPECT_EQ(up.st_atim.tv_nsec, down.st_atim.tv_nsec);
  EXPECT_EQ(listing_text(listing(t / "root")), listing_text(before));
  ASSERT_EQ(::lstat((t / "root/all-hole").c_str(), &down), 0);
  EXPECT_EQ(down.st_size, 5 << 20);
  EXPECT_LT(down.st_blocks, 16);
  if (user_xattrs) {
    EXPECT_NE(listing(t / "root")["one"].find("user.k=v"), std::string::npos);
  }

  // Applying twice is harmless: everything is replaced, nothing duplicated.
  auto again = apply_from(t / "1.tar", t / "root");
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(listing_text(listing(t / "root")), listing_text(before));
}

// ---- A real overlay ----

// Mounts overlay `lower`+`upper` at `merged`; false when the kernel or privileges refuse.
bool mount_overlay(const std::string& lower, const std::string& upper, const std::string& work,
                   const std::string& merged) {
  std::string options = fmt::format("lowerdir={},upperdir={},workdir={}", lower, upper, work);
  return ::mount("overlay", merged.c_str(), "overlay", 0, options.c_str()) == 0;
}

TEST(RootfsDiff, RealOverlayRoundTrip) {
  if (!is_root()) GTEST_SKIP() << "needs root (mount)";
  TempDir t;
  std::string l = t / "lower", u = t / "up per", w = t / "work", m = t / "merged";
  for (const auto& d : {l + "/dir", l + "/replaced/sub", l + "/keep", u, w, m}) make_dirs(d);
  write_file(l + "/a.txt", "a\n");
  write_file(l + "/dir/x", "x\n");
  write_file(l + "/dir/y", "y\n");
  write_file(l + "/replaced/old1", "old1\n");
  write_file(l + "/replaced/sub/old2", "old2\n");
  write_file(l + "/keep/z", "z\n");
  ASSERT_EQ(::symlink("a.txt", (l + "/lowlink").c_str()), 0);
  stamp_tree(l, 1500000000);

  MountGuard first;
  if (!mount_overlay(l, u, w, m)) GTEST_SKIP() << "overlay mount refused: " << std::strerror(errno);
  first.hold(m);
  ASSERT_EQ(::unlink((m + "/a.txt").c_str()), 0);
  ASSERT_EQ(::unlink((m + "/dir/x").c_str()), 0);
  fs::remove_all(m + "/replaced");
  make_dirs(m + "/replaced");
  write_file(m + "/replaced/new", "new\n");
  write_file(m + "/keep/z", "z changed\n", 0600);
  ASSERT_EQ(::chown((m + "/dir/y").c_str(), 1234, 5678), 0);
  make_dirs(m + "/newdir/sub");
  write_file(m + "/added.txt", "added\n");
  ASSERT_EQ(::lsetxattr((m + "/added.txt").c_str(), "user.tag", "v", 1, 0), 0);
  ASSERT_EQ(::link((m + "/added.txt").c_str(), (m + "/newdir/hl").c_str()), 0);
  ASSERT_EQ(::symlink("/etc/hostname", (m + "/newdir/sl").c_str()), 0);
  ASSERT_EQ(::mkfifo((m + "/newdir/fifo").c_str(), 0644), 0);
  write_sparse(m + "/newdir/sub/sparse");
  Listing merged_before = listing(m);

  auto upperdir = overlay_upperdir(m);
  ASSERT_TRUE(upperdir) << upperdir.error().message();
  EXPECT_EQ(*upperdir, u);
  auto captured = capture_to(*upperdir, t / "diff.tar");
  ASSERT_TRUE(captured) << captured.error().message();
  first.unmount();
  auto items = read_tar(t / "diff.tar");
  EXPECT_NE(find_item(items, ".wh.a.txt"), nullptr);
  EXPECT_NE(find_item(items, "dir/.wh.x"), nullptr);
  EXPECT_NE(find_item(items, "replaced/.wh..wh..opq"), nullptr);
  EXPECT_EQ(find_item(items, "newdir/hl")->hardlink, "added.txt");

  std::string u2 = t / "upper2", w2 = t / "work2", m2 = t / "merged2";
  for (const auto& d : {u2, w2, m2}) make_dirs(d);
  MountGuard second;
  ASSERT_TRUE(mount_overlay(l, u2, w2, m2)) << std::strerror(errno);
  second.hold(m2);
  auto applied = apply_from(t / "diff.tar", m2);
  ASSERT_TRUE(applied) << applied.error().message();
  EXPECT_EQ(listing_text(listing(m2)), listing_text(merged_before));
}

TEST(RootfsDiff, OverlayUpperdirRefusesOtherMounts) {
  auto proc = overlay_upperdir("/proc");
  ASSERT_FALSE(proc);
  EXPECT_NE(proc.error().message().find("not an overlay mount (proc)"), std::string::npos)
      << proc.error().message();
  TempDir t;
  auto plain = overlay_upperdir(t.path());
  ASSERT_FALSE(plain);
  EXPECT_NE(plain.error().message().find("not a mount point"), std::string::npos);
  auto missing = overlay_upperdir(t / "nope");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ENOENT);
}

// ---- Security: nothing outside the rootfs ----

// Writes a tar of hand-picked (possibly hostile) entries.
class TarBuilder {
 public:
  explicit TarBuilder(const std::string& path) : a_(archive_write_new()) {
    archive_write_set_format_pax(a_);
    archive_write_open_filename(a_, path.c_str());
  }
  ~TarBuilder() { archive_write_free(a_); }
  TarBuilder(const TarBuilder&) = delete;
  TarBuilder& operator=(const TarBuilder&) = delete;
  TarBuilder& file(const std::string& path, const std::string& data) {
    return add(
        path, AE_IFREG | 0644,
        [&](archive_entry* e) { archive_entry_set_size(e, la_int64_t(data.size())); }, data);
  }
  TarBuilder& dir(const std::string& path) { return add(path, AE_IFDIR | 0755, nullptr); }
  TarBuilder& symlink(const std::string& path, const std::string& target) {
    return add(path, AE_IFLNK | 0777,
               [&](archive_entry* e) { archive_entry_copy_symlink(e, target.c_str()); });
  }
  TarBuilder& hardlink(const std::string& path, const std::string& target) {
    return add(path, AE_IFREG | 0644,
               [&](archive_entry* e) { archive_entry_copy_hardlink(e, target.c_str()); });
  }
  TarBuilder& fifo(const std::string& path) { return add(path, AE_IFIFO | 0644, nullptr); }

 private:
  TarBuilder& add(const std::string& path, mode_t mode,
                  const std::function<void(archive_entry*)>& extra, const std::string& data = "") {
    archive_entry* e = archive_entry_new();
    archive_entry_copy_pathname(e, path.c_str());
    archive_entry_set_mode(e, mode);
    archive_entry_set_uid(e, ::getuid());
    archive_entry_set_gid(e, ::getgid());
    if (extra) extra(e);
    EXPECT_EQ(archive_write_header(a_, e), ARCHIVE_OK) << path;
    if (!data.empty()) archive_write_data(a_, data.data(), data.size());
    archive_entry_free(e);
    return *this;
  }
  archive* a_;
};

class RootfsDiffSecurity : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(host_.path().empty());
    write_file(host_ / "canary", "canary\n");
    make_dirs(host_ / "sub");
    write_file(host_ / "sub/file", "host file\n");
    root_ = box_ / "rootfs";
    make_dirs(root_);
    std::string climb = "../../../../../../../../../..";
    ASSERT_EQ(::symlink(host_.path().c_str(), (root_ + "/etc").c_str()), 0);
    ASSERT_EQ(::symlink(host_.path().c_str(), (root_ + "/etc2").c_str()), 0);
    ASSERT_EQ(::symlink((climb + host_.path()).c_str(), (root_ + "/up").c_str()), 0);
    ASSERT_EQ(::symlink("../../..", (root_ + "/top").c_str()), 0);
    ASSERT_EQ(::symlink((host_ / "canary").c_str(), (root_ + "/sym-to-canary").c_str()), 0);
    write_file(root_ + "/canary", "inside\n");
    host_before_ = listing(host_.path());
  }
  void TearDown() override {
    EXPECT_EQ(listing_text(listing(host_.path())), listing_text(host_before_))
        << "the host directory changed";
    EXPECT_FALSE(fs::exists(box_ / "escape"));
    EXPECT_FALSE(fs::exists("/tmp/escape"));
  }
  Result<RootfsDiffStats> apply(const std::function<void(TarBuilder&)>& build) {
    std::string tar = box_ / "diff.tar";
    {
      TarBuilder b(tar);
      build(b);
    }
    return apply_from(tar, root_);
  }
  static std::string message(const Result<RootfsDiffStats>& r) {
    return r ? "succeeded" : r.error().message();
  }

  TempDir host_{"arch-host-"};
  TempDir box_{"arch-rootfs-"};
  std::string root_;
  Listing host_before_;
};

TEST_F(RootfsDiffSecurity, WritesThroughEscapingSymlinksAreRefused) {
  auto abs = apply([](TarBuilder& b) { b.file("etc/passwd", "root::0:0::/:/bin/sh\n"); });
  ASSERT_FALSE(abs);
  EXPECT_NE(message(abs).find("openat2 etc"), std::string::npos) << message(abs);
  EXPECT_TRUE(message(abs).starts_with("apply diff: ")) << message(abs);
  EXPECT_FALSE(apply([](TarBuilder& b) { b.file("up/passwd", "x"); }));
  EXPECT_FALSE(apply([](TarBuilder& b) { b.fifo("etc/fifo"); }));
  auto evil = apply([&](TarBuilder& b) { b.symlink("evil", host_.path()).file("evil/file", "x"); });
  EXPECT_FALSE(evil);
  EXPECT_TRUE(fs::is_symlink(root_ + "/evil"));
}

TEST_F(RootfsDiffSecurity, SymlinksResolveInsideTheRoot) {
  auto r = apply([](TarBuilder& b) { b.file("top/passwd", "inside\n"); });
  ASSERT_TRUE(r) << message(r);
  EXPECT_EQ(slurp(root_ + "/passwd"), "inside\n");
}

TEST_F(RootfsDiffSecurity, WhiteoutsAndOpaqueDirsNeverDeleteOutside) {
  auto r = apply([](TarBuilder& b) {
    b.file("etc/.wh.canary", "").file("up/.wh.canary", "").file("etc2/.wh..wh..opq", "");
    b.file("up/.wh..wh..opq", "").file("sym-to-canary/.wh..wh..opq", "");
  });
  ASSERT_TRUE(r) << message(r);
  EXPECT_TRUE(fs::exists(root_ + "/canary"));
  r = apply([](TarBuilder& b) { b.file("top/.wh.canary", ""); });
  ASSERT_TRUE(r) << message(r);
  EXPECT_FALSE(fs::exists(root_ + "/canary")) << "top/ resolves to the root itself";
}

TEST_F(RootfsDiffSecurity, HardlinksNeverReachOutside) {
  auto abs = apply([](TarBuilder& b) { b.hardlink("stolen", "etc/canary"); });
  ASSERT_FALSE(abs);
  EXPECT_NE(message(abs).find("hardlink target"), std::string::npos) << message(abs);
  EXPECT_FALSE(apply([](TarBuilder& b) { b.hardlink("stolen", "up/canary"); }));
  EXPECT_FALSE(apply([](TarBuilder& b) { b.hardlink("stolen", "../canary"); }));
  auto via_link = apply([](TarBuilder& b) { b.hardlink("stolen", "sym-to-canary"); });
  ASSERT_TRUE(via_link) << message(via_link);
  EXPECT_TRUE(fs::is_symlink(root_ + "/stolen")) << "linked the symlink, not its target";
  auto inside = apply([](TarBuilder& b) { b.hardlink("stolen2", "top/canary"); });
  ASSERT_TRUE(inside) << message(inside);
  EXPECT_EQ(slurp(root_ + "/stolen2"), "inside\n");
}

TEST_F(RootfsDiffSecurity, EscapingPathsAreRefused) {
  for (const char* path : {"../escape", "/tmp/escape", "a/../../escape", "./../escape"}) {
    auto r = apply([&](TarBuilder& b) { b.file(path, "x"); });
    ASSERT_FALSE(r) << path;
    EXPECT_NE(message(r).find("refused"), std::string::npos) << message(r);
  }
}

TEST_F(RootfsDiffSecurity, SymlinkAsLastComponentIsReplacedNotFollowed) {
  auto r = apply([](TarBuilder& b) {
    b.file("sym-to-canary", "replaced\n").dir("etc").file("etc/passwd", "mine\n");
  });
  ASSERT_TRUE(r) << message(r);
  EXPECT_FALSE(fs::is_symlink(root_ + "/sym-to-canary"));
  EXPECT_EQ(slurp(root_ + "/sym-to-canary"), "replaced\n");
  EXPECT_FALSE(fs::is_symlink(root_ + "/etc"));
  EXPECT_EQ(slurp(root_ + "/etc/passwd"), "mine\n");
}

TEST(RootfsDiff, OpaqueMarkerKeepsTheDiffsOwnChildren) {
  TempDir t;
  make_dirs(t / "root/d/old");
  write_file(t / "root/d/old.txt", "old\n");
  {
    TarBuilder b(t / "diff.tar");
    b.dir("d").file("d/new.txt", "new\n").file("d/.wh..wh..opq", "");  // marker after a child
  }
  auto r = apply_from(t / "diff.tar", t / "root");
  ASSERT_TRUE(r) << r.error().message();
  Listing after = listing(t / "root");
  ASSERT_EQ(after.size(), 2u) << listing_text(after);
  EXPECT_TRUE(after.contains("d/new.txt"));
}

// ---- Damaged input ----

TEST(RootfsDiff, RejectsCorruptAndTruncatedTars) {
  TempDir t;
  make_dirs(t / "upper/d");
  write_file(t / "upper/d/big", std::string(200000, 'q'));
  write_file(t / "upper/last", "last\n");
  ASSERT_TRUE(capture_to(t / "upper", t / "good.tar"));
  std::string good = slurp(t / "good.tar");
  ASSERT_GT(good.size(), 200000u);

  auto try_apply = [&](std::string_view data) {
    std::string tar = t / "bad.tar";
    write_file(tar, data);
    fs::remove_all(t / "root");
    make_dirs(t / "root");
    return apply_from(tar, t / "root");
  };
  ASSERT_TRUE(try_apply(good));
  auto expect_error = [&](std::string_view data, std::string_view what, const char* label) {
    auto r = try_apply(data);
    ASSERT_FALSE(r) << label;
    EXPECT_TRUE(r.error().message().starts_with("apply diff: ")) << r.error().message();
    EXPECT_NE(r.error().message().find(what), std::string::npos)
        << label << ": " << r.error().message();
  };
  expect_error(std::string(4096, '\x5a'), "read tar", "garbage");
  expect_error("", "read tar", "empty");
  expect_error(good.substr(0, good.size() / 2), "data of d/big", "cut inside a file");
  expect_error(good.substr(0, good.size() - 1024), "end-of-archive", "cut at an entry boundary");
  expect_error(good.substr(0, good.size() - 512), "end-of-archive", "half an end marker");
  std::string flipped = good;
  flipped[20] = static_cast<char>(flipped[20] ^ 0x55);  // inside the first header's name
  expect_error(flipped, "read tar", "bad checksum");
}

}  // namespace
}  // namespace arch

namespace arch {
namespace {

Result<RootfsDiffStats> capture_zstd_to(const std::string& upper, const std::string& tar,
                                        int level = 3) {
  UniqueFd fd(::open(tar.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  return capture_rootfs_diff(upper, fd.get(), {.zstd_level = level, .zstd_threads = 2});
}

TEST(RootfsDiff, ZstdCaptureAppliesLikeThePlainTar) {
  TempDir t;
  std::string u = t / "upper";
  make_dirs(u + "/d/e");
  write_file(u + "/d/e/f.txt", std::string(3 << 20, 'x') + "end");
  write_sparse(u + "/d/sparse");
  write_file(u + "/one", "1");
  ASSERT_EQ(::symlink("e/f.txt", (u + "/d/to-f").c_str()), 0);
  stamp_tree(u, 1650000000);
  Listing before = listing(u);

  auto plain = capture_to(u, t / "plain.tar");
  ASSERT_TRUE(plain) << plain.error().message();
  auto packed = capture_zstd_to(u, t / "packed.tar");
  ASSERT_TRUE(packed) << packed.error().message();
  EXPECT_EQ(packed->bytes, plain->bytes) << "the stats count file data, not stream bytes";
  std::string z = slurp(t / "packed.tar");
  ASSERT_GE(z.size(), 4u);
  EXPECT_EQ(z.substr(0, 4), std::string("\x28\xb5\x2f\xfd", 4)) << "not a zstd frame";
  EXPECT_LT(z.size() * 20, slurp(t / "plain.tar").size()) << "3 MiB of 'x' barely shrank";

  make_dirs(t / "root");
  auto applied = apply_from(t / "packed.tar", t / "root");
  ASSERT_TRUE(applied) << applied.error().message();
  EXPECT_EQ(listing_text(listing(t / "root")), listing_text(before));
}

TEST(RootfsDiff, ZstdLevelOutOfRangeIsRefused) {
  TempDir t;
  make_dirs(t / "upper");
  auto r = capture_zstd_to(t / "upper", t / "x.tar", 42);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("zstd level 42"), std::string::npos) << r.error().message();
}

TEST(RootfsDiff, RejectsTruncatedZstdStreams) {
  TempDir t;
  make_dirs(t / "upper/d");
  // Data zstd cannot shrink much, so that cutting the stream cuts the tar too.
  std::string noise;
  uint32_t x = 12345;
  for (int i = 0; i < 300000; ++i) {
    x = x * 1103515245u + 12345u;
    noise += static_cast<char>(x >> 24);
  }
  write_file(t / "upper/d/big", noise);
  write_file(t / "upper/last", "last\n");
  ASSERT_TRUE(capture_zstd_to(t / "upper", t / "good.tar"));
  std::string good = slurp(t / "good.tar");
  auto try_apply = [&](std::string_view data) {
    write_file(t / "bad.tar", data);
    fs::remove_all(t / "root");
    make_dirs(t / "root");
    return apply_from(t / "bad.tar", t / "root");
  };
  ASSERT_TRUE(try_apply(good));
  for (std::size_t cut : {good.size() / 2, good.size() - 8, std::size_t{100}}) {
    auto r = try_apply(good.substr(0, cut));
    EXPECT_FALSE(r) << "a zstd stream cut at " << cut << " of " << good.size() << " applied";
  }
}

// ---- Limits: a diff stops at what its capture counted ----

Result<RootfsDiffStats> apply_limited(const std::string& tar, const std::string& rootfs,
                                      ExpansionLimits limits) {
  UniqueFd fd(::open(tar.c_str(), O_RDONLY | O_CLOEXEC));
  return apply_rootfs_diff(fd.get(), rootfs, limits);
}

// Bytes the files under `root` occupy on disk (allocated blocks).
uint64_t disk_bytes(const std::string& root) {
  uint64_t total = 0;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    struct stat st {};
    if (::lstat(e.path().c_str(), &st) == 0 && S_ISREG(st.st_mode))
      total += static_cast<uint64_t>(st.st_blocks) * 512;
  }
  return total;
}

TEST(RootfsDiffLimits, CaptureCountsWhatApplyNeeds) {
  TempDir t;
  std::string u = t / "upper";
  make_dirs(u + "/d/e");
  write_file(u + "/d/e/f.txt", std::string(100000, 'x'));
  write_sparse(u + "/d/sparse");
  write_file(u + "/one", "1");
  ASSERT_EQ(::symlink("e/f.txt", (u + "/d/to-f").c_str()), 0);
  auto captured = capture_zstd_to(u, t / "diff.tar");
  ASSERT_TRUE(captured) << captured.error().message();
  EXPECT_EQ(captured->bytes, 100000u + 8192u + 1u) << "data bytes, holes excluded";
  EXPECT_EQ(captured->entries, 6u) << "d, d/e, d/e/f.txt, d/sparse, d/to-f, one";
  ExpansionLimits exact{captured->bytes, captured->entries};

  make_dirs(t / "exact");
  auto applied = apply_limited(t / "diff.tar", t / "exact", exact);
  ASSERT_TRUE(applied) << applied.error().message();
  EXPECT_EQ(applied->entries, captured->entries);
  EXPECT_EQ(applied->bytes, captured->bytes);

  for (ExpansionLimits tight : {ExpansionLimits{exact.bytes - 1, exact.entries},
                                ExpansionLimits{exact.bytes, exact.entries - 1}}) {
    fs::remove_all(t / "tight");
    make_dirs(t / "tight");
    auto r = apply_limited(t / "diff.tar", t / "tight", tight);
    ASSERT_FALSE(r) << "applied beyond " << tight.bytes << " bytes / " << tight.entries;
    EXPECT_EQ(r.error().code(), EFBIG) << r.error().message();
    EXPECT_NE(r.error().message().find("expands past its limit"), std::string::npos)
        << r.error().message();
  }
}

// A zstd diff of 64 MiB of one byte is a few KiB; applied with a 1 MiB limit it stops
// there, having allocated no more than that.
TEST(RootfsDiffLimits, ZstdBombStopsAtTheLimitWithoutExpanding) {
  TempDir t;
  make_dirs(t / "upper");
  write_file(t / "upper/bomb", std::string(64 << 20, 'A'));
  ASSERT_TRUE(capture_zstd_to(t / "upper", t / "bomb.tar", 19));
  EXPECT_LT(fs::file_size(t / "bomb.tar"), 64u << 10);
  make_dirs(t / "root");
  auto r = apply_limited(t / "bomb.tar", t / "root", {1 << 20, 100});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), EFBIG) << r.error().message();
  EXPECT_NE(r.error().message().find("bomb"), std::string::npos) << r.error().message();
  EXPECT_LE(disk_bytes(t / "root"), (1u << 20) + 4096u);
}

// Entries without data still cost: a stream of many empty files stops at the count.
TEST(RootfsDiffLimits, ManyEntriesStopAtTheCount) {
  TempDir t;
  {
    TarBuilder b(t / "many.tar");
    for (int i = 0; i < 500; ++i) b.file("f" + std::to_string(i), "");
  }
  make_dirs(t / "root");
  auto r = apply_limited(t / "many.tar", t / "root", {kUnlimited, 100});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), EFBIG);
  EXPECT_EQ(std::distance(fs::directory_iterator(t / "root"), fs::directory_iterator{}), 100);
}

// A frame asking for a 128 MiB window is refused before the decompressor allocates it.
TEST(RootfsDiffLimits, ZstdWindowAboveTheCapIsRefused) {
  TempDir t;
  std::string frame("\x28\xb5\x2f\xfd\x00", 5);
  frame.push_back(static_cast<char>(17 << 3));  // window log 27
  frame += std::string("\x03\x00\x00", 3) + std::string(4096, '\0');
  write_file(t / "wide.tar", frame);
  make_dirs(t / "root");
  auto r = apply_from(t / "wide.tar", t / "root");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("window"), std::string::npos) << r.error().message();
}

}  // namespace
}  // namespace arch
