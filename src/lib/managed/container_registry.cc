// ContainerRegistry: small JSON records on tmpfs, written atomically.
#include "managed/container_registry.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "base/file_util.h"

namespace arch {
namespace {

std::string fnv64_hex(std::string_view s) {
  uint64_t h = 1469598103934665603ULL;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ULL;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace

std::string runc_root_hash(std::string_view runc_root) {
  return fnv64_hex(runc_root);
}

namespace {

std::string last_component(std::string_view path) {
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  auto slash = path.find_last_of('/');
  return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

std::string parent_name(std::string_view path) {
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  auto slash = path.find_last_of('/');
  if (slash == std::string_view::npos || slash == 0) return {};
  return last_component(path.substr(0, slash));
}

Result<void> mkdirs(const std::string& path, mode_t mode) {
  std::string partial;
  for (std::size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos != path.size() && path[pos] != '/') continue;
    partial = path.substr(0, pos);
    if (::mkdir(partial.c_str(), mode) != 0 && errno != EEXIST)
      return fail_errno("mkdir " + partial);
  }
  return {};
}

}  // namespace

std::string derive_namespace(std::string_view bundle, std::string_view runc_root) {
  constexpr std::string_view kTaskDir = "/io.containerd.runtime.v2.task/";
  if (auto pos = bundle.find(kTaskDir); pos != std::string_view::npos) {
    auto rest = bundle.substr(pos + kTaskDir.size());
    auto slash = rest.find('/');
    if (slash != std::string_view::npos && slash > 0) return std::string(rest.substr(0, slash));
  }
  std::string parent = parent_name(runc_root);
  if (parent == "runc" || parent == "runtime-runc") return last_component(runc_root);
  return "default";
}

std::string ContainerRegistry::path_for(const std::string& runc_root, const std::string& id,
                                        const char* suffix) const {
  return dir_ + "/" + fnv64_hex(runc_root) + "/" + id + suffix;
}

Result<void> ContainerRegistry::record(const ContainerRecord& rec) const {
  std::string path = path_for(rec.runc_root, rec.id, ".json");
  if (auto ok = mkdirs(dirname_of(path), 0700); !ok) return ok;
  nlohmann::json doc = {{"id", rec.id},
                        {"namespace", rec.ns},
                        {"key", rec.key},
                        {"key_source", rec.key_source},
                        {"workdir", rec.workdir},
                        {"runc_root", rec.runc_root},
                        {"bundle", rec.bundle},
                        {"store", rec.store},
                        {"store_root", rec.store_root},
                        {"owner", rec.owner},
                        {"log", rec.log},
                        {"created", rec.created},
                        {"checkpoint_on_stop", rec.checkpoint_on_stop}};
  return write_file_atomic(path, doc.dump() + "\n", 0600);
}

namespace {

Result<ContainerRecord> read_record(const std::string& path) {
  auto text = read_file(path, 1 << 20);
  if (!text) return std::unexpected(text.error());
  auto doc = nlohmann::json::parse(*text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return fail(path + ": not a registry record");
  ContainerRecord rec;
  rec.id = doc.value("id", "");
  rec.ns = doc.value("namespace", "");
  rec.key = doc.value("key", "");
  rec.key_source = doc.value("key_source", "");
  rec.workdir = doc.value("workdir", "");
  rec.runc_root = doc.value("runc_root", "");
  rec.bundle = doc.value("bundle", "");
  rec.store = doc.value("store", "");
  // Records written before owners and roots: the namespace owned, the store its own root.
  rec.store_root = doc.value("store_root", rec.store);
  rec.owner = doc.value("owner", rec.ns);
  rec.log = doc.value("log", "");
  rec.created = doc.value("created", 0L);
  rec.checkpoint_on_stop = doc.value("checkpoint_on_stop", false);
  return rec;
}

}  // namespace

Result<ContainerRecord> ContainerRegistry::find(const std::string& runc_root,
                                                const std::string& id) const {
  return read_record(path_for(runc_root, id, ".json"));
}

std::vector<ContainerRecord> ContainerRegistry::all() const {
  std::vector<ContainerRecord> out;
  DIR* top = ::opendir(dir_.c_str());
  if (top == nullptr) return out;
  while (dirent* d = ::readdir(top)) {
    if (d->d_name[0] == '.') continue;
    std::string sub = dir_ + "/" + d->d_name;
    DIR* inner = ::opendir(sub.c_str());
    if (inner == nullptr) continue;
    while (dirent* e = ::readdir(inner)) {
      std::string name = e->d_name;
      if (name.size() <= 5 || !name.ends_with(".json") || name.ends_with(".restore.json")) continue;
      if (auto rec = read_record(sub + "/" + name); rec) out.push_back(std::move(*rec));
    }
    ::closedir(inner);
  }
  ::closedir(top);
  return out;
}

void ContainerRegistry::forget(const std::string& runc_root, const std::string& id) const {
  ::unlink(path_for(runc_root, id, ".json").c_str());
  ::unlink(path_for(runc_root, id, ".restored").c_str());
  ::unlink(path_for(runc_root, id, ".restore.json").c_str());
  ::rmdir(dirname_of(path_for(runc_root, id, ".json")).c_str());  // Only succeeds when empty.
}

Result<void> ContainerRegistry::record_restore(const std::string& runc_root, const std::string& id,
                                               const RestoreInfo& info) const {
  std::string path = path_for(runc_root, id, ".restore.json");
  if (auto ok = mkdirs(dirname_of(path), 0700); !ok) return ok;
  nlohmann::json doc = {{"checkpoint", info.checkpoint}, {"ms", info.ms}, {"bytes", info.bytes}};
  return write_file_atomic(path, doc.dump() + "\n", 0600);
}

std::optional<RestoreInfo> ContainerRegistry::find_restore(const std::string& runc_root,
                                                           const std::string& id) const {
  auto text = read_file(path_for(runc_root, id, ".restore.json"), 1 << 16);
  if (!text) return std::nullopt;
  auto doc = nlohmann::json::parse(*text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return std::nullopt;
  return RestoreInfo{doc.value("checkpoint", ""), doc.value("ms", 0.0),
                     doc.value("bytes", uint64_t{0})};
}

Result<void> ContainerRegistry::mark_restored(const std::string& runc_root,
                                              const std::string& id) const {
  std::string path = path_for(runc_root, id, ".restored");
  if (auto ok = mkdirs(dirname_of(path), 0700); !ok) return ok;
  return write_file_atomic(path, "", 0600);
}

bool ContainerRegistry::take_restored(const std::string& runc_root, const std::string& id) const {
  return ::unlink(path_for(runc_root, id, ".restored").c_str()) == 0;
}

}  // namespace arch
