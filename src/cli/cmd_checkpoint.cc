// archctl checkpoint list|inspect|rm|gc|export|import: the checkpoints in the node's stores.
#include <fcntl.h>
#include <fmt/core.h>
#include <sys/stat.h>

#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "base/duration.h"
#include "base/file_util.h"
#include "commands.h"
#include "config/node_config.h"
#include "criu/criu_errors.h"
#include "criu/criu_stats.h"
#include "exit_codes.h"
#include "managed/container_registry.h"
#include "store/checkpoint_archive.h"
#include "store/checkpoint_store.h"

namespace arch::cli {
namespace {

// The stores to look in: the node's, every one a registered container names, and --store,
// each with its root (the trust anchor every walk starts from): a registered container's
// allowed root; the node's store and --store (the admin's choice) are their own roots.
std::map<std::string, std::string> store_bases(const NodeConfig& config, const std::string& extra) {
  if (!extra.empty()) return {{extra, extra}};
  std::map<std::string, std::string> bases = {{config.store_path, config.store_path}};
  for (const auto& rec : ContainerRegistry(config.state_dir).all())
    bases.emplace(rec.store, rec.store_root.empty() ? rec.store : rec.store_root);
  return bases;
}

// The store `base` as its root allows (itself when unknown).
CheckpointStore store_at(const NodeConfig& config, const std::string& base) {
  auto bases = store_bases(config, {});
  auto it = bases.find(base);
  return CheckpointStore(base, config.keep, it == bases.end() ? base : it->second);
}

std::vector<CheckpointInfo> all_checkpoints(const NodeConfig& config, const std::string& store,
                                            bool verify) {
  std::vector<CheckpointInfo> out;
  auto keys = shared_node_keyring(config);  // seals are checked when this node has keys
  for (const auto& [base, root] : store_bases(config, store)) {
    auto list = CheckpointStore(base, config.keep, root, keys).list_all(verify);
    if (list) out.insert(out.end(), list->begin(), list->end());
  }
  return out;
}

std::string human_bytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", n) : fmt::format("{:.1f} {}", v, units[u]);
}

int run_list(const std::string& store, bool verify, bool json) {
  auto config = node_config();
  if (!config) return report_error(config.error());
  auto list = all_checkpoints(*config, store, verify);
  if (json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& c : list) {
      out.push_back({{"path", c.path},
                     {"namespace", c.ns},
                     {"key", c.key},
                     {"name", c.name},
                     {"state", to_string(c.state)},
                     {"created", c.created},
                     {"bytes", c.total_size},
                     {"reason", c.reason}});
    }
    fmt::print("{}\n", out.dump(2));
    return 0;
  }
  fmt::print("{:<36} {:<34} {:<10} {:>10}  {}\n", "NAMESPACE/KEY", "CHECKPOINT", "STATE", "SIZE",
             "REASON");
  for (const auto& c : list) {
    fmt::print("{:<36} {:<34} {:<10} {:>10}  {}\n", c.ns + "/" + c.key, c.name, to_string(c.state),
               human_bytes(c.total_size), c.reason.substr(0, c.reason.find('\n')));
  }
  return 0;
}

// A checkpoint directory, or NS/KEY for its newest committed one.
Result<CheckpointInfo> resolve(const NodeConfig& config, const std::string& store,
                               const std::string& ref, bool verify) {
  std::optional<CheckpointInfo> found;
  for (const auto& c : all_checkpoints(config, store, verify)) {
    bool by_path = c.path == ref || c.path == std::filesystem::weakly_canonical(ref).string();
    bool by_key = c.ns + "/" + c.key == ref && c.name.starts_with("ckpt-");
    if (by_path || by_key) {  // the store lists each key's checkpoints newest first
      found = c;
      break;
    }
  }
  if (!found) {
    return fail(ErrorKind::kNotFound,
                "no checkpoint " + ref + " (give a checkpoint directory or NAMESPACE/KEY)");
  }
  return *found;
}

uint64_t size_matching(const std::string& dir, std::string_view prefix) {
  uint64_t total = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.is_regular_file() && e.path().filename().string().starts_with(prefix))
      total += e.file_size();
  }
  return total;
}

// A failed dump's kept CRIU logs (failed-*/dump-logs/*.log), by file name.
std::map<std::string, std::string> dump_logs(const std::string& dir) {
  std::map<std::string, std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir + "/dump-logs", ec)) {
    if (!e.is_regular_file() || e.is_symlink()) continue;
    std::ifstream in(e.path(), std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    out[e.path().filename().string()] = std::move(text);
  }
  return out;
}

int run_inspect(const std::string& store, const std::string& ref, bool json, bool verbose) {
  auto config = node_config();
  if (!config) return report_error(config.error());
  auto c = resolve(*config, store, ref, true);
  if (!c) return report_error(c.error());
  std::string images = c->path + "/images";
  uint64_t memory = size_matching(images, "pages-");
  uint64_t all_images = size_matching(images, "");
  std::error_code ec;
  uint64_t rootfs = std::filesystem::file_size(c->path + "/rootfs-diff.tar", ec);
  if (ec) rootfs = 0;
  auto stats = read_criu_dump_stats(c->path + "/criu/stats-dump");
  nlohmann::json doc = {{"path", c->path},
                        {"state", to_string(c->state)},
                        {"reason", c->reason},
                        {"namespace", c->ns},
                        {"key", c->key},
                        {"created", c->created},
                        {"sizes",
                         {{"total", c->total_size},
                          {"memory_pages", memory},
                          {"criu_images", all_images},
                          {"rootfs_diff", rootfs}}}};
  if (c->manifest) {
    doc["container_id"] = c->manifest->container_id;
    doc["node"] = c->manifest->node;
    doc["versions"] = {{"arch", c->manifest->versions.arch},
                       {"criu", c->manifest->versions.criu},
                       {"runc", c->manifest->versions.runc},
                       {"kernel", c->manifest->versions.kernel}};
    doc["timings_ms"] = c->manifest->timings_ms;
    doc["files"] = c->manifest->files.size();
    doc["format_version"] = c->manifest->format_version;
    doc["seal_key_id"] = c->manifest->seal.key_id;
    doc["spec_digest"] = c->manifest->spec.digest;
  }
  if (stats) doc["criu_dump_statistics"] = *stats;
  // A failed dump: the sentence is the reason's first line; CRIU's error lines are in the
  // kept log (always in JSON, with --verbose in text).
  auto logs = dump_logs(c->path);
  for (const auto& [name, text] : logs) {
    doc["dump_logs"][name] = {{"path", c->path + "/dump-logs/" + name},
                              {"criu_error_lines", criu_error_lines(text, 40)}};
  }
  if (json) {
    fmt::print("{}\n", doc.dump(2));
    return 0;
  }
  std::string reason = verbose ? c->reason : c->reason.substr(0, c->reason.find('\n'));
  fmt::print("checkpoint  {}\nstate       {}{}\nkey         {}/{}\ncreated     {}\n", c->path,
             to_string(c->state), reason.empty() ? "" : " (" + reason + ")", c->ns, c->key,
             c->created);
  for (const auto& [name, text] : logs) {
    fmt::print("CRIU log    {}/dump-logs/{}\n", c->path, name);
    if (!verbose) continue;
    for (const auto& line : criu_error_lines(text, 40)) fmt::print("  {}\n", line);
  }
  if (!logs.empty() && !verbose) fmt::print("            (--verbose: CRIU's error lines)\n");
  if (c->manifest) {
    const auto& m = *c->manifest;
    fmt::print("container   {} on node {}\nversions    arch {}, {}, {}, kernel {}\n",
               m.container_id, m.node, m.versions.arch, m.versions.criu, m.versions.runc,
               m.versions.kernel);
    fmt::print("timings    ");
    for (const auto& [k, v] : m.timings_ms) fmt::print(" {}={:.1f}ms", k, v);
    fmt::print("\n");
  }
  fmt::print("sizes       total {}, memory pages {}, CRIU images {}, rootfs diff {}\n",
             human_bytes(c->total_size), human_bytes(memory), human_bytes(all_images),
             human_bytes(rootfs));
  if (stats) {
    fmt::print("CRIU dump statistics\n");
    for (const auto& [k, v] : *stats) fmt::print("  {:<24} {}\n", k, v);
  } else {
    fmt::print("CRIU dump statistics: unavailable ({})\n", stats.error().message());
  }
  return 0;
}

int run_rm(const std::string& store, const std::string& ref) {
  auto config = node_config();
  if (!config) return report_error(config.error());
  auto c = resolve(*config, store, ref, false);
  if (!c) return report_error(c.error());
  std::string base = std::filesystem::path(c->path).parent_path().parent_path().parent_path();
  CheckpointStore s = store_at(*config, base);
  auto lock = s.lock(c->ns, c->key, std::chrono::seconds(30));
  if (!lock) return report_error(lock.error());
  if (auto ok = s.remove_one(c->path, *lock); !ok) return report_error(ok.error());
  fmt::print("removed {}\n", c->path);
  return 0;
}

// export NS/KEY FILE: the key's newest generation whose seal and files verify (newer ones
// that do not are moved aside, as a restore would), written as one archive, under the key's
// lock so that gc or a new checkpoint cannot change it meanwhile.
int run_export(const std::string& store, const std::string& ref, const std::string& file,
               bool plain, int level, bool json, bool quiet) {
  auto config = node_config();
  if (!config) return report_error(config.error());
  if (ref.find('/') == std::string::npos || ref.front() == '/') {
    return report_error(Error(ErrorKind::kInvalidInput,
                              "give the checkpoint as NAMESPACE/KEY (its newest is exported)"));
  }
  auto c = resolve(*config, store, ref, false);
  if (!c) return report_error(c.error());
  std::string base = std::filesystem::path(c->path).parent_path().parent_path().parent_path();
  auto bases = store_bases(*config, {});
  auto root = bases.contains(base) ? bases[base] : base;
  CheckpointStore s(base, config->keep, root, shared_node_keyring(*config));
  auto lock = s.lock(c->ns, c->key, std::chrono::seconds(30));
  if (!lock) return report_error(lock.error());
  auto ckpt = s.latest_verified(c->ns, c->key, *lock);
  if (!ckpt) return report_error(ckpt.error().wrap("export " + ref));
  auto bytes = export_checkpoint(
      ckpt->path, file,
      ExportOptions{
          .compress = !plain, .level = level, .progress = terminal_progress("export", quiet)});
  if (!bytes) return report_error(bytes.error());
  if (json) {
    nlohmann::json out = {{"checkpoint", ckpt->path},
                          {"namespace", c->ns},
                          {"key", c->key},
                          {"archive", file},
                          {"bytes", *bytes}};
    fmt::print("{}\n", out.dump(2));
  } else {
    fmt::print("exported {} ({}) to {} ({})\n", ref,
               std::filesystem::path(ckpt->path).filename().string(), file, human_bytes(*bytes));
  }
  return 0;
}

// import FILE: into the allowed root the node config names (`--store NAME`: base = the
// root, as ARCH_STORE=NAME; `--shared NAME`: base = <root>/checkpoint, as ARCH_SHAREDFS),
// under the owner and key the archive's sealed manifest names.
int run_import(const std::string& file, const std::string& store_name,
               const std::string& shared_name, const std::string& expect, bool json, bool quiet) {
  auto config = node_config();
  if (!config) return report_error(config.error());
  const std::string& want = shared_name.empty() ? store_name : shared_name;
  std::optional<StoreRoot> root;
  std::string names;
  for (const auto& r : allowed_roots(*config)) {
    names += (names.empty() ? "" : ", ") + r.name;
    if (r.name == (want.empty() ? std::string("local") : want)) root = r;
  }
  if (!root) {
    return report_error(Error(ErrorKind::kInvalidInput, "no allowed store root named " + want +
                                                            " (the node has: " + names + ")"));
  }
  std::string base = shared_name.empty() ? root->path : root->path + "/checkpoint";
  CheckpointStore s(base, config->keep, root->path, shared_node_keyring(*config));
  auto fd = open_file(file, O_RDONLY | O_NOCTTY);
  if (!fd) return report_error(fd.error().wrap("import"));
  ExpansionLimits caps{config->limits.max_archive_bytes, config->limits.max_entries};
  auto done =
      import_checkpoint(s, fd->get(), file, caps, expect, terminal_progress("import", quiet));
  if (!done) return report_error(done.error());
  std::string ref = done->manifest.ns + "/" + done->manifest.key;
  if (json) {
    nlohmann::json out = {{"checkpoint", done->path},
                          {"namespace", done->manifest.ns},
                          {"key", done->manifest.key},
                          {"node", done->manifest.node},
                          {"created", done->manifest.created}};
    fmt::print("{}\n", out.dump(2));
  } else {
    fmt::print("imported {} (taken on {} at {}) as {}\n", ref, done->manifest.node,
               done->manifest.created, done->path);
  }
  return 0;
}

// When a store directory was made: its manifest's time, else the directory's mtime.
long created_at(const CheckpointInfo& c) {
  if (!c.created.empty()) {
    if (auto t = parse_utc_time(c.created)) return *t;
  }
  struct stat st {};
  return ::lstat(c.path.c_str(), &st) == 0 ? static_cast<long>(st.st_mtime) : 0;
}

struct GcAction {
  std::string path, what, result;
};

// gc of one key (its directories in `dirs`): the whole key when its newest committed
// generation is older than `cutoff`, else failed-* and staging-* leftovers older than it.
// Keys of containers registered on this node, and keys locked by a writer, are left alone.
void gc_key(const NodeConfig& config, const std::vector<CheckpointInfo>& dirs, long cutoff,
            bool dry_run, const std::set<std::string>& in_use, std::vector<GcAction>& actions) {
  const CheckpointInfo& any = dirs.front();
  std::string key_dir = std::filesystem::path(any.path).parent_path().string();
  std::string base = std::filesystem::path(key_dir).parent_path().parent_path().string();
  long newest = -1;
  for (const auto& c : dirs) {
    if (c.state == CheckpointState::kCommitted || c.state == CheckpointState::kVerified)
      newest = std::max(newest, created_at(c));
  }
  // A key with no committed generation newer than the cutoff (or none at all) is stale: all
  // its old directories go. Otherwise only old failed and unfinished directories go.
  bool stale_key = newest <= cutoff;
  std::vector<const CheckpointInfo*> victims;
  for (const auto& c : dirs) {
    bool leftover = c.state == CheckpointState::kFailed || c.state == CheckpointState::kStaging;
    if ((stale_key || leftover) && created_at(c) <= cutoff) victims.push_back(&c);
  }
  bool whole_key = victims.size() == dirs.size();
  if (victims.empty()) return;
  if (in_use.contains(base + "\n" + any.ns + "\n" + any.key)) {
    actions.push_back({key_dir, "key", "kept: a container on this node uses it"});
    return;
  }
  if (dry_run) {
    if (whole_key) {
      actions.push_back({key_dir, "key", "would remove"});
    } else {
      for (const auto* c : victims) actions.push_back({c->path, c->name, "would remove"});
    }
    return;
  }
  CheckpointStore store = store_at(config, base);
  auto lock = store.lock(any.ns, any.key, std::chrono::seconds(0));
  if (!lock) {
    actions.push_back({key_dir, "key", "kept: " + lock.error().message()});
    return;
  }
  if (whole_key) {
    auto ok = store.remove(any.ns, any.key, *lock);
    actions.push_back({key_dir, "key", ok ? "removed" : "failed: " + ok.error().message()});
    return;
  }
  for (const auto* c : victims) {
    auto ok = store.remove_one(c->path, *lock);
    actions.push_back({c->path, c->name, ok ? "removed" : "failed: " + ok.error().message()});
  }
}

int run_gc(const std::string& store, const std::string& older_than, bool dry_run, bool json) {
  auto age = parse_duration(older_than);
  if (!age) return report_error(age.error());
  auto config = node_config();
  if (!config) return report_error(config.error());
  long cutoff = static_cast<long>(::time(nullptr)) - static_cast<long>(age->count());
  std::set<std::string> in_use;
  for (const auto& rec : ContainerRegistry((*config).state_dir).all())
    in_use.insert(rec.store + "\n" + rec.owner + "\n" + rec.key);
  std::map<std::string, std::vector<CheckpointInfo>> keys;
  for (auto& c : all_checkpoints((*config), store, false)) {
    keys[std::filesystem::path(c.path).parent_path().string()].push_back(std::move(c));
  }
  std::vector<GcAction> actions;
  for (const auto& [dir, dirs] : keys) gc_key((*config), dirs, cutoff, dry_run, in_use, actions);
  bool failed = false;
  nlohmann::json out = nlohmann::json::array();
  for (const auto& a : actions) {
    failed = failed || a.result.starts_with("failed");
    if (json) {
      out.push_back({{"path", a.path}, {"what", a.what}, {"result", a.result}});
    } else {
      fmt::print("{:<14} {}  {}\n", a.what == "key" ? "key" : "directory", a.path, a.result);
    }
  }
  if (json) fmt::print("{}\n", out.dump(2));
  if (!json && actions.empty()) fmt::print("nothing older than {}\n", older_than);
  return failed ? kExitPartial : kExitOk;
}

}  // namespace

Handler add_checkpoint_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("checkpoint", "Checkpoints in the node's stores");
  cmd->require_subcommand(1);
  struct Opts {
    std::string ref, store, output, older_than, file, shared, expect;
    bool verify = false, dry_run = false, verbose = false, plain = false, quiet = false;
    int level = 3;
  };
  auto o = std::make_shared<Opts>();
  auto* list = cmd->add_subcommand("list", "Every checkpoint: committed, corrupt, moved aside");
  list->add_option("--store", o->store, "Look only in this store directory");
  list->add_flag("--verify", o->verify, "Check every file against its manifest (reads them all)");
  add_output_option(list, o->output);
  auto* inspect = cmd->add_subcommand("inspect", "Sizes, versions, timings, CRIU statistics");
  inspect->add_option("checkpoint", o->ref, "Checkpoint directory or NAMESPACE/KEY")->required();
  add_output_option(inspect, o->output);
  inspect->add_option("--store", o->store, "Look only in this store directory");
  inspect->add_flag("-v,--verbose", o->verbose,
                    "The whole reason and, for a failed dump, CRIU's error lines");
  auto* rm = cmd->add_subcommand("rm", "Remove a checkpoint");
  rm->add_option("checkpoint", o->ref, "Checkpoint directory or NAMESPACE/KEY (its newest)")
      ->required();
  rm->add_option("--store", o->store, "Look only in this store directory");
  auto* gc = cmd->add_subcommand(
      "gc",
      "Remove stale checkpoints: keys whose newest checkpoint is older than --older-than "
      "(unless a container on this node uses them), and old failed or unfinished ones");
  gc->add_option("--older-than", o->older_than, "Age, e.g. 36h, 7d, 1h30m")->required();
  gc->add_option("--store", o->store,
                 "Only this store directory (default: the node's and its containers' stores)");
  gc->add_flag("--dry-run", o->dry_run, "Show what would be removed");
  add_output_option(gc, o->output);
  auto* exp = cmd->add_subcommand(
      "export", "Write a key's newest checkpoint (seal and files verified) to one archive file");
  exp->add_option("checkpoint", o->ref, "NAMESPACE/KEY")->required();
  exp->add_option("file", o->file, "The archive to write (.tar.zst; replaced atomically)")
      ->required();
  exp->add_option("--store", o->store, "Look only in this store directory");
  exp->add_flag("--no-compress", o->plain, "A plain tar instead of zstd");
  exp->add_option("--level", o->level, "zstd level")->check(CLI::Range(1, 19));
  exp->add_flag("-q,--quiet", o->quiet, "No progress line on a terminal");
  add_output_option(exp, o->output);
  auto* imp = cmd->add_subcommand(
      "import",
      "Add an exported checkpoint as the newest generation of its key (seal checked "
      "first)");
  imp->add_option("file", o->file, "The archive `checkpoint export` wrote")->required();
  imp->add_option("--store", o->store, "Allowed store root by name (default: local)");
  imp->add_option("--shared", o->shared,
                  "Allowed root by name, shared-mode layout (<root>/checkpoint)");
  imp->add_option("--expect", o->expect, "Refuse unless the archive holds NAMESPACE/KEY");
  imp->add_flag("-q,--quiet", o->quiet, "No progress line on a terminal");
  add_output_option(imp, o->output);
  return [=] {
    bool json = o->output == "json";
    if (list->parsed()) return run_list(o->store, o->verify, json);
    if (inspect->parsed()) return run_inspect(o->store, o->ref, json, o->verbose);
    if (gc->parsed()) return run_gc(o->store, o->older_than, o->dry_run, json);
    if (exp->parsed())
      return run_export(o->store, o->ref, o->file, o->plain, o->level, json, o->quiet);
    if (imp->parsed()) {
      if (!o->store.empty() && !o->shared.empty()) {
        return report_error(Error(ErrorKind::kInvalidInput, "give --store or --shared, not both"));
      }
      return run_import(o->file, o->store, o->shared, o->expect, json, o->quiet);
    }
    return run_rm(o->store, o->ref);
  };
}

}  // namespace arch::cli
