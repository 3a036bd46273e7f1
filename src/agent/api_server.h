// ApiServer: archd's local API, HTTP/1.1 + JSON on a root-only unix socket (cpp-httplib),
// and MetricsServer: GET /metrics on a TCP address. See README.md in this directory for
// the endpoints. Errors are answered as {"error": "..."} with 400, 404, 409 or 500.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "agent.h"
#include "base/error.h"

namespace httplib {
class Server;
}

namespace arch::agent {

/// One HTTP server and the thread that runs it. Its connections are bounded (see
/// connection_gate.h): at most kMaxConnections at once, each cut kConnectionDeadline
/// after its accept, with read and write timeouts on every call.
class HttpServer {
 public:
  HttpServer();
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  /// Stops accepting, finishes the requests in progress and joins the thread.
  void stop();
  /// True when the server's loop ended without stop() (it then raised SIGTERM).
  [[nodiscard]] bool failed() const { return failed_; }

 protected:
  /// Runs the bound server in a thread; if its loop ends by itself, SIGTERM is raised so
  /// that main shuts archd down.
  void run();
  std::unique_ptr<httplib::Server> server_;
  /// Recognises the server's accepted sockets by their local address (set before run()).
  std::function<bool(int fd)> is_accepted_;

 private:
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> failed_{false};
};

/// The local API on a unix socket.
class ApiServer : public HttpServer {
 public:
  explicit ApiServer(Agent& agent);
  ~ApiServer();
  /// Creates the socket's directory (0700) when missing (an existing one must be root's and
  /// not group/other-writable), replaces a stale socket (refusing when another archd
  /// answers on it), binds (0600) and starts serving.
  Result<void> start(const std::string& socket_path);
  /// stop() and removes the socket.
  void shutdown();
  /// The server, for other components to add their routes before start().
  httplib::Server& routes() { return *server_; }

 private:
  std::string path_;
};

/// GET /metrics on a TCP address ("127.0.0.1:9477", "[::1]:9477").
class MetricsServer : public HttpServer {
 public:
  explicit MetricsServer(Agent& agent);
  Result<void> start(const std::string& address);
};

/// Splits "host:port" / "[v6]:port"; the port must be 1-65535.
Result<std::pair<std::string, int>> parse_host_port(const std::string& address);

}  // namespace arch::agent
