// NodeKey: key files (create, load with ownership and mode checks, rotate, remove) and the
// export line. See node_key.h for the directory layout.
#include "store/node_key.h"

#include <fcntl.h>
#include <fmt/core.h>
#include <openssl/evp.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "base/file_util.h"
#include "base/hex.h"
#include "config/node_config.h"

namespace arch {
namespace {

constexpr std::string_view kKeySuffix = ".key";
constexpr const char* kActiveName = "active";
constexpr std::string_view kExportTag = "arch-node-key";

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// Lower-case hex of exactly 2 * kNodeKeyBytes digits to bytes.
Result<std::string> secret_from_hex(std::string_view hex) {
  if (hex.size() != 2 * kNodeKeyBytes) {
    return fail(fmt::format("a key is {} hex digits, not {}", 2 * kNodeKeyBytes, hex.size()));
  }
  std::string out;
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    int hi = hex_value(hex[i]), lo = hex_value(hex[i + 1]);
    if (hi < 0 || lo < 0) return fail("a key is lower-case hex digits");
    out += static_cast<char>(hi << 4 | lo);
  }
  return out;
}

bool valid_id(std::string_view id) {
  return id.size() == 16 &&
         std::all_of(id.begin(), id.end(), [](char c) { return hex_value(c) >= 0; });
}

std::string trim(std::string_view s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) {
    s.remove_suffix(1);
  }
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  return std::string(s);
}

// Owned by us and closed to group and others: only root (the owner) can read the keys.
Result<void> check_private(int fd, const std::string& path, bool want_dir) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return fail_errno("stat " + path);
  if (want_dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)) {
    return fail(path + (want_dir ? ": not a directory" : ": not a regular file"));
  }
  if (st.st_uid != ::geteuid()) {
    return fail(fmt::format("{}: owned by uid {}, not {}: not used", path, st.st_uid, ::geteuid()));
  }
  if ((st.st_mode & 077) != 0) {
    return fail(fmt::format("{}: mode {:o} lets group or others in (want 0{}): not used", path,
                            st.st_mode & 07777, want_dir ? "700" : "600"));
  }
  return {};
}

Result<UniqueFd> open_key_dir(const std::string& dir) {
  auto fd = open_file(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!fd) {
    if (fd.error().code() == ENOENT) {
      return std::unexpected(Error(
          "no node key: " + dir + " does not exist (create one with `archctl key init`)", ENOKEY));
    }
    return std::unexpected(fd.error());
  }
  if (auto ok = check_private(fd->get(), dir, true); !ok) return std::unexpected(ok.error());
  return fd;
}

Result<std::string> read_private_at(int dirfd, const std::string& dir, const std::string& name) {
  int fd = retry_eintr([&] {
    return ::openat(dirfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  });
  if (fd < 0) return fail_errno("open " + dir + "/" + name);
  UniqueFd owned(fd);
  if (auto ok = check_private(fd, dir + "/" + name, false); !ok) {
    return std::unexpected(ok.error());
  }
  auto text = read_all(fd, 4096);
  if (!text) return std::unexpected(text.error().wrap(dir + "/" + name));
  return text;
}

Result<NodeKey> read_key_at(int dirfd, const std::string& dir, const std::string& name) {
  auto text = read_private_at(dirfd, dir, name);
  if (!text) return std::unexpected(text.error());
  auto secret = secret_from_hex(trim(*text));
  if (!secret) return std::unexpected(secret.error().wrap(dir + "/" + name));
  NodeKey key{node_key_id(*secret), std::move(*secret)};
  if (name != key.id + std::string(kKeySuffix)) {
    return fail(fmt::format("{}/{}: holds key {}, not the one its name says", dir, name, key.id));
  }
  return key;
}

Result<void> ensure_dir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return fail_errno("mkdir " + dir);
  return {};
}

}  // namespace

std::string node_key_id(std::string_view secret) {
  std::string input = "arch-node-key-id:" + to_hex(secret);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(input.data(), input.size(), md, &len, EVP_sha256(), nullptr);
  return to_hex(std::string_view(reinterpret_cast<const char*>(md), len)).substr(0, 16);
}

void Keyring::add(NodeKey key, bool make_active) {
  std::erase_if(keys_, [&](const NodeKey& k) { return k.id == key.id; });
  if (make_active) active_ = key.id;
  keys_.push_back(std::move(key));
}

const NodeKey* Keyring::active() const {
  return active_.empty() ? nullptr : find(active_);
}

const NodeKey* Keyring::find(std::string_view id) const {
  for (const auto& k : keys_) {
    if (k.id == id) return &k;
  }
  return nullptr;
}

Result<Keyring> load_keyring(const std::string& dir, std::string_view active) {
  auto dirfd = open_key_dir(dir);
  if (!dirfd) return std::unexpected(dirfd.error());
  auto names = list_directory(dirfd->get());
  if (!names) return std::unexpected(names.error().wrap(dir));
  Keyring ring;
  for (const auto& name : *names) {
    if (!name.ends_with(kKeySuffix)) continue;
    auto key = read_key_at(dirfd->get(), dir, name);
    if (!key) return std::unexpected(key.error());
    ring.add(std::move(*key), false);
  }
  if (ring.empty()) {
    return std::unexpected(
        Error("no node key in " + dir + " (create one with `archctl key init`)", ENOKEY));
  }
  std::string want(active);
  if (want.empty()) {
    auto text = read_private_at(dirfd->get(), dir, kActiveName);
    if (text) {
      want = trim(*text);
    } else if (text.error().code() != ENOENT) {
      return std::unexpected(text.error());
    }
  }
  if (want.empty() && ring.keys().size() == 1) want = ring.keys().front().id;
  if (want.empty()) {
    return fail(dir + " holds several keys and none is active (`archctl key rotate`, or " +
                "[keys] active)");
  }
  if (ring.find(want) == nullptr) {
    return fail(fmt::format("the active key {} is not in {}", want, dir));
  }
  ring.add(*ring.find(want), true);
  return ring;
}

Result<Keyring> load_node_keyring(const NodeConfig& config) {
  return load_keyring(config.keys.dir, config.keys.active);
}

std::shared_ptr<const Keyring> shared_node_keyring(const NodeConfig& config) {
  auto ring = load_node_keyring(config);
  if (!ring) return nullptr;
  return std::make_shared<const Keyring>(std::move(*ring));
}

Result<NodeKey> generate_node_key() {
  std::string secret(kNodeKeyBytes, '\0');
  std::size_t got = 0;
  while (got < secret.size()) {
    ssize_t n = ::getrandom(secret.data() + got, secret.size() - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail_errno("getrandom");
    got += static_cast<std::size_t>(n);
  }
  return NodeKey{node_key_id(secret), std::move(secret)};
}

Result<void> install_node_key(const std::string& dir, const NodeKey& key) {
  if (!valid_id(key.id) || key.id != node_key_id(key.secret)) return fail("not a valid node key");
  if (auto ok = ensure_dir(dir); !ok) return ok;
  auto dirfd = open_key_dir(dir);
  if (!dirfd) return std::unexpected(dirfd.error());
  std::string name = key.id + std::string(kKeySuffix);
  if (auto existing = read_key_at(dirfd->get(), dir, name)) {
    if (existing->secret == key.secret) return {};
    return fail(dir + "/" + name + " holds another key");
  }
  return write_file_atomic(dir + "/" + name, to_hex(key.secret) + "\n", 0600);
}

Result<void> set_active_node_key(const std::string& dir, std::string_view id) {
  if (!valid_id(id)) return fail(fmt::format("\"{}\" is not a key id", id));
  return write_file_atomic(dir + "/" + kActiveName, std::string(id) + "\n", 0600);
}

Result<NodeKey> init_node_keys(const std::string& dir, bool* created) {
  if (created != nullptr) *created = false;
  auto ring = load_keyring(dir);
  if (ring) return *ring->active();
  if (ring.error().code() != ENOKEY) return std::unexpected(ring.error());
  auto key = rotate_node_key(dir);
  if (key && created != nullptr) *created = true;
  return key;
}

Result<NodeKey> rotate_node_key(const std::string& dir) {
  auto key = generate_node_key();
  if (!key) return key;
  if (auto ok = install_node_key(dir, *key); !ok) return std::unexpected(ok.error());
  if (auto ok = set_active_node_key(dir, key->id); !ok) return std::unexpected(ok.error());
  return key;
}

Result<void> remove_node_key(const std::string& dir, std::string_view id) {
  auto ring = load_keyring(dir);
  if (!ring) return std::unexpected(ring.error());
  if (ring->find(id) == nullptr) return fail(fmt::format("no key {} in {}", id, dir));
  if (ring->active()->id == id) {
    return fail(fmt::format("{} is the active key: rotate to a new one first", id));
  }
  std::string path = dir + "/" + std::string(id) + std::string(kKeySuffix);
  if (::unlink(path.c_str()) != 0) return fail_errno("unlink " + path);
  return {};
}

std::string export_node_key(const NodeKey& key) {
  return fmt::format("{} 1 {} {}\n", kExportTag, key.id, to_hex(key.secret));
}

Result<NodeKey> parse_exported_node_key(std::string_view text) {
  std::string line = trim(text);
  auto parts = std::vector<std::string>();
  std::size_t start = 0;
  while (start <= line.size()) {
    auto sp = line.find(' ', start);
    if (sp == std::string::npos) sp = line.size();
    if (sp > start) parts.push_back(line.substr(start, sp - start));
    start = sp + 1;
  }
  if (parts.size() != 4 || parts[0] != kExportTag || parts[1] != "1") {
    return fail("not an exported node key (\"arch-node-key 1 <id> <hex>\")");
  }
  auto secret = secret_from_hex(parts[3]);
  if (!secret) return std::unexpected(secret.error());
  NodeKey key{node_key_id(*secret), std::move(*secret)};
  if (key.id != parts[2]) {
    return fail(fmt::format("the key's id is {}, the line says {}: damaged", key.id, parts[2]));
  }
  return key;
}

}  // namespace arch
