// PeerRoutes: the listener's handler: one request loop per authenticated connection.
#include "peer_routes.h"

#include <fmt/core.h>

#include "peer/group_peers.h"
#include "peer/migrate.h"
#include "peer/peer_cert.h"
#include "peer/peer_tls.h"
#include "version.h"

namespace arch::agent {

PeerListener::PeerListener(const NodeConfig& config, std::string runc, Logger log)
    : config_(config), runc_(std::move(runc)), log_(std::move(log)) {}

PeerListener::~PeerListener() {
  stop();
}

Result<void> PeerListener::start() {
  if (config_.peers.listen.empty()) return {};
  PeerCertInfo info;
  auto id = ensure_peer_identity(config_, false, &info);
  if (!id) return std::unexpected(id.error().wrap("peers"));
  if (info.issued) {
    log_(LogLevel::kInfo, fmt::format("peers: certificate issued for node {} ({}; until {})",
                                      info.name, info.why, info.not_after));
  }
  auto ctx = make_peer_context(*id, true);
  if (!ctx) return std::unexpected(ctx.error().wrap("peers"));
  std::vector<std::string> allowed;
  for (const auto& n : config_.peers.nodes) allowed.push_back(n.name);
  std::string self = id->name;
  auto handler = [this, self](PeerConnection& conn) {
    struct Closed {
      PeerConnection& conn;
      ~Closed() { pages_connection_closed(conn); }
    } closed{conn};
    for (;;) {
      auto req = conn.receive_json();
      if (!req) return;  // closed, timed out, or a frame refused: the connection ends
      std::string op = req->is_object() ? req->value("op", "") : "";
      if (op == "ping") {
        if (!conn.send_json({{"node", self}, {"version", kVersion}, {"peer", conn.peer_name()}})) {
          return;
        }
        continue;
      }
      if (op == "group.members" || op == "group.freeze") {
        serve_group_request(conn, *req, config_, runc_, log_);
        if (op == "group.freeze") return;  // a session is one connection
        continue;
      }
      if (op == "pages.read") {
        if (!serve_pages_read(conn, *req)) return;
        continue;
      }
      if (op == "migrate.offer") {
        serve_migrate_session(conn, *req, config_, log_);
        return;  // a session is one connection
      }
      (void)conn.send_json({{"error", "unknown request \"" + op + "\""}});
      return;
    }
  };
  server_ = std::make_unique<PeerServer>(
      *ctx, std::move(allowed), std::chrono::seconds(config_.peers.timeout_seconds), handler,
      [this](const std::string& m) { log_(LogLevel::kWarn, "peers: " + m); });
  if (auto ok = server_->start(config_.peers.listen); !ok) {
    server_.reset();
    return std::unexpected(ok.error().wrap("peers"));
  }
  log_(LogLevel::kInfo, fmt::format("peers: node {} listening on {} ({} known peer(s))", self,
                                    config_.peers.listen, config_.peers.nodes.size()));
  return {};
}

void PeerListener::stop() {
  if (server_) server_->stop();
  server_.reset();
}

}  // namespace arch::agent
