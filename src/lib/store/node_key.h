// NodeKey: the secret keys that seal checkpoints, kept one per file in a root-only directory.
//
// Layout of the key directory ([keys] dir, default /etc/arch/keys; 0700, owned by root):
//   <key id>.key   32 random bytes as 64 lower-case hex digits and a newline (0600, root)
//   active         the id of the key that seals new checkpoints (written by init/rotate)
// A key's id is derived from the key (the first 16 hex digits of SHA-256 of
// "arch-node-key-id:" + its hex), so the same key has the same id on every node and a file
// whose name does not match its contents is refused. Every key in the directory verifies;
// only the active one seals. Nodes that share a store share the key: `archctl key export`
// prints one line "arch-node-key 1 <id> <hex>" that `archctl key import` installs.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"

namespace arch {

struct NodeConfig;

/// Bytes of secret in a node key.
inline constexpr std::size_t kNodeKeyBytes = 32;

/// One node key.
struct NodeKey {
  std::string id;      ///< 16 lower-case hex digits, derived from the secret.
  std::string secret;  ///< kNodeKeyBytes raw bytes.
};

/// The id of a secret (see the file comment).
std::string node_key_id(std::string_view secret);

/// The keys a node holds: all of them verify, the active one seals.
class Keyring {
 public:
  /// Adds a key (replacing one with the same id); `make_active` makes it the sealing key.
  void add(NodeKey key, bool make_active);
  [[nodiscard]] bool empty() const { return keys_.empty(); }
  /// The key that seals, or nullptr when there is none.
  [[nodiscard]] const NodeKey* active() const;
  /// The key with this id, or nullptr.
  [[nodiscard]] const NodeKey* find(std::string_view id) const;
  [[nodiscard]] const std::vector<NodeKey>& keys() const { return keys_; }

 private:
  std::vector<NodeKey> keys_;
  std::string active_;
};

/// Loads every key of `dir`. The directory must be owned by this user (root) and closed to
/// group and others, each key file too (and a regular file, not a symlink). `active`
/// names the sealing key; empty: the directory's `active` file, else its only key.
/// Error code ENOKEY when the directory is missing or holds no key.
Result<Keyring> load_keyring(const std::string& dir, std::string_view active = {});
/// load_keyring() of the node config's [keys].
Result<Keyring> load_node_keyring(const NodeConfig& config);
/// load_node_keyring(), shared; nullptr when it fails (a CheckpointStore without keys
/// lists but neither commits nor restores).
std::shared_ptr<const Keyring> shared_node_keyring(const NodeConfig& config);

/// A new random key (getrandom).
Result<NodeKey> generate_node_key();

/// Creates the directory (0700) when missing and writes `key` as `<id>.key` (0600) unless
/// that file already holds it; refuses a different key under the same id.
Result<void> install_node_key(const std::string& dir, const NodeKey& key);
/// Writes the directory's `active` file.
Result<void> set_active_node_key(const std::string& dir, std::string_view id);
/// `archctl key init`: the active key when the directory already has one, else a new
/// key, installed and made active. `created` says which.
Result<NodeKey> init_node_keys(const std::string& dir, bool* created = nullptr);
/// `archctl key rotate`: a new key, installed and made active; the old ones stay.
Result<NodeKey> rotate_node_key(const std::string& dir);
/// `archctl key rm`: removes a key that is not the active one.
Result<void> remove_node_key(const std::string& dir, std::string_view id);

/// The one-line export form of a key: "arch-node-key 1 <id> <hex>\n".
std::string export_node_key(const NodeKey& key);
/// Parses the export form, checking that the id matches the secret.
Result<NodeKey> parse_exported_node_key(std::string_view text);

}  // namespace arch
