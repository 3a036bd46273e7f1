// archctl key: the node keys that seal checkpoints (init, list, rotate, export, import, rm).
#include <fmt/core.h>
#include <unistd.h>

#include <memory>

#include "base/file_util.h"
#include "commands.h"
#include "config/node_config.h"
#include "store/node_key.h"

namespace arch::cli {
namespace {

struct KeyOptions {
  std::string id, file;
  bool json = false;
};

Result<std::string> keys_dir() {
  auto config = node_config();
  if (!config) return std::unexpected(config.error());
  return config->keys.dir;
}

int run_init() {
  auto dir_or = keys_dir();
  if (!dir_or) return report_error(dir_or.error());
  const std::string& dir = *dir_or;
  bool created = false;
  auto key = init_node_keys(dir, &created);
  if (!key) return report_error(key.error().message());
  fmt::print("{} key {} in {}\n", created ? "created" : "already have", key->id, dir);
  return 0;
}

int run_list(bool json) {
  auto config = node_config();
  if (!config) return report_error(config.error());
  auto ring = load_node_keyring(*config);
  if (!ring) return report_error(ring.error().message());
  const NodeKey* active = ring->active();
  if (json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& k : ring->keys()) out.push_back({{"id", k.id}, {"active", &k == active}});
    fmt::print("{}\n", out.dump(2));
    return 0;
  }
  for (const auto& k : ring->keys()) {
    fmt::print("{}{}\n", k.id, &k == active ? "  (active: seals new checkpoints)" : "");
  }
  return 0;
}

int run_rotate() {
  auto dir_or = keys_dir();
  if (!dir_or) return report_error(dir_or.error());
  const std::string& dir = *dir_or;
  auto key = rotate_node_key(dir);
  if (!key) return report_error(key.error().message());
  fmt::print("new active key {} in {} (older keys still verify until `archctl key rm`)\n", key->id,
             dir);
  return 0;
}

int run_export(const std::string& id) {
  auto config = node_config();
  if (!config) return report_error(config.error());
  auto ring = load_node_keyring(*config);
  if (!ring) return report_error(ring.error().message());
  const NodeKey* key = id.empty() ? ring->active() : ring->find(id);
  if (key == nullptr) return report_error("no key " + id + " in " + config->keys.dir);
  fmt::print("{}", export_node_key(*key));
  return 0;
}

int run_import(const std::string& file) {
  auto text = file == "-" ? read_all(STDIN_FILENO, 4096) : read_file(file, 4096);
  if (!text) return report_error(text.error().wrap(file).message());
  auto key = parse_exported_node_key(*text);
  if (!key) return report_error(key.error().wrap(file).message());
  auto dir_or = keys_dir();
  if (!dir_or) return report_error(dir_or.error());
  const std::string& dir = *dir_or;
  // The first key of a node becomes its active one; otherwise the active key stays (also
  // when it was active only as the directory's one key, with no `active` file: it is
  // written now, since two keys without one would leave none active).
  auto before = load_keyring(dir);
  std::string active = before && before->active() != nullptr ? before->active()->id : key->id;
  if (auto ok = install_node_key(dir, *key); !ok) return report_error(ok.error().message());
  if (auto ok = set_active_node_key(dir, active); !ok) return report_error(ok.error().message());
  fmt::print("imported key {} into {}\n", key->id, dir);
  return 0;
}

int run_rm(const std::string& id) {
  auto dir_or = keys_dir();
  if (!dir_or) return report_error(dir_or.error());
  const std::string& dir = *dir_or;
  if (auto ok = remove_node_key(dir, id); !ok) return report_error(ok.error().message());
  fmt::print("removed key {} (checkpoints sealed with it are no longer restored here)\n", id);
  return 0;
}

}  // namespace

Handler add_key_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("key", "Node keys that seal checkpoints ([keys] dir)");
  cmd->require_subcommand(1);
  auto o = std::make_shared<KeyOptions>();
  auto* init = cmd->add_subcommand("init", "Create the node key unless there is one");
  auto* list = cmd->add_subcommand("list", "List the keys (the active one seals)");
  list->add_flag("--json", o->json, "JSON output");
  auto* rotate = cmd->add_subcommand("rotate", "Make a new active key; old ones still verify");
  auto* exp = cmd->add_subcommand("export", "Print a key for another node's `key import`");
  exp->add_option("ID", o->id, "Key id (default: the active key)");
  auto* imp = cmd->add_subcommand("import", "Install a key printed by `key export`");
  imp->add_option("FILE", o->file, "File with the exported key ('-': stdin)")->required();
  auto* rm = cmd->add_subcommand("rm", "Remove a key that is not the active one");
  rm->add_option("ID", o->id, "Key id")->required();
  return [=]() -> int {
    if (init->parsed()) return run_init();
    if (list->parsed()) return run_list(o->json);
    if (rotate->parsed()) return run_rotate();
    if (exp->parsed()) return run_export(o->id);
    if (imp->parsed()) return run_import(o->file);
    if (rm->parsed()) return run_rm(o->id);
    return 1;
  };
}

}  // namespace arch::cli
