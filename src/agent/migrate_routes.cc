// MigrateRoutes: the migration threads and their routes.
#include "migrate_routes.h"

#include <fmt/core.h>
#include <httplib.h>

#include <chrono>

#include "base/clock.h"
#include "http_reply.h"
#include "managed/container_registry.h"
#include "peer/migrate.h"

namespace arch::agent {

using nlohmann::json;

Migrations::~Migrations() {
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
}

Result<int64_t> Migrations::start(const std::string& ns, const std::string& id,
                                  const std::string& to, MigrateMode mode) {
  const NodeConfig& config = agent_.config();
  std::vector<ContainerRecord> matches;
  for (auto& rec : ContainerRegistry(config.state_dir).all()) {
    if (rec.id == id && rec.ns == ns) matches.push_back(rec);
  }
  if (matches.empty()) {
    return fail(ErrorKind::kNotFound,
                "no ARCH-enabled container " + ns + "/" + id + " on this node");
  }
  if (std::none_of(config.peers.nodes.begin(), config.peers.nodes.end(),
                   [&](const auto& n) { return n.name == to; })) {
    return fail(ErrorKind::kInvalidInput, "no node " + to + " in [peers] nodes");
  }
  std::lock_guard held(mutex_);
  int64_t mid = next_++;
  reports_[mid] = {
      {"migration_id", mid}, {"namespace", ns}, {"id", id}, {"to", to}, {"phase", "prepare"}};
  threads_.emplace_back([this, mid, rec = matches.front(), to, mode] {
    auto t0 = std::chrono::steady_clock::now();
    auto out = migrate_container(
        rec, agent_.config(), runc_, to,
        [this, mid](const json& r) {
          std::lock_guard in_progress(mutex_);
          reports_[mid] = r;
          reports_[mid]["migration_id"] = mid;
        },
        mode);
    double ms = ms_since(t0);
    json final_report;
    {
      std::lock_guard done(mutex_);
      if (out) {
        reports_[mid] = *out;
      } else {
        reports_[mid]["phase"] = "failed";
        reports_[mid]["error"] = out.error().message();
      }
      reports_[mid]["migration_id"] = mid;
      final_report = reports_[mid];
    }
    std::string phase = final_report.value("phase", "");
    agent_.record_event({.kind = "migrate",
                         .ns = rec.ns,
                         .id = rec.id,
                         .outcome = phase == "done" ? "migrated" : phase,
                         .duration_ms = ms,
                         .detail = final_report.dump()});
  });
  return mid;
}

std::optional<json> Migrations::report(int64_t id) {
  std::lock_guard held(mutex_);
  auto it = reports_.find(id);
  if (it == reports_.end()) return std::nullopt;
  return it->second;
}

void Migrations::register_routes(httplib::Server& s) {
  s.Post("/v1/migrations", [this](const httplib::Request& req, httplib::Response& res) {
    auto j = json::parse(req.body, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("namespace") ||
        !j["namespace"].is_string() || !j.contains("id") || !j["id"].is_string() ||
        !j.contains("to") || !j["to"].is_string() ||
        (j.contains("handoff") && !j["handoff"].is_boolean())) {
      return reply_error(
          res, Error(ErrorKind::kInvalidInput,
                     "want {\"namespace\": ..., \"id\": ..., \"to\": ..., \"handoff\": bool}"));
    }
    // "handoff" absent: chosen from the container (handoff for an orchestrated one).
    auto mode = !j.contains("handoff")     ? MigrateMode::kAuto
                : j["handoff"].get<bool>() ? MigrateMode::kHandoff
                                           : MigrateMode::kRecreate;
    auto mid = start(j["namespace"], j["id"], j["to"], mode);
    if (!mid) return reply_error(res, mid.error());
    reply(res, 202, {{"migration_id", *mid}});
  });
  s.Get(R"(/v1/migrations/(\d+))", [this](const httplib::Request& req, httplib::Response& res) {
    auto r = report(std::strtoll(req.matches[1].str().c_str(), nullptr, 10));
    if (!r)
      return reply_error(res, Error(ErrorKind::kNotFound, "no migration " + req.matches[1].str()));
    reply(res, 200, *r);
  });
}

}  // namespace arch::agent
