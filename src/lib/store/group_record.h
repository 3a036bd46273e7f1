// GroupRecord: the sealed record that makes a group checkpoint's member generations one
// generation (container/group_checkpoint.h), and the reader's rule for using them.
//
// Store layout: every member's generation is an ordinary ckpt-* directory of its own key,
// whose sealed manifest names the group and the group generation (extra.group). The group
// record is a generation of the key `arch-group.<name>` of the same owner in the same store:
// one file, group.json, listing each member's key, container and generation directory and
// the MAC of its sealed manifest. It is committed last, so a group generation is either
// complete (record committed) or absent to a reader: member generations that no committed
// record names are never restored (and are removed by the next group checkpoint).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "store/checkpoint_store.h"

namespace arch {

/// The file of a group record's generation.
inline constexpr const char* kGroupRecordFile = "group.json";
/// The store key prefix of group records (the rest is the group's name).
inline constexpr std::string_view kGroupKeyPrefix = "arch-group.";

/// Checks an ARCH_GROUP value: a valid name (base/names.h) of at most 100 characters.
Result<void> validate_group_name(std::string_view name);
/// The store key that holds the records of group `name`.
std::string group_store_key(std::string_view name);

/// One member of a group generation.
struct GroupMember {
  std::string key;           ///< The member's store key.
  std::string container_id;  ///< The container checkpointed.
  std::string checkpoint;    ///< Its generation's directory name (ckpt-...).
  std::string seal_mac;      ///< The MAC of that generation's sealed manifest.
  /// The node it was checkpointed on, in a group that spans nodes (peer/group_peers.h);
  /// empty in a one-node group (every member on the node that restores it).
  std::string node{};
  bool operator==(const GroupMember&) const = default;
};

/// A group generation: the group, its random id (also in each member's manifest) and its
/// members, sorted by key.
struct GroupRecord {
  std::string owner, name, generation;
  std::vector<GroupMember> members;
  std::string path;  ///< Where it was read from (not serialised).
  [[nodiscard]] const GroupMember* member(std::string_view key) const;
};

/// The record with only the members a restore of `key` on `node` waits for: `key` itself and
/// those checkpointed on `node` or with no node (a one-node group); the members of other
/// nodes come back there. When no member was checkpointed on `node` (the group rescheduled
/// onto a new node), all of them.
GroupRecord members_on_node(const GroupRecord& record, std::string_view node, std::string_view key);

/// group.json's text, and back (refusing malformed or duplicate members).
std::string serialize_group_record(const GroupRecord& r);
Result<GroupRecord> parse_group_record(std::string_view text);

/// Commits `record` as the newest group generation of record.owner/record.name in `store`
/// (staged, sealed, renamed: store/checkpoint_store.h). Returns the committed path.
Result<std::string> commit_group_record(const CheckpointStore& store, const GroupRecord& record);

/// The committed group generations of owner/name whose seal verifies and whose group.json
/// names this owner and group, newest first. Those that do not are left out, each with its
/// reason in `*refused` (when given).
Result<std::vector<GroupRecord>> group_records(const CheckpointStore& store, std::string_view owner,
                                               std::string_view name,
                                               std::vector<std::string>* refused = nullptr);

/// Whether every member of `record` is usable: its generation exists, its seal verifies with
/// the node keys and names the member's owner and key, its MAC is the one the record holds,
/// and it names this group generation. `check_files`: every member's files are hashed too
/// (so that every member restoring decides alike). The first reason it is not is the error.
Result<void> check_group_generation(const CheckpointStore& store, const GroupRecord& record,
                                    bool check_files);

}  // namespace arch
