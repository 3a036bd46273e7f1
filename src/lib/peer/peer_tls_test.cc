// PeerTls and PeerCert with real OpenSSL: a handshake between two nodes of one node key,
// and the attacks the channel must refuse (another key's CA, a wrong name, an expired
// certificate, an oversized frame, a client that does not speak TLS).
#include "peer/peer_tls.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <ctime>
#include <mutex>
#include <optional>
#include <thread>

#include "base/temp_dir.h"
#include "peer/peer_cert.h"

namespace arch {
namespace {

using namespace std::chrono_literals;

NodeKey key_of(char fill) {
  std::string secret(kNodeKeyBytes, fill);
  return NodeKey{node_key_id(secret), secret};
}

// An identity for `name` from `issuer`'s CA, trusting the CAs of `trusted`.
PeerIdentity identity(const NodeKey& issuer, const std::string& name,
                      const std::vector<NodeKey>& trusted, std::time_t not_before = 0,
                      std::time_t not_after = 0) {
  std::time_t now = std::time(nullptr);
  auto ca = derive_peer_ca(issuer);
  EXPECT_TRUE(ca) << ca.error().message();
  auto key = generate_peer_key();
  EXPECT_TRUE(key);
  auto cert = issue_peer_certificate(*ca, key->get(), name, not_before ? not_before : now - 60,
                                     not_after ? not_after : now + 3600);
  EXPECT_TRUE(cert) << cert.error().message();
  PeerIdentity id;
  id.name = name;
  id.key = std::move(*key);
  id.cert = std::move(*cert);
  for (const auto& k : trusted) id.trusted.push_back(std::move(derive_peer_ca(k)->cert));
  return id;
}

// A server that answers {"op":"ping"} with {"pong": <client name>} and records what it saw.
struct EchoServer {
  std::mutex mutex;
  std::condition_variable cv;
  std::vector<std::string> clients;
  std::vector<std::string> errors;
  std::vector<std::string> refused;
  std::unique_ptr<PeerServer> server;

  EchoServer(const PeerIdentity& id, std::vector<std::string> allowed = {}) {
    auto ctx = make_peer_context(id, true);
    EXPECT_TRUE(ctx) << ctx.error().message();
    server = std::make_unique<PeerServer>(
        *ctx, std::move(allowed), 2s,
        [this](PeerConnection& c) {
          for (;;) {
            auto req = c.receive_json();
            std::lock_guard lock(mutex);
            if (!req) {
              errors.push_back(req.error().message());
              cv.notify_all();
              return;
            }
            clients.push_back(c.peer_name());
            cv.notify_all();
            if (!c.send_json({{"pong", c.peer_name()}})) return;
          }
        },
        [this](const std::string& m) {
          std::lock_guard lock(mutex);
          refused.push_back(m);
          cv.notify_all();
        });
    auto ok = server->start("127.0.0.1:0");
    EXPECT_TRUE(ok) << ok.error().message();
  }
  // Waits until `pred` holds (under the lock), at most 5 s.
  template <class P>
  bool wait(P pred) {
    std::unique_lock lock(mutex);
    return cv.wait_for(lock, 5s, pred);
  }
};

Result<PeerConnection> dial(const PeerIdentity& id, const std::string& expect, int port) {
  auto ctx = make_peer_context(id, false);
  if (!ctx) return std::unexpected(ctx.error());
  return PeerConnection::connect(*ctx, expect, "127.0.0.1", port, 2s);
}

TEST(PeerCert, TheCaIsDerivedDeterministicallyFromTheNodeKey) {
  auto a1 = derive_peer_ca(key_of('a'));
  auto a2 = derive_peer_ca(key_of('a'));
  auto b = derive_peer_ca(key_of('b'));
  ASSERT_TRUE(a1 && a2 && b);
  EXPECT_EQ(*certificate_pem(a1->cert.get()), *certificate_pem(a2->cert.get()));
  EXPECT_NE(*certificate_pem(a1->cert.get()), *certificate_pem(b->cert.get()));
  EXPECT_EQ(X509_check_ca(a1->cert.get()), 1);
}

TEST(PeerCert, RefusesANodeNameThatIsNotADnsName) {
  auto ca = derive_peer_ca(key_of('a'));
  auto key = generate_peer_key();
  for (const char* bad : {"", "Node_A", "a/b", "-a", "a..b/../c"}) {
    EXPECT_FALSE(issue_peer_certificate(*ca, key->get(), bad, 0, 1)) << bad;
  }
}

TEST(PeerTls, NodesOfOneKeyHandshakeAndKnowEachOthersNames) {
  NodeKey k = key_of('k');
  EchoServer srv(identity(k, "node-b", {k}));
  auto c = dial(identity(k, "node-a", {k}), "node-b", srv.server->port());
  ASSERT_TRUE(c) << c.error().message();
  auto reply = c->call({{"op", "ping"}});
  ASSERT_TRUE(reply) << reply.error().message();
  EXPECT_EQ((*reply)["pong"], "node-a");  // the server took the name from the client's cert
  EXPECT_EQ(c->peer_name(), "node-b");
  auto again = c->call({{"op", "ping"}});  // the connection carries many frames
  ASSERT_TRUE(again);
  EXPECT_EQ(srv.clients.size(), 2u);
}

TEST(PeerTls, ACertificateFromAnotherNodeKeyIsRefusedBothWays) {
  NodeKey k = key_of('k'), other = key_of('o');
  {
    // A client whose CA is another key's: the server refuses it.
    EchoServer srv(identity(k, "node-b", {k}));
    auto c = dial(identity(other, "node-a", {k, other}), "node-b", srv.server->port());
    if (c) {
      EXPECT_FALSE(c->call({{"op", "ping"}}));
    }
    EXPECT_TRUE(srv.wait([&] { return !srv.refused.empty(); }));
    EXPECT_TRUE(srv.clients.empty());
  }
  {
    // A server whose CA is another key's: the client refuses it.
    EchoServer srv(identity(other, "node-b", {k, other}));
    auto c = dial(identity(k, "node-a", {k}), "node-b", srv.server->port());
    ASSERT_FALSE(c);
    EXPECT_NE(c.error().message().find("refused"), std::string::npos) << c.error().message();
    EXPECT_TRUE(srv.clients.empty());
  }
}

TEST(PeerTls, AServerWithTheWrongNodeNameIsRefused) {
  NodeKey k = key_of('k');
  EchoServer srv(identity(k, "node-c", {k}));  // a node of the key, but not the one dialled
  auto c = dial(identity(k, "node-a", {k}), "node-b", srv.server->port());
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message().find("refused"), std::string::npos) << c.error().message();
}

TEST(PeerTls, AClientTheServerDoesNotListIsRefused) {
  NodeKey k = key_of('k');
  EchoServer srv(identity(k, "node-b", {k}), {"node-a"});
  auto c = dial(identity(k, "node-x", {k}), "node-b", srv.server->port());
  if (c) {
    EXPECT_FALSE(c->call({{"op", "ping"}}));
  }
  EXPECT_TRUE(srv.wait([&] { return !srv.refused.empty(); }));
  EXPECT_NE(srv.refused.front().find("not one of this node's peers"), std::string::npos)
      << srv.refused.front();
  EXPECT_TRUE(srv.clients.empty());
  auto ok = dial(identity(k, "node-a", {k}), "node-b", srv.server->port());
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_TRUE(ok->call({{"op", "ping"}}));
}

TEST(PeerTls, AnExpiredCertificateIsRefusedBothWays) {
  NodeKey k = key_of('k');
  std::time_t now = std::time(nullptr);
  {
    EchoServer srv(identity(k, "node-b", {k}));
    auto c = dial(identity(k, "node-a", {k}, now - 7200, now - 3600), "node-b", srv.server->port());
    if (c) {
      EXPECT_FALSE(c->call({{"op", "ping"}}));
    }
    EXPECT_TRUE(srv.wait([&] { return !srv.refused.empty(); }));
    EXPECT_NE(srv.refused.front().find("expired"), std::string::npos) << srv.refused.front();
    EXPECT_TRUE(srv.clients.empty());
  }
  {
    EchoServer srv(identity(k, "node-b", {k}, now - 7200, now - 3600));
    auto c = dial(identity(k, "node-a", {k}), "node-b", srv.server->port());
    ASSERT_FALSE(c);
    EXPECT_NE(c.error().message().find("expired"), std::string::npos) << c.error().message();
  }
}

int tcp_connect(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  return fd;
}

TEST(PeerTls, AnOversizedFrameEndsTheConnection) {
  NodeKey k = key_of('k');
  EchoServer srv(identity(k, "node-b", {k}));
  auto c = dial(identity(k, "node-a", {k}), "node-b", srv.server->port());
  ASSERT_TRUE(c);
  // The sender refuses to make one.
  EXPECT_FALSE(c->send(FrameType::kJson, std::string(kMaxJsonFrame + 1, ' ')));
  // A receiver refuses a header that announces one (2 MiB of JSON), sent by a node of the
  // key through its own TLS session, without reading it, and closes the connection.
  auto ctx = make_peer_context(identity(k, "node-a", {k}), false);
  ASSERT_TRUE(ctx);
  int fd = tcp_connect(srv.server->port());
  SSL* ssl = SSL_new(ctx->get());
  SSL_set_fd(ssl, fd);
  ASSERT_EQ(SSL_connect(ssl), 1);
  const char forged[] = {static_cast<char>(FrameType::kJson), 0, 0x20, 0, 0, '{'};
  ASSERT_EQ(SSL_write(ssl, forged, sizeof forged), static_cast<int>(sizeof forged));
  EXPECT_TRUE(srv.wait([&] { return !srv.errors.empty(); }));
  EXPECT_NE(srv.errors.front().find("over the limit"), std::string::npos) << srv.errors.front();
  char buf[16];
  EXPECT_LE(SSL_read(ssl, buf, sizeof buf), 0);  // closed, nothing answered
  SSL_free(ssl);
  ::close(fd);
  ERR_clear_error();
  EXPECT_TRUE(srv.clients.empty());
}

TEST(PeerTls, APlainTcpClientIsDropped) {
  NodeKey k = key_of('k');
  EchoServer srv(identity(k, "node-b", {k}));
  int fd = tcp_connect(srv.server->port());
  const char req[] = "{\"op\":\"ping\"}\nGET / HTTP/1.0\r\n\r\n";
  ASSERT_GT(::write(fd, req, sizeof req - 1), 0);
  // The server closes it (no TLS, no answer beyond an alert): EOF or a reset within 5 s.
  pollfd p{fd, POLLIN, 0};
  char buf[4096];
  bool closed = false;
  for (int i = 0; i < 50 && !closed; ++i) {
    if (::poll(&p, 1, 100) > 0) {
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) closed = true;
      if (n > 0) {
        EXPECT_EQ(std::string(buf, static_cast<std::size_t>(n)).find("pong"), std::string::npos);
      }
    }
  }
  ::close(fd);
  EXPECT_TRUE(closed);
  EXPECT_TRUE(srv.wait([&] { return !srv.refused.empty(); }));
  EXPECT_TRUE(srv.clients.empty());
}

TEST(PeerTls, WritingToAClosedConnectionFailsAndTheProcessLives) {
  // SIGPIPE (archctl does not ignore it) must not end the process: the write fails instead.
  NodeKey k = key_of('k');
  auto ctx = make_peer_context(identity(k, "node-b", {k}), true);
  ASSERT_TRUE(ctx);
  PeerServer srv(*ctx, {}, 2s, [](PeerConnection& c) { c.close(); });
  ASSERT_TRUE(srv.start("127.0.0.1:0"));
  auto c = dial(identity(k, "node-a", {k}), "node-b", srv.port());
  ASSERT_TRUE(c) << c.error().message();
  bool failed = false;
  for (int i = 0; i < 200 && !failed; ++i) {
    failed = !c->send(FrameType::kBulk, std::string(64 * 1024, 'x'));
    if (!failed) std::this_thread::sleep_for(5ms);
  }
  EXPECT_TRUE(failed);
}

TEST(PeerCert, TheIdentityIsIssuedOnceKeptAndRenewed) {
  TempDir dir;
  NodeConfig config;
  config.keys.dir = dir.path() + "/keys";
  config.peers.dir = dir.path() + "/peers";
  config.peers.node_name = "node-a";
  ASSERT_TRUE(init_node_keys(config.keys.dir));
  PeerCertInfo first, second, renewed;
  auto id = ensure_peer_identity(config, false, &first);
  ASSERT_TRUE(id) << id.error().message();
  EXPECT_TRUE(first.issued);
  EXPECT_EQ(first.name, "node-a");
  struct stat st {};
  ASSERT_EQ(::stat((config.peers.dir + "/node.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_TRUE(ensure_peer_identity(config, false, &second));
  EXPECT_FALSE(second.issued);
  EXPECT_EQ(second.fingerprint, first.fingerprint);
  ASSERT_TRUE(ensure_peer_identity(config, true, &renewed));
  EXPECT_TRUE(renewed.issued);
  EXPECT_NE(renewed.fingerprint, first.fingerprint);
  // Another name: reissued for it.
  config.peers.node_name = "node-z";
  PeerCertInfo moved;
  ASSERT_TRUE(ensure_peer_identity(config, false, &moved));
  EXPECT_TRUE(moved.issued);
  EXPECT_EQ(moved.name, "node-z");
  // A key directory others can read is refused.
  ASSERT_EQ(::chmod(config.peers.dir.c_str(), 0755), 0);
  EXPECT_FALSE(load_peer_identity(config));
}

}  // namespace
}  // namespace arch
