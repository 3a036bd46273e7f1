// Migrate: live migration of a container to another node over the peer channel
// (peer_tls.h), post-copy: the final dump's memory stays on the source and the destination
// restores lazily, fetching each 1 MiB chunk of the pages images from the source and
// checking it against the sealed chunk digests before CRIU gets a byte of it.
//
// Protocol (one connection, the source dials the destination):
//   migrate.offer {ns, id, image, args, env, cwd} → {ok}: the destination checks, before
//     anything is frozen, that it can re-create the container (the image is in its
//     containerd under that namespace, no container of that id, its store for the key the
//     spec's ARCH_* variables give);
//   (the source freezes, dumps leaving the tasks frozen in place, commits a sealed
//   generation in its local store and registers its pages images for that peer only)
//   migrate.checkpoint {manifest, export} then, per non-pages file of the manifest, bulk
//     frames and an empty one → {committed}: the destination checks the seal (the shared
//     node key), that the manifest's owner and key are the ones the offer's spec gives,
//     hashes every file against it, makes each pages image a sparse file of its sealed size,
//     and commits the generation with extra.migration = {node: the source's name from its
//     certificate, export} (container/migrated_pages.h);
//   migrate.start {} → {running}: `ctr run` with the same image, args, env and cwd through
//     arch-runc ([peers] migrate_*); arch-runc restores from that generation, its page server
//     asking the source for chunks: pages.read {export, file, offset, length} → one bulk
//     frame (served only for an export registered for the asking peer, within the file).
// Docker containers (namespace moby with Docker's record; peer/migrate_docker.h): the offer
// has engine "docker" and a "docker" object (name, restart policy ...), its env gains
// ARCH_JOB_ID=<key>; the destination checks its Docker (image, name free) and re-creates
// the container with `docker create --runtime=<[peers] migrate_docker_runtime>` + `docker
// start` ({running, id: the new Docker id}); the source holds the restart policy at "no"
// while its tasks may end and removes the container with `docker rm -f` after post-copy.
// Any failure before {running}: the source's generation is removed and its tasks thawed
// (they never stopped running from their point of view), the destination removes what it
// wrote. After {running}: the source's tasks are ended; once every chunk has been fetched
// (post-copy done), its generation and its container are removed.
//
// Handoff mode (offer "mode": "handoff"; chosen for orchestrated containers, see
// orchestrator_of() in managed/job_identity.h, or asked for): the orchestrator owns the
// container, so nothing is re-created. The destination checks only the owner, key and store
// the spec's ARCH_* variables (and CRI annotations, ECS labels) give; migrate.checkpoint
// carries every file, the pages images included (a full copy: the generation must not
// depend on the source, which may be a reclaimed node), each hashed against the seal, and
// the destination commits a plain generation (no extra.migration); migrate.handoff {} →
// {kept}: the destination keeps it (without that request it removes it). Then the source
// ends its tasks (exit 137, as a finalize does), removes its generation and leaves the
// container to its orchestrator, whose reschedule on the destination restores the
// generation as any restore-on-create does (same owner and job key).
//
// The source's exports are persisted in archd's state dir (peer/migrate_exports.h): an archd
// restarted during post-copy serves them again and finishes them (ResumedExports), and the
// destination's page server retries a source that dropped it for 2 × [peers] timeout before
// it fails closed.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "base/error.h"
#include "config/node_config.h"
#include "container/migrated_pages.h"
#include "managed/container_registry.h"
#include "peer/group_peers.h"
#include "peer/migrate_exports.h"
#include "peer/peer_tls.h"

namespace arch {

/// Called with the migration's report as it moves on (its "phase" changes).
using MigrateProgress = std::function<void(const nlohmann::json& report)>;

/// How the destination takes the container: kAuto is kHandoff for an orchestrated
/// container (orchestrator_of()), else kRecreate.
enum class MigrateMode { kAuto, kRecreate, kHandoff };

/// The source: migrates `rec` to the [peers] node `to`. The report (also passed to
/// `progress` at each phase): mode, phase, total/downtime (recreate) or frozen (handoff) and
/// per-phase ms, bytes per phase. Fails (the container running on here) when anything before
/// the destination runs (recreate) or keeps the generation (handoff) fails.
Result<nlohmann::json> migrate_container(const ContainerRecord& rec, const NodeConfig& config,
                                         const std::string& runc, const std::string& to,
                                         const MigrateProgress& progress = {},
                                         MigrateMode mode = MigrateMode::kAuto);

/// The destination's session after a migrate.offer (until the container runs or the
/// migration fails).
void serve_migrate_session(PeerConnection& conn, const nlohmann::json& offer,
                           const NodeConfig& config, const PeerLogger& log);

/// The source's answer to pages.read. false: the connection must end.
bool serve_pages_read(PeerConnection& conn, const nlohmann::json& request);
/// The peer listener's handler ends for `conn` (post-copy is over only once no page server
/// that read from an export is still connected).
void pages_connection_closed(const PeerConnection& conn);

/// Every page of `exp` moved: the source's generation and container `rec` are removed
/// (best effort), then the export (memory and files). migrate_container's last step, and
/// ResumedExports' after a restart.
void finish_page_export(const PageExportRecord& exp, const ContainerRecord& rec,
                        const NodeConfig& config);

/// archd's side of the page exports an earlier archd left in the state dir
/// (peer/migrate_exports.h): resume() at start, before the peer listener, then check()
/// every few hundred milliseconds until archd stops.
class ResumedExports {
 public:
  ResumedExports(const NodeConfig& config, PeerLogger log);
  /// Persists exports in the state dir from now on and serves the ones found there again.
  /// Returns how many.
  std::size_t resume();
  /// Judges each resumed export as migrate_container judges its own: complete ones are
  /// finished (finish_page_export), incomplete ones logged once and still served.
  void check();

 private:
  NodeConfig config_;
  PeerLogger log_;
  std::set<std::string> reported_;
};

/// The source's registry of page exports (migrate_container fills it): `files` (pages image
/// name in images/ → size) of the committed generation `checkpoint`, for node `peer` only.
void register_page_export(const std::string& id, const std::string& peer,
                          const std::string& checkpoint,
                          const std::map<std::string, uint64_t>& files);
void unregister_page_export(const std::string& id);
/// The path a pages.read from `peer` may read, or why not: an export registered for it, a
/// pages image of it, 1..kMaxBulkFrame bytes within the file.
Result<std::string> check_pages_read(const std::string& id, const std::string& peer,
                                     const std::string& file, uint64_t offset, uint64_t length);

/// arch-runc-helper's RemotePagesDialer: a PageChunkSource asking the [peers] node
/// origin.node over the peer channel (one connection per process: a forked page server
/// dials its own).
Result<PageChunkSource> dial_remote_pages(const NodeConfig& config, const MigrationOrigin& origin,
                                          const std::string& file);

}  // namespace arch
