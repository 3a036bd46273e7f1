// MigrateRoutes: archd's HTTP API for live migration (peer/migrate.h):
//   POST /v1/migrations {"namespace", "id", "to"[, "handoff": bool]} → 202 {"migration_id"};
//     the migration runs in a thread of its own ("handoff" absent: handoff for an
//     orchestrated container, else re-created; true/false: that mode);
//   GET /v1/migrations/ID → its report (mode: recreate or handoff; phase: prepare,
//     checkpoint, transfer, create, post-copy (handoff: handoff), then done, incomplete or
//     failed; ms and bytes per phase).
// Each migration's outcome is an event ("migrate") in archd's event log.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "agent.h"
#include "peer/migrate.h"

namespace httplib {
class Server;
}

namespace arch::agent {

/// The migrations this archd started (kept until it stops).
class Migrations {
 public:
  Migrations(Agent& agent, std::string runc) : agent_(agent), runc_(std::move(runc)) {}
  ~Migrations();
  Migrations(const Migrations&) = delete;
  Migrations& operator=(const Migrations&) = delete;

  /// Starts migrating NS/ID (a registered container) to `to`; its id.
  Result<int64_t> start(const std::string& ns, const std::string& id, const std::string& to,
                        MigrateMode mode = MigrateMode::kAuto);
  /// Its report so far.
  std::optional<nlohmann::json> report(int64_t id);
  /// Adds the routes above.
  void register_routes(httplib::Server& server);

 private:
  Agent& agent_;
  std::string runc_;
  std::mutex mutex_;
  int64_t next_ = 1;
  std::map<int64_t, nlohmann::json> reports_;
  std::vector<std::thread> threads_;
};

}  // namespace arch::agent
