// MigratedPages: extra.migration of a migrated checkpoint and the remote pages dialer hook.
#include "container/migrated_pages.h"

#include "config/node_config.h"

namespace arch {
namespace {
RemotePagesDialer& dialer_slot() {
  static RemotePagesDialer dialer;
  return dialer;
}
}  // namespace

Result<std::optional<MigrationOrigin>> migration_origin(const Manifest& m) {
  if (!m.extra.is_object() || !m.extra.contains("migration")) return std::nullopt;
  const auto& j = m.extra["migration"];
  if (!j.is_object() || !j.contains("node") || !j["node"].is_string() || !j.contains("export") ||
      !j["export"].is_string()) {
    return fail(ErrorKind::kInvalidInput, "malformed extra.migration in the manifest");
  }
  MigrationOrigin o{j["node"].get<std::string>(), j["export"].get<std::string>()};
  if (auto ok = validate_node_name(o.node); !ok) return std::unexpected(ok.error());
  if (o.export_id.size() != 32 ||
      o.export_id.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return fail(ErrorKind::kInvalidInput, "malformed migration export id in the manifest");
  }
  return o;
}

nlohmann::json migration_origin_json(const MigrationOrigin& o) {
  return {{"node", o.node}, {"export", o.export_id}};
}

void set_remote_pages_dialer(RemotePagesDialer dialer) {
  dialer_slot() = std::move(dialer);
}

const RemotePagesDialer& remote_pages_dialer() {
  return dialer_slot();
}

}  // namespace arch
