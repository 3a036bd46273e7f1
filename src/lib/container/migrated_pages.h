// MigratedPages: a checkpoint that a live migration (peer/migrate.h) left on this node with
// its pages images still on the node it came from. The destination's commit seals, in the
// manifest's extra.migration, the source node's name (taken from its verified certificate)
// and the export the source registered for this node; the pages images are sparse files of
// their sealed sizes. Such a checkpoint is only ever restored lazily, each chunk fetched
// from the source and checked against its sealed digest (criu/page_server.h); the address
// of the source comes from this node's own [peers] nodes, never from the checkpoint.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "base/error.h"
#include "config/node_config.h"
#include "criu/page_server.h"
#include "store/manifest.h"

namespace arch {

/// Where a migrated checkpoint's pages are.
struct MigrationOrigin {
  std::string node;       ///< The source node (a [peers] node name).
  std::string export_id;  ///< What the source registered them as for this node.
};

/// extra.migration of a manifest: std::nullopt when it has none, an error when malformed.
Result<std::optional<MigrationOrigin>> migration_origin(const Manifest& m);
/// The JSON of extra.migration.
nlohmann::json migration_origin_json(const MigrationOrigin& o);

/// Gives a pages image's chunks from the source node (peer/migrate.h implements it over the
/// peer channel; arch-runc-helper installs it). `file`: the image's name in images/.
using RemotePagesDialer = std::function<Result<PageChunkSource>(
    const NodeConfig& config, const MigrationOrigin& origin, const std::string& file)>;
/// Installs the dialer (once, at start).
void set_remote_pages_dialer(RemotePagesDialer dialer);
/// The installed dialer; unset: a migrated checkpoint cannot be restored by this binary.
const RemotePagesDialer& remote_pages_dialer();

}  // namespace arch
