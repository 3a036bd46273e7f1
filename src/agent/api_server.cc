// ApiServer / MetricsServer: the routes over cpp-httplib. The handlers only translate
// between HTTP and the Agent's calls.
#include "api_server.h"

#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>

#include "base/file_util.h"
#include "connection_gate.h"
#include "http_reply.h"
#include "private_dir.h"
#include "status_page.h"

namespace arch::agent {
namespace {

using nlohmann::json;

// Parses the optional JSON body of POST /v1/node/drain.
Result<DrainRequest> drain_request(const httplib::Request& req) {
  DrainRequest r;
  if (req.body.empty()) return r;
  auto j = json::parse(req.body, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return fail(ErrorKind::kInvalidInput, "body is not a JSON object");
  if (auto it = j.find("reason"); it != j.end()) {
    if (!it->is_string()) return fail(ErrorKind::kInvalidInput, "reason must be a string");
    r.reason = it->get<std::string>();
  }
  if (auto it = j.find("deadline_seconds"); it != j.end()) {
    if (!it->is_number())
      return fail(ErrorKind::kInvalidInput, "deadline_seconds must be a number");
    r.deadline_seconds = it->get<double>();
  }
  return r;
}

uint64_t query_number(const httplib::Request& req, const char* name, uint64_t fallback) {
  if (!req.has_param(name)) return fallback;
  std::string v = req.get_param_value(name);
  char* end = nullptr;
  unsigned long long n = std::strtoull(v.c_str(), &end, 10);
  return (v.empty() || *end != '\0') ? fallback : n;
}

// Does something answer on the unix socket `path`?
bool socket_answers(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  return ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
}

// Makes `path` free for a new socket: its directory private, no live or foreign file there.
Result<void> prepare_socket_path(const std::string& path) {
  if (path.size() >= sizeof(sockaddr_un{}.sun_path)) return fail("socket path too long: " + path);
  std::string dir = dirname_of(path);
  if (auto made = make_private_dirs(dir); !made) return made;
  if (auto ok = check_private_dir(dir); !ok)
    return std::unexpected(ok.error().wrap("socket directory"));
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    return fail_errno("lstat " + path);
  }
  if (!S_ISSOCK(st.st_mode)) return fail(path + " exists and is not a socket: not replacing it");
  if (socket_answers(path)) return fail("another archd is listening on " + path);
  if (::unlink(path.c_str()) != 0) return fail_errno("remove stale socket " + path);
  return {};
}

// Is `fd` a unix socket whose own name is `path` (a connection accepted on it)?
bool unix_socket_named(int fd, const std::string& path) {
  sockaddr_un addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return false;
  return addr.sun_family == AF_UNIX && len > offsetof(sockaddr_un, sun_path) &&
         std::strncmp(addr.sun_path, path.c_str(), sizeof addr.sun_path) == 0;
}

// Is `fd` a TCP socket on local port `port` (a connection accepted on it)?
bool tcp_socket_on_port(int fd, int port) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return false;
  if (addr.ss_family == AF_INET)
    return ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port) == port;
  if (addr.ss_family == AF_INET6)
    return ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port) == port;
  return false;
}

constexpr std::size_t kMaxConnections = 16;
constexpr std::chrono::seconds kConnectionDeadline{10};

}  // namespace

Result<std::pair<std::string, int>> parse_host_port(const std::string& address) {
  std::string host, port;
  if (address.starts_with("[")) {
    auto close = address.find("]:");
    if (close == std::string::npos) return fail("bad address '" + address + "': want [v6]:port");
    host = address.substr(1, close - 1);
    port = address.substr(close + 2);
  } else {
    auto colon = address.rfind(':');
    if (colon == std::string::npos) return fail("bad address '" + address + "': want host:port");
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
  }
  char* end = nullptr;
  long n = std::strtol(port.c_str(), &end, 10);
  if (host.empty() || port.empty() || *end != '\0' || n < 1 || n > 65535) {
    return fail("bad address '" + address + "': want host:port with a port from 1 to 65535");
  }
  return std::pair{host, static_cast<int>(n)};
}

// ---------------------------------------------------------------- HttpServer

HttpServer::HttpServer() : server_(std::make_unique<httplib::Server>()) {
  server_->set_keep_alive_max_count(16);
  server_->set_keep_alive_timeout(2);
  server_->set_read_timeout(5, 0);
  server_->set_write_timeout(5, 0);
  server_->new_task_queue = [this] {
    return new ConnectionGate({kMaxConnections, kConnectionDeadline},
                              [this](int fd) { return is_accepted_ && is_accepted_(fd); });
  };
  server_->set_payload_max_length(64 << 10);
  server_->set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "internal error";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        reply(res, 500, {{"error", what}});
      });
}

HttpServer::~HttpServer() {
  stop();
}

void HttpServer::run() {
  thread_ = std::thread([this] {
    server_->listen_after_bind();
    if (!stopping_) {
      failed_ = true;
      ::kill(::getpid(), SIGTERM);
    }
  });
}

void HttpServer::stop() {
  stopping_ = true;
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

// ---------------------------------------------------------------- ApiServer

ApiServer::ApiServer(Agent& agent) {
  auto& s = *server_;
  s.set_address_family(AF_UNIX);
  s.Get("/v1/node/status", [&agent](const httplib::Request&, httplib::Response& res) {
    reply(res, 200, agent.status());
  });
  s.Post("/v1/node/drain", [&agent](const httplib::Request& req, httplib::Response& res) {
    auto request = drain_request(req);
    if (!request) return reply_error(res, request.error());
    auto d = agent.drain(std::move(*request));
    if (!d) return reply_error(res, d.error());
    reply(res, 202,
          {{"drain_id", d->id},
           {"draining", true},
           {"reason", d->reason},
           {"deadline_seconds", d->deadline_seconds},
           {"state", d->state}});
  });
  s.Post("/v1/node/undrain", [&agent](const httplib::Request&, httplib::Response& res) {
    reply(res, 200, agent.undrain());
  });
  s.Get(R"(/v1/drains/(\d+))", [&agent](const httplib::Request& req, httplib::Response& res) {
    auto d = agent.drain_record(std::strtoll(req.matches[1].str().c_str(), nullptr, 10));
    if (!d)
      return reply_error(res, Error(ErrorKind::kNotFound, "no drain " + req.matches[1].str()));
    reply(res, 200, *d);
  });
  s.Get("/v1/events", [&agent](const httplib::Request& req, httplib::Response& res) {
    reply(res, 200,
          agent.events(query_number(req, "since", 0),
                       std::min<uint64_t>(query_number(req, "limit", 1000), 1000)));
  });
  s.Get("/metrics", [&agent](const httplib::Request&, httplib::Response& res) {
    res.set_content(agent.metrics(), kMetricsContentType);
  });
  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (res.body.empty()) {
      reply(res, res.status,
            {{"error", std::to_string(res.status) + " for " + req.method + " " + req.path}});
    }
  });
}

ApiServer::~ApiServer() {
  shutdown();
}

Result<void> ApiServer::start(const std::string& socket_path) {
  if (auto ready = prepare_socket_path(socket_path); !ready) return ready;
  if (!server_->bind_to_port(socket_path, 80)) return fail_errno("listen on " + socket_path);
  path_ = socket_path;
  is_accepted_ = [path = socket_path](int fd) { return unix_socket_named(fd, path); };
  if (::chmod(path_.c_str(), 0600) != 0) return fail_errno("chmod " + path_);
  run();
  return {};
}

void ApiServer::shutdown() {
  stop();
  if (!path_.empty()) {
    ::unlink(path_.c_str());
    path_.clear();
  }
}

// ---------------------------------------------------------------- MetricsServer

MetricsServer::MetricsServer(Agent& agent) {
  server_->Get("/metrics", [&agent](const httplib::Request&, httplib::Response& res) {
    res.set_content(agent.metrics(), kMetricsContentType);
  });
  if (agent.config().agent.status_page) {
    server_->Get("/status", [&agent](const httplib::Request&, httplib::Response& res) {
      res.set_header("Content-Security-Policy", kStatusPagePolicy);
      res.set_header("X-Content-Type-Options", "nosniff");
      res.set_header("Cache-Control", "no-store");
      res.set_content(render_status_page(agent.status()), "text/html; charset=utf-8");
    });
  }
}

Result<void> MetricsServer::start(const std::string& address) {
  auto hp = parse_host_port(address);
  if (!hp) return std::unexpected(hp.error().wrap("[agent] metrics_address"));
  if (!server_->bind_to_port(hp->first, hp->second)) {
    return fail_errno("listen on " + address + " for metrics");
  }
  is_accepted_ = [port = hp->second](int fd) { return tcp_socket_on_port(fd, port); };
  run();
  return {};
}

}  // namespace arch::agent
