// GroupRecord: group.json (format 1), committed as a sealed generation of the group's key,
// and the reader's check that every member generation it names is there and sealed.
#include "store/group_record.h"

#include <fcntl.h>
#include <fmt/core.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <set>

#include "base/file_util.h"
#include "base/names.h"
#include "config/node_config.h"
#include "store/manifest.h"

namespace arch {
namespace {

constexpr int kGroupFormat = 1;
constexpr std::size_t kMaxGroupRecord = 1 << 20;
constexpr std::size_t kMaxGroupNameLength = 100;  // arch-group.<name> stays a valid key

}  // namespace

Result<void> validate_group_name(std::string_view name) {
  if (auto ok = validate_name("group name", name); !ok) return ok;
  if (name.size() > kMaxGroupNameLength) {
    return fail(fmt::format("invalid group name: {} characters, at most {} allowed", name.size(),
                            kMaxGroupNameLength));
  }
  return {};
}

std::string group_store_key(std::string_view name) {
  return std::string(kGroupKeyPrefix) + std::string(name);
}

const GroupMember* GroupRecord::member(std::string_view key) const {
  for (const auto& m : members) {
    if (m.key == key) return &m;
  }
  return nullptr;
}

GroupRecord members_on_node(const GroupRecord& record, std::string_view node,
                            std::string_view key) {
  auto here = [&](const GroupMember& m) { return m.node.empty() || m.node == node; };
  if (std::none_of(record.members.begin(), record.members.end(), here)) return record;
  GroupRecord out = record;
  std::erase_if(out.members, [&](const GroupMember& m) { return !here(m) && m.key != key; });
  return out;
}

std::string serialize_group_record(const GroupRecord& r) {
  nlohmann::json members = nlohmann::json::array();
  for (const auto& m : r.members) {
    nlohmann::json j = {{"key", m.key},
                        {"container_id", m.container_id},
                        {"checkpoint", m.checkpoint},
                        {"seal_mac", m.seal_mac}};
    if (!m.node.empty()) j["node"] = m.node;
    members.push_back(std::move(j));
  }
  nlohmann::json j = {{"format", kGroupFormat},
                      {"owner", r.owner},
                      {"name", r.name},
                      {"generation", r.generation},
                      {"members", members}};
  return j.dump(2) + "\n";
}

Result<GroupRecord> parse_group_record(std::string_view text) {
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return fail("group record: not a JSON object");
  try {
    if (j.at("format").get<int>() != kGroupFormat) {
      return fail(fmt::format("group record: format {} not known", j.at("format").dump()));
    }
    GroupRecord r;
    r.owner = j.at("owner").get<std::string>();
    r.name = j.at("name").get<std::string>();
    r.generation = j.at("generation").get<std::string>();
    if (auto ok = validate_owner(r.owner); !ok) return std::unexpected(ok.error());
    if (auto ok = validate_group_name(r.name); !ok) return std::unexpected(ok.error());
    if (auto ok = validate_name("group generation", r.generation); !ok)
      return std::unexpected(ok.error());
    std::set<std::string> seen;
    for (const auto& m : j.at("members")) {
      GroupMember g{m.at("key").get<std::string>(), m.at("container_id").get<std::string>(),
                    m.at("checkpoint").get<std::string>(), m.at("seal_mac").get<std::string>()};
      if (m.contains("node")) {
        g.node = m.at("node").get<std::string>();
        if (auto ok = validate_node_name(g.node); !ok) return std::unexpected(ok.error());
      }
      if (auto ok = validate_name("key", g.key); !ok) return std::unexpected(ok.error());
      if (auto ok = validate_name("checkpoint", g.checkpoint); !ok)
        return std::unexpected(ok.error());
      if (!seen.insert(g.key).second) return fail("group record: member " + g.key + " twice");
      r.members.push_back(std::move(g));
    }
    if (r.members.empty()) return fail("group record: no members");
    return r;
  } catch (const nlohmann::json::exception& e) {
    return fail(std::string("group record: ") + e.what());
  }
}

Result<std::string> commit_group_record(const CheckpointStore& store, const GroupRecord& record) {
  std::string key = group_store_key(record.name);
  auto lock = store.lock(record.owner, key, std::chrono::seconds(60));
  if (!lock) return std::unexpected(lock.error().wrap("group record"));
  (void)store.cleanup_stale(*lock);
  auto staging = store.begin(*lock);
  if (!staging) return std::unexpected(staging.error().wrap("group record"));
  auto fd = open_file(staging->path() + "/" + kGroupRecordFile, O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (!fd) return std::unexpected(fd.error().wrap("group record"));
  if (auto ok = write_all(fd->get(), serialize_group_record(record)); !ok)
    return std::unexpected(ok.error().wrap("group record"));
  fd->reset();
  Manifest m;
  m.ns = record.owner;
  m.key = key;
  m.extra = {{"group_record", {{"name", record.name}, {"generation", record.generation}}}};
  return store.commit(std::move(*staging), std::move(m), *lock);
}

Result<std::vector<GroupRecord>> group_records(const CheckpointStore& store, std::string_view owner,
                                               std::string_view name,
                                               std::vector<std::string>* refused) {
  if (auto ok = validate_group_name(name); !ok) return std::unexpected(ok.error());
  std::string key = group_store_key(name);
  auto names = store.committed_names(owner, key);
  if (!names) return std::unexpected(names.error());
  std::vector<GroupRecord> out;
  auto refuse = [&](const std::string& gen, const std::string& why) {
    if (refused != nullptr) refused->push_back(gen + ": " + why);
  };
  for (const auto& gen : *names) {
    auto m = store.read_verified(owner, key, gen, /*check_files=*/true);
    if (!m) {
      if (m.error().code() == ENOKEY) return std::unexpected(m.error());
      refuse(gen, m.error().message());
      continue;
    }
    auto file = std::find_if(m->files.begin(), m->files.end(),
                             [](const ManifestFile& f) { return f.path == kGroupRecordFile; });
    if (file == m->files.end() || m->files.size() != 1) {
      refuse(gen, "not a group record (its manifest lists other files)");
      continue;
    }
    // Read once, and check that what was read is what the seal covers.
    std::string path =
        store.base() + "/" + std::string(owner) + "/" + key + "/" + gen + "/" + kGroupRecordFile;
    auto fd = open_file(path, O_RDONLY | O_NOFOLLOW);
    if (!fd) {
      refuse(gen, fd.error().message());
      continue;
    }
    auto text = read_all(fd->get(), kMaxGroupRecord);
    if (!text) {
      refuse(gen, text.error().message());
      continue;
    }
    ::lseek(fd->get(), 0, SEEK_SET);
    auto digest = digest_fd(fd->get());
    if (!digest || digest->sha256 != file->sha256 || digest->size != text->size()) {
      refuse(gen, "group.json does not match its sealed manifest");
      continue;
    }
    auto record = parse_group_record(*text);
    if (!record) {
      refuse(gen, record.error().message());
      continue;
    }
    if (record->owner != owner || record->name != name) {
      refuse(gen, fmt::format("record is for group {}/{}", record->owner, record->name));
      continue;
    }
    record->path = store.base() + "/" + std::string(owner) + "/" + key + "/" + gen;
    out.push_back(std::move(*record));
  }
  return out;
}

Result<void> check_group_generation(const CheckpointStore& store, const GroupRecord& record,
                                    bool check_files) {
  for (const auto& mem : record.members) {
    auto m = store.read_verified(record.owner, mem.key, mem.checkpoint, check_files);
    auto what = fmt::format("member {} ({})", mem.key, mem.checkpoint);
    if (!m) return std::unexpected(m.error().wrap(what));
    if (m->seal.mac != mem.seal_mac) return fail(what + ": its seal is not the one recorded");
    const auto& g =
        m->extra.is_object() && m->extra.contains("group") ? m->extra["group"] : nlohmann::json();
    if (!g.is_object() || g.value("name", "") != record.name ||
        g.value("generation", "") != record.generation) {
      return fail(what + ": it does not name this group generation");
    }
  }
  return {};
}

}  // namespace arch
