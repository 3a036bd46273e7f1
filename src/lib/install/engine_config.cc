// EngineConfig: daemon.json edits with nlohmann::json, config.toml edits with toml++.
#include "install/engine_config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <toml++/toml.h>

#include <ctime>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/clock.h"
#include "base/file_util.h"

namespace arch {
namespace {

using nlohmann::json;

Result<json> parse_daemon_json(std::string_view text) {
  bool blank = text.find_first_not_of(" \t\r\n") == std::string_view::npos;
  if (blank) return json::object();
  json doc = json::parse(text, nullptr, false);
  if (doc.is_discarded()) return fail("daemon.json is not valid JSON; not changing it");
  if (!doc.is_object()) return fail("daemon.json is not a JSON object; not changing it");
  return doc;
}

}  // namespace

Result<std::string> docker_config_install(std::string_view text, const EngineInstallOptions& opts) {
  auto doc = parse_daemon_json(text);
  if (!doc) return std::unexpected(doc.error());
  json& runtimes = (*doc)["runtimes"];
  if (runtimes.is_null()) runtimes = json::object();
  if (!runtimes.is_object()) return fail("daemon.json: \"runtimes\" is not an object");
  runtimes[kArchRuntimeName] = json{{"path", opts.arch_runc_path}};
  if (opts.make_default) (*doc)["default-runtime"] = kArchRuntimeName;
  return doc->dump(2) + "\n";
}

Result<std::string> docker_config_uninstall(std::string_view text) {
  auto doc = parse_daemon_json(text);
  if (!doc) return std::unexpected(doc.error());
  if (auto rt = doc->find("runtimes"); rt != doc->end() && rt->is_object()) {
    rt->erase(kArchRuntimeName);
    if (rt->empty()) doc->erase("runtimes");
  }
  if (auto def = doc->find("default-runtime"); def != doc->end() && *def == kArchRuntimeName) {
    doc->erase("default-runtime");
  }
  return doc->dump(2) + "\n";
}

namespace {

Result<toml::table> parse_toml(std::string_view text) {
  try {
    return toml::parse(text);
  } catch (const toml::parse_error& e) {
    std::ostringstream where;
    where << e.source().begin;
    return fail("config.toml is not valid TOML (" + std::string(e.description()) + " at " +
                where.str() + "); not changing it");
  }
}

// The table at `key` inside `parent`, created when absent.
Result<toml::table*> child_table(toml::table& parent, std::string_view key, bool create) {
  toml::node* node = parent.get(key);
  if (node == nullptr) {
    if (!create) return nullptr;
    parent.insert(key, toml::table{});
    node = parent.get(key);
  }
  if (!node->is_table()) return fail("config.toml: \"" + std::string(key) + "\" is not a table");
  return node->as_table();
}

// [plugins."<cri>".containerd.runtimes] for the file's config version: "cri" (version 1),
// "io.containerd.grpc.v1.cri" (version 2, containerd 1.x; containerd 2.x migrates it when
// it loads), "io.containerd.cri.v1.runtime" (version 3, containerd 2.x).
Result<toml::table*> cri_runtimes(toml::table& doc, bool create) {
  int64_t version = doc["version"].value_or(int64_t{1});
  std::string_view cri = version >= 3   ? "io.containerd.cri.v1.runtime"
                         : version == 2 ? "io.containerd.grpc.v1.cri"
                                        : "cri";
  toml::table* t = &doc;
  for (std::string_view key : {std::string_view("plugins"), cri, std::string_view("containerd"),
                               std::string_view("runtimes")}) {
    auto next = child_table(*t, key, create);
    if (!next) return next;
    if (*next == nullptr) return nullptr;
    t = *next;
  }
  return t;
}

std::string dump_toml(const toml::table& doc) {
  std::ostringstream out;
  out << "# Edited by `archctl install containerd` (comments are not kept; see the backup).\n";
  out << doc << "\n";
  return out.str();
}

}  // namespace

Result<std::string> containerd_config_install(std::string_view text,
                                              const EngineInstallOptions& opts) {
  auto doc = parse_toml(text);
  if (!doc) return std::unexpected(doc.error());
  if (!doc->contains("version")) {
    if (!doc->empty()) {
      return fail(
          "config.toml has no `version` (a version 1 file); migrate it with "
          "`containerd config migrate` first");
    }
    doc->insert("version", int64_t{opts.containerd_config_version >= 3 ? 3 : 2});
  }
  auto runtimes = cri_runtimes(*doc, true);
  if (!runtimes) return std::unexpected(runtimes.error());
  toml::table& rts = **runtimes;

  // The arch runtime starts as a copy of runc's (SystemdCgroup and the rest must match).
  toml::table arch_rt;
  if (auto* runc = rts.get_as<toml::table>("runc")) arch_rt = *runc;
  arch_rt.insert_or_assign("runtime_type", "io.containerd.runc.v2");
  auto options = child_table(arch_rt, "options", true);
  if (!options) return std::unexpected(options.error());
  (*options)->insert_or_assign("BinaryName", opts.arch_runc_path);
  rts.insert_or_assign(kArchRuntimeName, std::move(arch_rt));

  if (opts.make_default) {
    auto runc = child_table(rts, "runc", true);
    if (!runc) return std::unexpected(runc.error());
    if (!(*runc)->contains("runtime_type")) {
      (*runc)->insert("runtime_type", "io.containerd.runc.v2");
    }
    auto runc_opts = child_table(**runc, "options", true);
    if (!runc_opts) return std::unexpected(runc_opts.error());
    (*runc_opts)->insert_or_assign("BinaryName", opts.arch_runc_path);
  }
  return dump_toml(*doc);
}

Result<std::string> containerd_config_uninstall(std::string_view text,
                                                const std::string& arch_runc_path) {
  auto doc = parse_toml(text);
  if (!doc) return std::unexpected(doc.error());
  auto runtimes = cri_runtimes(*doc, false);
  if (!runtimes) return std::unexpected(runtimes.error());
  if (*runtimes == nullptr) return std::string(text);
  toml::table& rts = **runtimes;
  rts.erase(kArchRuntimeName);
  if (auto* runc = rts.get_as<toml::table>("runc")) {
    if (auto* options = runc->get_as<toml::table>("options")) {
      if (options->get_as<std::string>("BinaryName") != nullptr &&
          (*options)["BinaryName"].value_or(std::string()) == arch_runc_path) {
        options->erase("BinaryName");
      }
    }
  }
  return dump_toml(*doc);
}

Result<EngineEdit> edit_engine_file_with(const std::string& path,
                                         Result<std::string> (*edit)(std::string_view, const void*),
                                         const void* ctx) {
  std::string old_text;
  mode_t mode = 0644;
  bool existed = false;
  if (auto text = read_file(path); text) {
    old_text = std::move(*text);
    existed = true;
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) mode = st.st_mode & 07777;
  } else if (text.error().code() != ENOENT) {
    return std::unexpected(text.error());
  }
  auto new_text = edit(old_text, ctx);
  if (!new_text) return std::unexpected(new_text.error().wrap(path));
  EngineEdit result;
  if (*new_text == old_text) return result;
  if (existed) {
    result.backup =
        path + ".arch-backup." + format_utc(static_cast<long>(std::time(nullptr)), true);
    if (auto b = write_file_atomic(result.backup, old_text, mode); !b) {
      return std::unexpected(b.error().wrap("backup"));
    }
  } else if (::mkdir(dirname_of(path).c_str(), 0755) != 0 && errno != EEXIST) {
    return fail_errno("mkdir " + dirname_of(path));
  }
  if (auto w = write_file_atomic(path, *new_text, mode); !w) return std::unexpected(w.error());
  result.changed = true;
  return result;
}

}  // namespace arch
