// PeerTls: the authenticated channel between archd instances: mutual TLS 1.3 over TCP, both
// sides presenting a node certificate from a CA derived from the node key (peer_cert.h),
// carrying length-prefixed frames.
//
// Trust: a connection is accepted only when the other side's certificate chains to one of
// this node's derived CAs (so it holds the node key) and names the expected node: the
// client checks the server's DNS name against the peer it dialled; the server takes the
// client's name from its certificate and refuses a name its [peers] nodes does not list.
// Nothing else is trusted (no system CAs, no other certificate), TLS below 1.3 is refused.
// Frames: 1 type byte, 4 length bytes (big-endian), payload. kJson: one JSON value, at most
// kMaxJsonFrame bytes; kBulk: a chunk of a byte stream, at most kMaxBulkFrame bytes (an empty
// one ends the stream; for bulk transfers such as images, issue 16). A frame over its cap,
// of an unknown type, or a read or write that does not finish within the timeout ends the
// connection.
#pragma once

#include <openssl/ssl.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"
#include "peer/peer_cert.h"

namespace arch {

inline constexpr std::size_t kMaxJsonFrame = std::size_t{1} << 20;
inline constexpr std::size_t kMaxBulkFrame = std::size_t{4} << 20;

enum class FrameType : unsigned char { kJson = 1, kBulk = 2 };

struct Frame {
  FrameType type = FrameType::kJson;
  std::string payload;
};

struct SslCtxFree {
  void operator()(SSL_CTX* p) const { SSL_CTX_free(p); }
};
struct SslFree {
  void operator()(SSL* p) const { SSL_free(p); }
};
using SslCtxPtr = std::shared_ptr<SSL_CTX>;

/// A TLS context for one side: the identity's key and certificate, its trusted CAs only,
/// TLS 1.3 only, the peer's certificate required.
Result<SslCtxPtr> make_peer_context(const PeerIdentity& identity, bool server);

/// One established, authenticated connection. Move-only.
class PeerConnection {
 public:
  /// Dials `host`:`port` and expects the server's certificate to name `node`.
  static Result<PeerConnection> connect(const SslCtxPtr& ctx, const std::string& node,
                                        const std::string& host, int port,
                                        std::chrono::milliseconds timeout);
  /// The server side of an accepted socket: handshake, then the client's node name is read
  /// from its certificate; refused when `allowed` is non-empty and does not list it.
  static Result<PeerConnection> accept(const SslCtxPtr& ctx, UniqueFd fd,
                                       const std::vector<std::string>& allowed,
                                       std::chrono::milliseconds timeout);
  PeerConnection(PeerConnection&&) noexcept = default;
  PeerConnection& operator=(PeerConnection&&) noexcept = default;
  ~PeerConnection();

  /// The other node's name (from its verified certificate).
  [[nodiscard]] const std::string& peer_name() const { return peer_; }
  /// The read and write timeout from now on.
  void set_timeout(std::chrono::milliseconds timeout);

  Result<void> send(FrameType type, std::string_view payload);
  Result<void> send_json(const nlohmann::json& value);
  /// The next frame (any type).
  Result<Frame> receive();
  /// The next frame, which must be a JSON one.
  Result<nlohmann::json> receive_json();
  /// send_json(request), then receive_json(); a reply {"error": "..."} is returned as an error.
  Result<nlohmann::json> call(const nlohmann::json& request);
  /// Closes the connection (TLS close_notify, then the socket).
  void close();

 private:
  PeerConnection() = default;
  Result<void> write_bytes(const char* data, std::size_t n);
  Result<void> read_bytes(char* data, std::size_t n);
  Error io_error(const char* what, int ret);
  SslCtxPtr ctx_;
  std::unique_ptr<SSL, SslFree> ssl_;
  UniqueFd fd_;
  std::string peer_;
  bool broken_ = false;
};

/// archd's TLS listener: accepts on an address, authenticates each connection in a thread
/// of its own (at most kMaxPeerConnections at once; more are closed at once) and hands it to
/// the handler, which runs until it returns (the connection is then closed).
class PeerServer {
 public:
  static constexpr std::size_t kMaxPeerConnections = 16;
  using Handler = std::function<void(PeerConnection&)>;
  /// Messages about refused connections (for archd's log).
  using Logger = std::function<void(const std::string&)>;

  PeerServer(SslCtxPtr ctx, std::vector<std::string> allowed, std::chrono::milliseconds timeout,
             Handler handler, Logger log = {});
  ~PeerServer();
  PeerServer(const PeerServer&) = delete;
  PeerServer& operator=(const PeerServer&) = delete;

  /// Binds "host:port" ("[v6]:port"; port 0: any, see port()) and starts accepting.
  Result<void> start(const std::string& address);
  /// The bound port.
  [[nodiscard]] int port() const { return port_; }
  /// Stops accepting, cuts open connections (their handlers see errors) and joins.
  void stop();

 private:
  void accept_loop();
  void serve(UniqueFd fd);
  SslCtxPtr ctx_;
  std::vector<std::string> allowed_;
  std::chrono::milliseconds timeout_;
  Handler handler_;
  Logger log_;
  UniqueFd listen_fd_;
  UniqueFd wake_fd_;
  int port_ = 0;
  std::thread acceptor_;
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;  // Below.
  struct Active {
    std::thread thread;
    int fd = -1;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::list<Active> active_;
};

/// Splits "host:port" / "[v6]:port".
Result<std::pair<std::string, int>> split_host_port(const std::string& address);

}  // namespace arch
