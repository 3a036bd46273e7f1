// PeerRoutes: archd's side of the peer channel ([peers] listen): the TLS listener and what
// an authenticated peer may ask (ping; a cross-node group checkpoint's requests for the
// owner and group it names, peer/group_peers.h).
#pragma once

#include <memory>
#include <string>

#include "agent.h"
#include "base/error.h"
#include "config/node_config.h"

namespace arch {
class PeerServer;
}

namespace arch::agent {

/// The listener, when [peers] listen is set.
class PeerListener {
 public:
  PeerListener(const NodeConfig& config, std::string runc, Logger log);
  ~PeerListener();
  /// Issues this node's certificate when it has none usable (peer/peer_cert.h), then listens
  /// on [peers] listen. Nothing when listen is empty.
  Result<void> start();
  void stop();

 private:
  const NodeConfig& config_;
  std::string runc_;
  Logger log_;
  std::unique_ptr<PeerServer> server_;
};

}  // namespace arch::agent
