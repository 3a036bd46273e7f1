// Migrate: the source's coordinator, the destination's session, the source's page exports
// and the destination's remote page source. See migrate.h for the protocol.
#include "peer/migrate.h"

#include <fcntl.h>
#include <fmt/core.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "base/clock.h"
#include "base/file_util.h"
#include "base/hex.h"
#include "base/names.h"
#include "base/process.h"
#include "container/checkpoint.h"
#include "managed/activity_log.h"
#include "managed/docker_labels.h"
#include "managed/job_identity.h"
#include "managed/owner.h"
#include "managed/store_layout.h"
#include "peer/migrate_docker.h"
#include "peer/migrate_exports.h"
#include "peer/peer_cert.h"
#include "runtime/oci_spec.h"
#include "store/checkpoint_store.h"
#include "store/node_key.h"
#include "store/seal.h"

namespace arch {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

// A migration's steps may take minutes (a large dump, a slow create): the session's reads
// wait this long.
constexpr auto kSessionTimeout = std::chrono::minutes(10);

Result<SslCtxPtr> client_context(const NodeConfig& config) {
  auto id = ensure_peer_identity(config, false);
  if (!id) return std::unexpected(id.error());
  return make_peer_context(*id, false);
}

Result<NodeConfig::Peers::Node> known_peer(const NodeConfig& config, const std::string& name) {
  auto it = std::find_if(config.peers.nodes.begin(), config.peers.nodes.end(),
                         [&](const auto& n) { return n.name == name; });
  if (it == config.peers.nodes.end()) {
    return fail(ErrorKind::kNotFound, "no node " + name + " in [peers] nodes");
  }
  return *it;
}

std::string random_hex16() {
  unsigned char b[16];
  if (RAND_bytes(b, sizeof b) != 1) return {};
  return to_hex(b, sizeof b);
}

// ------------------------------------------------------------------ page exports (source)

// The export of `rec`'s committed generation `checkpoint` for node `peer` (its files
// added by the caller), under a fresh random id ("" when there are no random bytes).
PageExportRecord export_record_for(const ContainerRecord& rec, const std::string& peer,
                                   const std::string& checkpoint) {
  PageExportRecord r;
  r.id = random_hex16();
  r.peer = peer;
  r.checkpoint = checkpoint;
  r.ns = rec.ns;
  r.container_id = rec.id;
  r.key = rec.key;
  r.owner = rec.owner;
  r.store = rec.store;
  r.store_root = rec.store_root;
  return r;
}

// ------------------------------------------------------------------ containerd (ctr)

Result<ProcessResult> ctr(const NodeConfig& config, const std::string& ns,
                          std::vector<std::string> args, std::chrono::seconds timeout) {
  std::vector<std::string> argv = {config.peers.migrate_ctr, "--address",
                                   config.agent.containerd_address, "-n", ns};
  argv.insert(argv.end(), args.begin(), args.end());
  ProcessOptions opts;
  opts.timeout = timeout;
  return run_process(argv, opts);
}

std::string first_line(const std::string& s) {
  auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}

// The container's image, from containerd's record of it.
Result<std::string> container_image(const NodeConfig& config, const ContainerRecord& rec) {
  auto r = ctr(config, rec.ns, {"containers", "info", rec.id}, std::chrono::seconds(30));
  if (!r) return std::unexpected(r.error().wrap("ctr containers info"));
  if (r->exit_code != 0) {
    return fail("ctr containers info " + rec.id + ": " + first_line(r->err) +
                " (only containers created through containerd can be migrated)");
  }
  try {
    auto j = json::parse(r->out);
    std::string image = j.value("Image", "");
    if (image.empty()) return fail("container " + rec.id + " has no image in containerd");
    return image;
  } catch (const json::exception& e) {
    return fail(std::string("ctr containers info: ") + e.what());
  }
}

// Removes the source's ended container from containerd (its task first). Best effort.
void remove_container(const NodeConfig& config, const ContainerRecord& rec) {
  for (int i = 0; i < 50; ++i) {
    auto r = ctr(config, rec.ns, {"task", "delete", rec.id}, std::chrono::seconds(30));
    if (!r || r->exit_code == 0 || r->err.find("not found") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the kill still landing
  }
  (void)ctr(config, rec.ns, {"containers", "rm", rec.id}, std::chrono::seconds(30));
}

// ------------------------------------------------------------------ the destination

struct Offer {
  std::string ns, id, image, cwd;
  std::vector<std::string> args, env;
  bool handoff = false;                       // "mode": "handoff" (see migrate.h)
  json annotations = json::object();          // handoff: the spec's CRI annotations
  Labels labels;                              // handoff: the ECS agent's labels
  std::optional<DockerContainerSpec> docker;  // engine "docker": re-created through Docker
};

Result<Offer> parse_offer(const json& j) {
  Offer o;
  try {
    o.ns = j.at("ns").get<std::string>();
    o.id = j.at("id").get<std::string>();
    std::string mode = j.value("mode", "recreate");
    if (mode != "recreate" && mode != "handoff") return fail("unknown migration mode " + mode);
    o.handoff = mode == "handoff";
    o.image = o.handoff ? j.value("image", "") : j.at("image").get<std::string>();
    o.annotations = j.value("annotations", json::object());
    o.labels = j.value("labels", Labels{});
    o.cwd = j.value("cwd", "/");
    o.args = j.at("args").get<std::vector<std::string>>();
    o.env = j.at("env").get<std::vector<std::string>>();
  } catch (const json::exception& e) {
    return fail(ErrorKind::kInvalidInput, std::string("malformed offer: ") + e.what());
  }
  if (auto ok = validate_name("namespace", o.ns); !ok) return std::unexpected(ok.error());
  if (auto ok = validate_name("container id", o.id); !ok) return std::unexpected(ok.error());
  auto bad = [](const std::string& s) {
    return std::any_of(s.begin(), s.end(), [](char c) { return c >= 0 && c < 0x20; });
  };
  if ((o.image.empty() && !o.handoff) || o.image.size() > 512 || bad(o.image) ||
      o.image.starts_with('-')) {
    return fail(ErrorKind::kInvalidInput, "malformed image name");
  }
  if (o.args.empty() || o.cwd.empty() || o.cwd.front() != '/' || !o.annotations.is_object()) {
    return fail(ErrorKind::kInvalidInput, "malformed process");
  }
  std::string engine = j.contains("engine") && j["engine"].is_string() ? j["engine"] : "containerd";
  if (engine == kDockerEngine) {
    auto docker = parse_docker_offer(j);
    if (!docker) return std::unexpected(docker.error());
    o.docker = std::move(*docker);
  } else if (engine != "containerd") {
    return fail(ErrorKind::kInvalidInput, "unknown engine " + engine.substr(0, 40));
  }
  return o;
}

// The sha256 of a byte stream, as it goes.
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr); }
  void update(std::string_view d) { EVP_DigestUpdate(ctx_.get(), d.data(), d.size()); }
  std::string hex() {
    unsigned char md[32];
    unsigned int n = 0;
    EVP_DigestFinal_ex(ctx_.get(), md, &n);
    return to_hex(md, n);
  }

 private:
  struct Free {
    void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
  };
  std::unique_ptr<EVP_MD_CTX, Free> ctx_;
};

// Opens (creating its directories, 0700) `path` under `dirfd` for writing, never following
// a link.
Result<UniqueFd> create_under(int dirfd, const std::string& path) {
  std::vector<UniqueFd> held;
  int at = dirfd;
  std::size_t from = 0;
  for (;;) {
    auto slash = path.find('/', from);
    if (slash == std::string::npos) break;
    std::string part = path.substr(from, slash - from);
    if (::mkdirat(at, part.c_str(), 0700) != 0 && errno != EEXIST) {
      return fail_errno("mkdir " + part);
    }
    int fd = ::openat(at, part.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return fail_errno("open " + part);
    held.emplace_back(fd);
    at = fd;
    from = slash + 1;
  }
  int fd = ::openat(at, path.substr(from).c_str(),
                    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return fail_errno("create " + path);
  return UniqueFd(fd);
}

// One file of the stream into `fd`, checked against its sealed size and digest.
Result<uint64_t> receive_file(PeerConnection& conn, int fd, const ManifestFile& f) {
  Sha256 sha;
  uint64_t got = 0;
  for (;;) {
    auto frame = conn.receive();
    if (!frame) return std::unexpected(frame.error());
    if (frame->type != FrameType::kBulk) return fail("expected the bytes of " + f.path);
    if (frame->payload.empty()) break;
    got += frame->payload.size();
    if (got > f.size) return fail(f.path + " is longer than its sealed size");
    sha.update(frame->payload);
    if (auto ok = write_all(fd, frame->payload); !ok) return std::unexpected(ok.error());
  }
  if (got != f.size || sha.hex() != f.sha256) {
    return fail(ErrorKind::kInvalidInput, f.path + " does not match the sealed manifest");
  }
  return got;
}

class DestinationSession {
 public:
  DestinationSession(PeerConnection& conn, const NodeConfig& config, const PeerLogger& log)
      : conn_(conn), config_(config), log_(log) {}

  void run(const json& offer_json) {
    conn_.set_timeout(kSessionTimeout);
    auto offer = parse_offer(offer_json);
    if (!offer) return refuse(offer.error().message());
    offer_ = std::move(*offer);
    if (auto ok = check_offer(); !ok) return refuse(ok.error().message());
    if (!conn_.send_json({{"ok", true}})) return;
    auto req = conn_.receive_json();
    if (!req || req->value("op", "") != "migrate.checkpoint") return;  // the source gave up
    auto committed = receive_checkpoint(*req);
    if (!committed) return refuse(committed.error().message());
    if (!conn_.send_json({{"committed", *committed}, {"bytes", received_}})) return discard();
    if (offer_.handoff) return keep_handoff();
    req = conn_.receive_json();
    if (!req || req->value("op", "") != "migrate.start") return discard();
    auto t0 = Clock::now();
    if (auto ok = create_container(); !ok) {
      discard();
      return refuse(ok.error().message());
    }
    log_(LogLevel::kInfo,
         fmt::format("migrate: {}/{} from node {} runs here (created in {:.0f} ms)", offer_.ns,
                     offer_.id, conn_.peer_name(), ms_since(t0)));
    json running = {{"running", true}, {"create_ms", ms_since(t0)}};
    if (!new_id_.empty()) running["id"] = new_id_;
    (void)conn_.send_json(running);
  }

 private:
  // Handoff: the generation is kept once the source asks (it then ends its tasks); without
  // that request (the source gave up, the connection broke) it goes.
  void keep_handoff() {
    auto req = conn_.receive_json();
    if (!req || req->value("op", "") != "migrate.handoff") return discard();
    log_(LogLevel::kInfo,
         fmt::format("migrate: {}/{} handed off by node {}: generation {} ({} bytes) kept for "
                     "the orchestrator's reschedule",
                     offer_.ns, offer_.id, conn_.peer_name(), committed_, received_));
    (void)conn_.send_json({{"kept", committed_}});
  }

  void refuse(const std::string& why) {
    log_(LogLevel::kWarn, fmt::format("migrate: {}/{} from node {} refused: {}", offer_.ns,
                                      offer_.id, conn_.peer_name(), why));
    (void)conn_.send_json({{"error", why}});
  }

  Result<void> check_offer() {
    // The spec's ARCH_* variables give the owner, the key and the store, as arch-runc will
    // find them at the create.
    auto env = parse_arch_env(
        json{{"process", {{"env", offer_.env}}}, {"annotations", offer_.annotations}}.dump());
    if (!env) return std::unexpected(env.error());
    if (env->get("ARCH_ENABLE") != "1") return fail("the container is not ARCH-enabled");
    // ECS owners only where this node enables them, as arch-runc does at the reschedule.
    bool ecs = config_.owners_ecs && offer_.ns == kDockerNamespace && !offer_.labels.empty();
    auto owner = derive_owner(offer_.ns, *env, ecs ? &offer_.labels : nullptr);
    if (!owner) return std::unexpected(owner.error());
    auto key = resolve_job_key(*env, offer_.id);
    if (!key) return std::unexpected(key.error());
    auto place = store_place_for(*env, config_);
    if (!place) return std::unexpected(place.error());
    if (auto ok = check_store_place(*place); !ok) return std::unexpected(ok.error());
    owner_ = *owner;
    key_ = key->key;
    place_ = *place;
    if (offer_.handoff) return {};  // the orchestrator re-creates it: no image or id needed
    if (offer_.docker) return check_docker_destination(config_, *offer_.docker);
    if (::access(config_.peers.migrate_runtime.c_str(), X_OK) != 0) {
      return fail("[peers] migrate_runtime " + config_.peers.migrate_runtime +
                  " is not executable here");
    }
    auto images = ctr(config_, offer_.ns, {"images", "ls", "-q"}, std::chrono::seconds(30));
    if (!images || images->exit_code != 0) {
      return fail("cannot list the images of containerd (" + config_.agent.containerd_address +
                  "): " + (images ? first_line(images->err) : images.error().message()));
    }
    bool found = false;
    for (std::size_t at = 0; at < images->out.size();) {
      auto nl = images->out.find('\n', at);
      if (nl == std::string::npos) nl = images->out.size();
      found = found || images->out.substr(at, nl - at) == offer_.image;
      at = nl + 1;
    }
    if (!found) {
      return fail(
          fmt::format("image {} is not in containerd namespace {} on node {} (pull or "
                      "import it there first)",
                      offer_.image, offer_.ns, peer_node_name(config_)));
    }
    auto info =
        ctr(config_, offer_.ns, {"containers", "info", offer_.id}, std::chrono::seconds(30));
    if (info && info->exit_code == 0) {
      return fail("a container " + offer_.ns + "/" + offer_.id + " exists on node " +
                  peer_node_name(config_));
    }
    return {};
  }

  Result<std::string> receive_checkpoint(const json& req) {
    if (!req.contains("manifest") || !req["manifest"].is_string() ||
        (!offer_.handoff &&
         (!req.contains("export") || !req["export"].is_string() || !is_export_id(req["export"])))) {
      return fail(ErrorKind::kInvalidInput, "malformed migrate.checkpoint");
    }
    auto keys = load_node_keyring(config_);
    if (!keys) return std::unexpected(keys.error());
    auto ring = std::make_shared<const Keyring>(std::move(*keys));
    auto m = open_sealed_manifest(req["manifest"].get<std::string>(), *ring);
    if (!m) return std::unexpected(m.error().wrap("the migrated checkpoint's manifest"));
    if (m->ns != owner_ || m->key != key_) {
      return fail(ErrorKind::kPermission,
                  fmt::format("the checkpoint is of {}/{}, the container's spec gives {}/{}", m->ns,
                              m->key, owner_, key_));
    }
    if (!has_chunked_pages(*m)) return fail("the checkpoint's pages carry no chunk digests");
    CheckpointStore store(place_.base, config_.keep, place_.root, ring);
    auto lock = store.lock(owner_, key_, std::chrono::seconds(60));
    if (!lock) return std::unexpected(lock.error());
    (void)store.cleanup_stale(*lock);
    auto staging = store.begin(*lock);
    if (!staging) return std::unexpected(staging.error());
    for (const auto& f : m->files) {
      auto fd = create_under(staging->dirfd(), f.path);
      if (!fd) return std::unexpected(fd.error());
      if (is_pages_image_path(f.path) && !offer_.handoff) {
        // Left on the source: a sparse file of its sealed size (never read: served).
        if (::ftruncate(fd->get(), static_cast<off_t>(f.size)) != 0) {
          return fail_errno("truncate " + f.path);
        }
        continue;
      }
      auto got = receive_file(conn_, fd->get(), f);
      if (!got) return std::unexpected(got.error());
      received_ += *got;
    }
    Manifest base = *m;
    if (!base.extra.is_object()) base.extra = json::object();
    if (!offer_.handoff) {
      base.extra["migration"] =
          migration_origin_json({conn_.peer_name(), req["export"].get<std::string>()});
    }
    base.seal = {};
    auto path = store.commit(std::move(*staging), std::move(base), *lock);
    if (!path) return std::unexpected(path.error());
    committed_ = *path;
    store_ = std::make_unique<CheckpointStore>(place_.base, config_.keep, place_.root, ring);
    return *path;
  }

  std::string runc_root() const {
    return config_.peers.migrate_runc_root.empty() ? "/run/containerd/runc/" + offer_.ns
                                                   : config_.peers.migrate_runc_root;
  }

  Result<void> create_container() {
    if (offer_.docker) return create_docker();
    std::string logs = config_.state_dir + "/migrated/" + offer_.ns;
    for (const auto& d : {config_.state_dir, config_.state_dir + "/migrated", logs}) {
      if (::mkdir(d.c_str(), 0700) != 0 && errno != EEXIST) return fail_errno("mkdir " + d);
    }
    std::vector<std::string> args = {"run", "-d", "--runc-binary", config_.peers.migrate_runtime};
    if (!config_.peers.migrate_runc_root.empty()) {
      args.insert(args.end(), {"--runc-root", config_.peers.migrate_runc_root});
    }
    if (!config_.peers.migrate_cgroup_parent.empty()) {
      args.insert(args.end(), {"--cgroup", config_.peers.migrate_cgroup_parent + "/" + offer_.id});
    }
    args.insert(args.end(),
                {"--log-uri", "file://" + logs + "/" + offer_.id + ".log", "--cwd", offer_.cwd});
    for (const auto& e : offer_.env) args.insert(args.end(), {"--env", e});
    args.insert(args.end(), {"--", offer_.image, offer_.id});
    args.insert(args.end(), offer_.args.begin(), offer_.args.end());
    auto r = ctr(config_, offer_.ns, args, std::chrono::seconds(300));
    if (!r) return std::unexpected(r.error().wrap("ctr run"));
    if (r->exit_code != 0) {
      remove_new_container();
      return fail("ctr run: " + first_line(r->err));
    }
    if (auto ok = check_restored(offer_.id); !ok) {
      remove_new_container();
      return ok;
    }
    return {};
  }

  // Re-created through this node's Docker under the offer's name (a new Docker id).
  Result<void> create_docker() {
    auto id = create_docker_container(config_, *offer_.docker);
    if (!id) return std::unexpected(id.error());
    if (auto ok = check_restored(*id); !ok) {
      remove_docker_container(config_, *id);
      return ok;
    }
    new_id_ = *id;
    return {};
  }

  // Restored from the migrated generation, not created afresh (a failed restore would have
  // started the job from zero here while it still runs on the source): arch-runc's newest
  // restore record for container `id` in the activity log says which.
  Result<void> check_restored(const std::string& id) {
    std::string outcome, detail;
    if (auto text = read_file(activity_log_path(config_.state_dir), 64 << 20)) {
      for (std::size_t end = text->size(); end > 1 && outcome.empty();) {
        auto start = text->rfind('\n', end - 2);
        start = start == std::string::npos ? 0 : start + 1;
        auto rec = parse_activity_line(std::string_view(*text).substr(start, end - start));
        if (rec && rec->what == "restore" && rec->id == id && rec->ns == offer_.ns) {
          outcome = rec->outcome;
          detail = rec->detail;
        }
        end = start;
      }
    }
    if (outcome != "ok" || detail.find(committed_) == std::string::npos) {
      return fail("the container was re-created but not restored from the migrated checkpoint: " +
                  (detail.empty() ? std::string("no restore recorded") : detail));
    }
    return {};
  }

  void remove_new_container() {
    (void)ctr(config_, offer_.ns, {"task", "kill", "-s", "SIGKILL", offer_.id},
              std::chrono::seconds(30));
    ContainerRecord rec;
    rec.ns = offer_.ns;
    rec.id = offer_.id;
    remove_container(config_, rec);
  }

  // The migration failed after the commit: the generation (whose pages are elsewhere) goes.
  void discard() {
    if (committed_.empty() || !store_) return;
    if (auto lock = store_->lock(owner_, key_, std::chrono::seconds(60))) {
      (void)store_->remove_one(committed_, *lock);
    }
    committed_.clear();
  }

  PeerConnection& conn_;
  const NodeConfig& config_;
  const PeerLogger& log_;
  Offer offer_;
  std::string owner_, key_;
  StorePlace place_;
  std::string committed_;
  std::unique_ptr<CheckpointStore> store_;
  uint64_t received_ = 0;
  std::string new_id_;  // a Docker container's id here
};

// ------------------------------------------------------------------ the source

// The container's process as its bundle's spec has it.
Result<json> offer_for(const ContainerRecord& rec, const std::string& image) {
  auto text = read_file(rec.bundle + "/config.json");
  if (!text) return std::unexpected(text.error().wrap("read the spec"));
  try {
    auto spec = json::parse(*text);
    const auto& p = spec.at("process");
    if (p.value("terminal", false)) return fail("a container with a terminal cannot be migrated");
    return json{{"op", "migrate.offer"},
                {"ns", rec.ns},
                {"id", rec.id},
                {"image", image},
                {"args", p.at("args")},
                {"env", p.value("env", json::array())},
                {"cwd", p.value("cwd", "/")}};
  } catch (const json::exception& e) {
    return fail(std::string("the container's spec: ") + e.what());
  }
}

// Handoff: what the destination needs besides the process to derive the owner and key the
// orchestrator's reschedule will have: the spec's CRI annotations, the ECS agent's labels.
Result<void> add_handoff_identity(json& offer, const ContainerRecord& rec, const NodeConfig& config,
                                  const ArchEnv& env) {
  offer["mode"] = "handoff";
  offer["annotations"] = env.annotations;
  if (!rec.owner.starts_with("ecs+")) return {};
  auto labels = read_docker_labels(config.docker_data_root, rec.id);
  if (!labels) return std::unexpected(labels.error().wrap("the ECS labels"));
  json ecs = json::object();
  for (auto name : {kEcsClusterLabel, kEcsFamilyLabel, kEcsTaskArnLabel}) {
    if (auto it = labels->find(name); it != labels->end()) ecs[std::string(name)] = it->second;
  }
  offer["labels"] = ecs;
  return {};
}

// Removes the committed generation `dir` of rec's key from this node's store. Best effort.
void remove_generation(const ContainerRecord& rec, const NodeConfig& config,
                       const std::string& dir) {
  auto keys = load_node_keyring(config);
  if (!keys) return;
  CheckpointStore store(rec.store, config.keep, rec.store_root,
                        std::make_shared<const Keyring>(std::move(*keys)));
  if (auto lock = store.lock(rec.owner, rec.key, std::chrono::seconds(60))) {
    (void)store.remove_one(dir, *lock);
  }
}

// Sends every file of the committed checkpoint `dir` as bulk frames, the pages images only
// `with_pages` (a handoff's full copy).
Result<uint64_t> send_files(PeerConnection& conn, const std::string& dir, const Manifest& m,
                            bool with_pages) {
  uint64_t sent = 0;
  std::string buf(kMaxBulkFrame, '\0');
  for (const auto& f : m.files) {
    if (is_pages_image_path(f.path) && !with_pages) continue;
    auto fd = open_file(dir + "/" + f.path, O_RDONLY | O_NOFOLLOW);
    if (!fd) return std::unexpected(fd.error());
    for (;;) {
      ssize_t n = ::read(fd->get(), buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return fail_errno("read " + f.path);
      if (n == 0) break;
      if (auto ok = conn.send(FrameType::kBulk,
                              std::string_view(buf.data(), static_cast<std::size_t>(n)));
          !ok) {
        return std::unexpected(ok.error());
      }
      sent += static_cast<uint64_t>(n);
    }
    if (auto ok = conn.send(FrameType::kBulk, {}); !ok) return std::unexpected(ok.error());
  }
  return sent;
}

}  // namespace

// ------------------------------------------------------------------ public

void serve_migrate_session(PeerConnection& conn, const json& offer, const NodeConfig& config,
                           const PeerLogger& log) {
  DestinationSession(conn, config, log).run(offer);
}

bool serve_pages_read(PeerConnection& conn, const json& req) {
  std::string id = req.value("export", ""), file = req.value("file", "");
  uint64_t offset = 0, length = 0;
  if (req.contains("offset") && req["offset"].is_number_unsigned()) offset = req["offset"];
  if (req.contains("length") && req["length"].is_number_unsigned()) length = req["length"];
  auto path = page_exports().check(id, conn.peer_name(), file, offset, length);
  if (!path) return conn.send_json({{"error", path.error().message()}}).has_value();
  auto fd = open_file(*path, O_RDONLY | O_NOFOLLOW);
  if (!fd) return conn.send_json({{"error", "read the pages image"}}).has_value();
  std::string data(length, '\0');
  uint64_t done = 0;
  while (done < length) {
    ssize_t n =
        ::pread(fd->get(), data.data() + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return conn.send_json({{"error", "read the pages image"}}).has_value();
    done += static_cast<uint64_t>(n);
  }
  if (!conn.send(FrameType::kBulk, data)) return false;
  page_exports().served(id, file, offset, length, &conn);
  return true;
}

Result<json> migrate_container(const ContainerRecord& rec, const NodeConfig& config,
                               const std::string& runc, const std::string& to,
                               const MigrateProgress& progress, MigrateMode mode) {
  auto t0 = Clock::now();
  json report = {{"namespace", rec.ns},
                 {"id", rec.id},
                 {"key", rec.key},
                 {"from", peer_node_name(config)},
                 {"to", to},
                 {"phase", "prepare"},
                 {"ms", json::object()},
                 {"bytes", json::object()}};
  auto phase = [&](const std::string& name) {
    report["phase"] = name;
    report["ms"]["total"] = ms_since(t0);
    if (progress) progress(report);
  };
  auto failed = [&](const Error& e) -> Result<json> {
    record_checkpoint_activity(config.state_dir, "migrate", rec, false, ms_since(t0), 0,
                               "migrate to " + to + ": " + e.message());
    return std::unexpected(e.wrap(fmt::format("migrate {}/{} to {}", rec.ns, rec.id, to)));
  };
  if (to == peer_node_name(config)) return failed(Error("that is this node"));
  auto node = known_peer(config, to);
  if (!node) return failed(node.error());
  // 0. Re-created by us, or handed off to the container's orchestrator.
  auto env = read_arch_env(rec.bundle);
  if (!env) return failed(env.error().wrap("read the spec"));
  std::string orchestrator = orchestrator_of(rec.ns, rec.owner, *env);
  bool handoff =
      mode == MigrateMode::kHandoff || (mode == MigrateMode::kAuto && !orchestrator.empty());
  report["mode"] = handoff ? "handoff" : "recreate";
  if (!orchestrator.empty()) report["orchestrator"] = orchestrator;
  // 1. The destination's consent, before anything is frozen.
  std::optional<DockerContainerSpec> docker;  // re-created through Docker (not a handoff)
  if (!handoff) {
    auto found = docker_container_of(rec, config);
    if (!found) return failed(found.error());
    docker = std::move(*found);
  }
  auto image = docker ? Result<std::string>(docker->image) : container_image(config, rec);
  if (!image && !handoff) return failed(image.error());
  auto offer =
      docker ? Result<json>(docker_offer(rec, *docker)) : offer_for(rec, image.value_or(""));
  if (!offer) return failed(offer.error());
  if (handoff) {
    if (auto ok = add_handoff_identity(*offer, rec, config, *env); !ok) return failed(ok.error());
  }
  auto ctx = client_context(config);
  if (!ctx) return failed(ctx.error().wrap("peer channel"));
  auto conn = PeerConnection::connect(*ctx, node->name, node->host, node->port,
                                      std::chrono::seconds(config.peers.timeout_seconds));
  if (!conn) return failed(conn.error());
  conn->set_timeout(kSessionTimeout);
  if (auto ok = conn->call(*offer); !ok) return failed(ok.error().wrap("node " + to + " refused"));
  std::optional<DockerRestartHold> restart_hold;  // dockerd must not restart it here
  if (docker) {
    auto held = DockerRestartHold::hold(config, rec.id, *docker);
    if (!held) return failed(held.error());
    restart_hold.emplace(std::move(*held));
    report["engine"] = kDockerEngine;
    report["name"] = docker->name;
  }
  report["ms"]["prepare"] = ms_since(t0);
  // 2. Freeze, dump (tasks left frozen in place), commit here.
  phase("checkpoint");
  CheckpointOptions options;
  options.migration = true;
  auto ck = ContainerCheckpoint::begin(rec, config, runc, options);
  if (!ck) return failed(ck.error());
  auto frozen_at = Clock::now();
  auto staged = ck->stage_group_member();
  if (!staged) return failed(staged.error());
  report["checkpoint"] = *staged;
  report["ms"]["checkpoint"] = ms_since(frozen_at);
  auto abort = [&](const Error& e) {
    ck->retract_group_member();  // generation removed, tasks thawed
    return failed(e.wrap("the container was thawed and runs on here"));
  };
  auto keys = load_node_keyring(config);
  if (!keys) return abort(keys.error());
  auto text = read_file(*staged + "/" + kManifestFileName);
  if (!text) return abort(text.error());
  auto m = open_sealed_manifest(*text, *keys);
  if (!m) return abort(m.error());
  uint64_t total = 0, pages = 0;
  PageExportRecord exp = export_record_for(rec, to, *staged);
  for (const auto& f : m->files) {
    total += f.size;
    if (!is_pages_image_path(f.path)) continue;
    pages += f.size;
    exp.files[f.path.substr(std::string_view("images/").size())] = f.size;
  }
  report["bytes"]["checkpoint"] = total;
  report["bytes"]["pages"] = pages;
  std::string export_id = exp.id;
  if (export_id.empty()) return abort(Error("no random bytes for the export id"));
  exp.engine = docker ? "docker" : "containerd";
  if (!handoff) {
    if (auto ok = page_exports().add(exp); !ok) return abort(ok.error());
  }
  // 3. The sealed manifest and every non-pages file (the rootfs diff among them); a
  // handoff sends the pages images too.
  phase("transfer");
  auto t_send = Clock::now();
  auto unexport = [&](const Error& e) {
    page_exports().remove(export_id);
    return abort(e);
  };
  if (auto ok = conn->send_json(
          {{"op", "migrate.checkpoint"}, {"manifest", *text}, {"export", export_id}});
      !ok) {
    return unexport(ok.error());
  }
  auto sent = send_files(*conn, *staged, *m, handoff);
  if (!sent) return unexport(sent.error());
  auto committed = conn->receive_json();
  if (!committed) return unexport(committed.error().wrap("node " + to));
  if (committed->contains("error")) {
    return unexport(Error("node " + to + ": " + committed->value("error", "")));
  }
  report["bytes"]["transfer"] = *sent;
  report["ms"]["transfer"] = ms_since(t_send);
  report["destination_checkpoint"] = committed->value("committed", "");
  if (handoff) {
    // 4. Handoff: the destination keeps the generation, the tasks here end (137, as after a
    // finalize) and this node's generation goes; the container is its orchestrator's.
    phase("handoff");
    auto kept = conn->call({{"op", "migrate.handoff"}});
    if (!kept) return unexport(kept.error().wrap("node " + to));
    report["ms"]["frozen"] = ms_since(frozen_at);  // not downtime: the reschedule decides
    conn->close();
    auto ended = ck->end_group_member({});
    ck = std::unexpected(Error("ended"));  // the key's lock released
    if (!ended) report["warning"] = ended.error().message();
    remove_generation(rec, config, *staged);
    record_checkpoint_activity(config.state_dir, "migrate", rec, true, ms_since(t0), total,
                               fmt::format("handed off to {} (frozen {:.0f} ms)", to,
                                           report["ms"]["frozen"].get<double>()));
    phase("done");
    return report;
  }
  // 4. The destination re-creates the container, restoring lazily from here.
  phase("create");
  auto t_create = Clock::now();
  auto running = conn->call({{"op", "migrate.start"}});
  if (!running) return unexport(running.error().wrap("node " + to));
  report["ms"]["create"] = ms_since(t_create);
  report["ms"]["downtime"] = ms_since(frozen_at);
  if (running->contains("id")) report["destination_id"] = (*running)["id"];
  if (restart_hold) restart_hold->disarm();
  conn->close();
  // 5. The destination runs: the tasks here end (the generation stays for its pages).
  auto ended = ck->end_group_member({});
  ck = std::unexpected(Error("ended"));  // the key's lock released
  if (!ended) report["warning"] = ended.error().message();
  record_checkpoint_activity(config.state_dir, "migrate", rec, true, ms_since(t0), total,
                             fmt::format("migrated to {} (downtime {:.0f} ms)", to,
                                         report["ms"]["downtime"].get<double>()));
  phase("post-copy");
  // 6. Post-copy: until every chunk was fetched, or nobody asked for the idle limit
  // (peer/migrate_exports.h judges; archd's watcher takes over after a restart).
  auto t_post = Clock::now();
  auto post = wait_post_copy(
      page_exports(), export_id, post_copy_idle_limit_ms(config), [&](const PageExportProgress& p) {
        report["bytes"]["post_copy"] = p.bytes_served;
        report["chunks"] = {{"served", p.chunks_served}, {"total", p.chunks_total}};
      });
  report["ms"]["post_copy"] = ms_since(t_post);
  if (post == PostCopy::kStopped) {
    report["warning"] =
        "archd stopped during post-copy: the page export is kept in its state "
        "dir, and the next archd serves it and removes the generation " +
        *staged + " once every page has moved";
    phase("interrupted");
    return report;
  }
  if (post != PostCopy::kComplete) {
    // The destination stopped asking (its container ended, or it failed closed): the
    // generation and the export stay, so a restore there can still fetch them.
    report["warning"] = "post-copy did not finish: the source's generation " + *staged +
                        " is kept and still served";
    phase("incomplete");
    return report;
  }
  // 7. Every page moved: the source's generation and container go.
  finish_page_export(exp, rec, config);
  phase("done");
  return report;
}

void finish_page_export(const PageExportRecord& exp, const ContainerRecord& rec,
                        const NodeConfig& config) {
  remove_generation(rec, config, exp.checkpoint);
  if (exp.engine == "docker") {
    remove_docker_container(config, rec.id);  // Docker's record goes with it
  } else {
    remove_container(config, rec);
  }
  page_exports().remove(exp.id);  // last: a restart before this finishes the clean-up
}

ResumedExports::ResumedExports(const NodeConfig& config, PeerLogger log)
    : config_(config), log_(std::move(log)) {}

std::size_t ResumedExports::resume() {
  if (auto ok = page_exports().persist_in(config_.state_dir); !ok) {
    log_(LogLevel::kWarn,
         "migrate: page exports kept in memory only (an archd restart during post-copy ends "
         "them): " +
             ok.error().message());
    return 0;
  }
  return page_exports().load(config_, log_);
}

void ResumedExports::check() {
  for (const auto& id : page_exports().reloaded()) {
    auto p = page_exports().progress(id);
    auto r = page_exports().record(id);
    if (!p || !r) continue;
    auto state = judge_post_copy(*p, post_copy_idle_limit_ms(config_));
    if (state == PostCopy::kIncomplete && reported_.insert(id).second) {
      log_(LogLevel::kWarn,
           fmt::format("migrate: post-copy of {}/{} to node {} did not finish ({} of {} chunks "
                       "sent): the generation {} is kept and still served",
                       r->ns, r->container_id, r->peer, p->chunks_served, p->chunks_total,
                       r->checkpoint));
    }
    if (state != PostCopy::kComplete) continue;
    log_(LogLevel::kInfo,
         fmt::format("migrate: post-copy of {}/{} to node {} is over ({} chunks, {} bytes sent "
                     "since the restart): its generation and container here go",
                     r->ns, r->container_id, r->peer, p->chunks_total, p->bytes_served));
    ContainerRecord rec;
    rec.ns = r->ns;
    rec.id = r->container_id;
    rec.key = r->key;
    rec.owner = r->owner;
    rec.store = r->store;
    rec.store_root = r->store_root;
    // An archd that died before the destination's answer (step 5) left the tasks here
    // frozen: every page has moved, so they end as step 5 ends them (the SIGKILL is taken
    // as the thaw lets them run, before any instruction of theirs).
    (void)ctr(config_, rec.ns, {"task", "kill", "-s", "SIGKILL", rec.id}, std::chrono::seconds(30));
    (void)ctr(config_, rec.ns, {"task", "resume", rec.id}, std::chrono::seconds(30));
    finish_page_export(*r, rec, config_);
    reported_.erase(id);
  }
}

void register_page_export(const std::string& id, const std::string& peer,
                          const std::string& checkpoint,
                          const std::map<std::string, uint64_t>& files) {
  PageExportRecord r;
  r.id = id;
  r.peer = peer;
  r.checkpoint = checkpoint;
  r.files = files;
  (void)page_exports().add(std::move(r));
}

void unregister_page_export(const std::string& id) {
  page_exports().remove(id);
}

void pages_connection_closed(const PeerConnection& conn) {
  page_exports().closed(&conn);
}

Result<std::string> check_pages_read(const std::string& id, const std::string& peer,
                                     const std::string& file, uint64_t offset, uint64_t length) {
  return page_exports().check(id, peer, file, offset, length);
}

// ------------------------------------------------------------------ remote pages (destination)

namespace {

// One process's connection to a source node (re-dialled in a forked child: a TLS
// connection's state is never used by two processes).
class RemotePages {
 public:
  RemotePages(NodeConfig config, MigrationOrigin origin)
      : config_(std::move(config)), origin_(std::move(origin)) {}

  // A connection that drops or cannot be made is retried, backing off, for twice [peers]
  // timeout: a source archd restarted meanwhile (an upgrade, a crash) serves its persisted
  // exports again within seconds. A source still gone after that, or one that refuses the
  // read, fails it: the page server then fails closed.
  Result<std::vector<char>> read(const std::string& file, uint64_t offset, std::size_t len) {
    std::lock_guard held(mutex_);
    if (pid_ != ::getpid()) {
      // Forked: the parent's connection is left alone (never written to, never shut down
      // from here: its TLS state belongs to the parent).
      (void)conn_.release();
      ctx_.reset();
      pid_ = ::getpid();
    }
    const auto window = std::chrono::seconds(2 * config_.peers.timeout_seconds);
    auto backoff = std::chrono::milliseconds(100);
    std::optional<Error> first;
    Clock::time_point deadline;
    for (;;) {
      bool dropped = false;
      auto got = attempt(file, offset, len, dropped);
      if (got || !dropped) return got;
      if (!first) {
        first = got.error();
        deadline = Clock::now() + window;
      } else if (Clock::now() + backoff > deadline) {
        return fail(fmt::format("{}; node {} not back within {} s: {}", first->message(),
                                origin_.node, window.count(), got.error().message()));
      }
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
    }
  }

 private:
  // One try: dials when there is no connection, then asks. `dropped`: it failed on the way
  // to the source (connect, send, receive), worth another try.
  Result<std::vector<char>> attempt(const std::string& file, uint64_t offset, std::size_t len,
                                    bool& dropped) {
    if (!conn_) {
      auto node = known_peer(config_, origin_.node);
      if (!node) return std::unexpected(node.error());
      if (!ctx_) {
        auto ctx = client_context(config_);
        if (!ctx) return std::unexpected(ctx.error());
        ctx_ = *ctx;
      }
      auto conn = PeerConnection::connect(ctx_, node->name, node->host, node->port,
                                          std::chrono::seconds(config_.peers.timeout_seconds));
      if (!conn) {
        dropped = true;
        return std::unexpected(conn.error().wrap("node " + origin_.node));
      }
      conn_ = std::make_unique<PeerConnection>(std::move(*conn));
    }
    auto fetched = fetch(file, offset, len, dropped);
    if (!fetched) conn_.reset();
    return fetched;
  }

  Result<std::vector<char>> fetch(const std::string& file, uint64_t offset, std::size_t len,
                                  bool& dropped) {
    if (auto ok = conn_->send_json({{"op", "pages.read"},
                                    {"export", origin_.export_id},
                                    {"file", file},
                                    {"offset", offset},
                                    {"length", len}});
        !ok) {
      dropped = true;
      return std::unexpected(ok.error());
    }
    auto frame = conn_->receive();
    if (!frame) {
      dropped = frame.error().kind() != ErrorKind::kInvalidInput;  // not a frame refused
      return std::unexpected(frame.error());
    }
    if (frame->type == FrameType::kJson) {
      std::string why = "unexpected answer";
      try {
        why = json::parse(frame->payload).value("error", why);
      } catch (const json::exception&) {
      }
      return fail("node " + origin_.node + " refused pages of " + file + ": " + why);
    }
    if (frame->payload.size() != len) return fail("node " + origin_.node + ": short pages read");
    return std::vector<char>(frame->payload.begin(), frame->payload.end());
  }

  NodeConfig config_;
  MigrationOrigin origin_;
  std::mutex mutex_;
  pid_t pid_ = ::getpid();
  SslCtxPtr ctx_;
  std::unique_ptr<PeerConnection> conn_;
};

}  // namespace

Result<PageChunkSource> dial_remote_pages(const NodeConfig& config, const MigrationOrigin& origin,
                                          const std::string& file) {
  if (auto node = known_peer(config, origin.node); !node) return std::unexpected(node.error());
  static std::mutex mutex;
  static std::map<std::string, std::shared_ptr<RemotePages>> remotes;
  std::shared_ptr<RemotePages> remote;
  {
    std::lock_guard held(mutex);
    auto& r = remotes[origin.node + "/" + origin.export_id];
    if (!r) r = std::make_shared<RemotePages>(config, origin);
    remote = r;
  }
  return PageChunkSource(
      [remote, file](uint64_t offset, std::size_t len) { return remote->read(file, offset, len); });
}

}  // namespace arch
