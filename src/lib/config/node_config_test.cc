// Tests for NodeConfig: parsing, trust checks and in-place edits.
#include "config/node_config.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "base/temp_dir.h"

namespace arch {
namespace {

TEST(NodeConfig, ParsesEveryKey) {
  auto c = parse_node_config(
      "# comment\n[runtime]\nrunc = /opt/runc\ncriu = /opt/criu/bin/criu\n\n"
      "[log]\nlevel = debug ; trailing comment\nfile = /var/log/x.log   # inline comment\n");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->runc, "/opt/runc");
  EXPECT_EQ(c->criu, "/opt/criu/bin/criu");
  EXPECT_EQ(c->log_level, LogLevel::kDebug);
  EXPECT_EQ(c->log_file, "/var/log/x.log");
}

TEST(NodeConfig, StoreStateAndRestoreSections) {
  auto c = parse_node_config(
      "[store]\npath = /ckpt\nkeep = 3\n[state]\ndir = /run/x\n[restore]\non_failure = fail\n");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->store_path, "/ckpt");
  EXPECT_EQ(c->keep, 3);
  EXPECT_EQ(c->state_dir, "/run/x");
  EXPECT_TRUE(c->restore_failure_fails);
  EXPECT_FALSE(parse_node_config("[store]\nkeep = 0\n"));
  EXPECT_FALSE(parse_node_config("[restore]\non_failure = maybe\n"));
  EXPECT_FALSE(c->restore_lazy_pages);
  auto lazy = parse_node_config("[restore]\nlazy_pages = true\n");
  ASSERT_TRUE(lazy) << lazy.error().message();
  EXPECT_TRUE(lazy->restore_lazy_pages);
  EXPECT_FALSE(parse_node_config("[restore]\nlazy_pages = yes\n"));
  EXPECT_TRUE(c->groups_kubernetes_pods);  // a pod's containers are one group by default
  auto pods = parse_node_config("[groups]\nkubernetes_pods = false\n");
  ASSERT_TRUE(pods) << pods.error().message();
  EXPECT_FALSE(pods->groups_kubernetes_pods);
  EXPECT_FALSE(parse_node_config("[groups]\nkubernetes_pods = 1\n"));
}

TEST(NodeConfig, KeysSection) {
  auto defaults = parse_node_config("");
  ASSERT_TRUE(defaults);
  EXPECT_EQ(defaults->keys.dir, "/etc/arch/keys");
  EXPECT_EQ(defaults->keys.active, "");
  auto c = parse_node_config("[keys]\ndir = /secrets/arch\nactive = 0123456789abcdef\n");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->keys.dir, "/secrets/arch");
  EXPECT_EQ(c->keys.active, "0123456789abcdef");
  EXPECT_FALSE(parse_node_config("[keys]\ndir = keys\n"));
}

TEST(NodeConfig, AgentSection) {
  auto c = parse_node_config(
      "[agent]\nsocket = /run/x.sock\nmetrics_address = 127.0.0.1:9999\n"
      "imds_endpoint = http://127.0.0.1:8111\nimds_poll_seconds = 3\nsafety_margin_seconds = 20\n"
      "rebalance_action = drain\nfinalize_parallel = 8\n");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->agent.socket, "/run/x.sock");
  EXPECT_EQ(c->agent.metrics_address, "127.0.0.1:9999");
  EXPECT_EQ(c->agent.imds_endpoint, "http://127.0.0.1:8111");
  EXPECT_EQ(c->agent.imds_poll_seconds, 3);
  EXPECT_EQ(c->agent.safety_margin_seconds, 20);
  EXPECT_EQ(c->agent.rebalance_action, "drain");
  EXPECT_EQ(c->agent.finalize_parallel, 8);
  EXPECT_EQ(c->agent.imds_token_ttl_seconds, 21600);
  EXPECT_FALSE(parse_node_config("[agent]\nimds_poll_seconds = 0\n"));
  EXPECT_FALSE(parse_node_config("[agent]\nimds_poll_seconds = 2x\n"));
  EXPECT_FALSE(parse_node_config("[agent]\nrebalance_action = panic\n"));
  EXPECT_FALSE(parse_node_config("[agent]\nstatus_page = maybe\n"));
  EXPECT_FALSE(parse_node_config("[agent]\nmetrics_max_keys = -1\n"));
  EXPECT_FALSE(parse_node_config("[agent]\nimds_endpoint = ftp://x\n"));
  EXPECT_FALSE(parse_node_config("[agent]\nsocket = relative.sock\n"));
}

TEST(NodeConfig, CheckpointTcpPolicy) {
  auto d = parse_node_config("");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->checkpoint.tcp, "auto");
  auto c = parse_node_config("[checkpoint]\ntcp = close\n");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->checkpoint.tcp, "close");
  auto bad = parse_node_config("[checkpoint]\ntcp = tcp-close\n");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("[checkpoint] tcp must be auto or restore or close or fail"),
            std::string::npos)
      << bad.error().message();
}

TEST(NodeConfig, CheckpointSection) {
  auto d = parse_node_config("");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->checkpoint.rootfs_zstd_level(), 0) << "the rootfs diff is uncompressed by default";
  EXPECT_EQ(d->checkpoint.pre_copy, "auto");
  EXPECT_EQ(d->agent.finalize_parallel, 0) << "0: sized to the machine";
  auto c = parse_node_config(
      "[checkpoint]\nzstd_level = 7\nrootfs_compression = zstd\nzstd_threads = 2\n"
      "pre_copy = off\n[agent]\nfinalize_parallel = 0\n");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->checkpoint.rootfs_zstd_level(), 7);
  EXPECT_EQ(c->checkpoint.zstd_threads, 2);
  EXPECT_EQ(c->checkpoint.pre_copy, "off");
  auto bad = parse_node_config("[checkpoint]\nrootfs_compression = lz4\n");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("[checkpoint] rootfs_compression must be none or zstd"),
            std::string::npos)
      << bad.error().message();
  auto level = parse_node_config("[checkpoint]\nzstd_level = 20\n");
  ASSERT_FALSE(level);
  EXPECT_NE(level.error().message().find("[checkpoint] zstd_level must be a whole number from 1"),
            std::string::npos)
      << level.error().message();
  EXPECT_FALSE(parse_node_config("[checkpoint]\npre_copy = sometimes\n"));
  EXPECT_EQ(d->checkpoint.network_lock, "skip");
  auto nft = parse_node_config("[checkpoint]\nnetwork_lock = nftables\n");
  ASSERT_TRUE(nft);
  EXPECT_EQ(nft->checkpoint.network_lock, "nftables");
  EXPECT_FALSE(parse_node_config("[checkpoint]\nnetwork_lock = off\n"));
  EXPECT_FALSE(parse_node_config("[agent]\nfinalize_parallel = -1\n"));
}

TEST(NodeConfig, GhostLimitAndFailedDumpsKept) {
  auto d = parse_node_config("");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->checkpoint.ghost_limit, uint64_t{64} << 20);
  EXPECT_EQ(d->checkpoint.failed_dumps_kept, 3);
  auto set = parse_node_config("[checkpoint]\nghost_limit = 1G\nfailed_dumps_kept = 0\n");
  ASSERT_TRUE(set);
  EXPECT_EQ(set->checkpoint.ghost_limit, uint64_t{1} << 30);
  EXPECT_EQ(set->checkpoint.failed_dumps_kept, 0);
  EXPECT_FALSE(parse_node_config("[checkpoint]\nghost_limit = 0\n"));
  EXPECT_FALSE(parse_node_config("[checkpoint]\nghost_limit = lots\n"));
  EXPECT_FALSE(parse_node_config("[checkpoint]\nfailed_dumps_kept = 101\n"));
}

TEST(NodeConfig, DefaultsWhenEmpty) {
  auto c = parse_node_config("");
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->runc.empty());
  EXPECT_EQ(c->log_level, LogLevel::kInfo);
  EXPECT_EQ(c->log_file, kDefaultLogFile);
}

TEST(NodeConfig, RestoreLimits) {
  auto d = parse_node_config("");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->limits.max_rootfs_bytes, uint64_t{64} << 30);
  EXPECT_EQ(d->limits.max_archive_bytes, uint64_t{256} << 30);
  EXPECT_EQ(d->limits.max_entries, 4000000u);
  auto c = parse_node_config(
      "[restore]\nmax_rootfs_bytes = 512M\nmax_archive_bytes = 4096\nmax_entries = 10\n");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->limits.max_rootfs_bytes, uint64_t{512} << 20);
  EXPECT_EQ(c->limits.max_archive_bytes, 4096u);
  EXPECT_EQ(c->limits.max_entries, 10u);
  auto t = parse_node_config("[restore]\nmax_archive_bytes = 2TiB\n");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->limits.max_archive_bytes, uint64_t{2} << 40);
  for (const char* bad :
       {"max_rootfs_bytes = 0", "max_rootfs_bytes = -1", "max_rootfs_bytes = 1X",
        "max_rootfs_bytes = 99999999999T", "max_entries = 1K", "max_archive_bytes = "}) {
    EXPECT_FALSE(parse_node_config(std::string("[restore]\n") + bad + "\n")) << bad;
  }
  auto text = parse_node_config(default_node_config_text());
  ASSERT_TRUE(text);
  EXPECT_EQ(text->limits.max_rootfs_bytes, d->limits.max_rootfs_bytes);
  EXPECT_EQ(text->limits.max_archive_bytes, d->limits.max_archive_bytes);
  EXPECT_EQ(text->limits.max_entries, d->limits.max_entries);
}

TEST(NodeConfig, EcsOwnersAreTheNodesChoice) {
  auto d = parse_node_config("");
  ASSERT_TRUE(d);
  EXPECT_FALSE(d->owners_ecs);
  EXPECT_EQ(d->docker_data_root, "/var/lib/docker");
  auto on = parse_node_config("[owners]\necs = true\n[docker]\ndata_root = /srv/docker\n");
  ASSERT_TRUE(on) << on.error().message();
  EXPECT_TRUE(on->owners_ecs);
  EXPECT_EQ(on->docker_data_root, "/srv/docker");
  EXPECT_FALSE(parse_node_config("[owners]\necs = yes\n"));
  EXPECT_FALSE(parse_node_config("[docker]\ndata_root = relative\n"));
  EXPECT_FALSE(parse_node_config("[docker]\ndata_root =\n"));
  auto text = parse_node_config(default_node_config_text());
  ASSERT_TRUE(text);
  EXPECT_FALSE(text->owners_ecs);
  EXPECT_EQ(text->docker_data_root, "/var/lib/docker");
}

TEST(NodeConfig, RejectsBadValuesWithTheLine) {
  auto level = parse_node_config("[log]\nlevel = loud\n");
  ASSERT_FALSE(level);
  EXPECT_NE(level.error().message().find("line 2"), std::string::npos);
  EXPECT_NE(level.error().message().find("loud"), std::string::npos);
  EXPECT_FALSE(parse_node_config("[runtime]\nrunc = relative/runc\n"));
  EXPECT_FALSE(parse_node_config("[runtime\nrunc = /x\n"));
}

class TrustTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = tmp_.path();
    ::chmod(dir_.c_str(), 0755);
    path_ = (dir_ / "arch.conf").string();
    std::ofstream(path_) << "[log]\nlevel = debug\n";
    ::chmod(path_.c_str(), 0644);
  }
  TempDir tmp_{"arch-conf-"};
  std::filesystem::path dir_;
  std::string path_;
};

TEST_F(TrustTest, UsesARootOwnedFile) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to own the file";
  auto loaded = load_node_config(path_);
  EXPECT_TRUE(loaded.from_file);
  EXPECT_TRUE(loaded.error.empty());
  EXPECT_TRUE(loaded.warnings.empty());
  EXPECT_EQ(loaded.config.log_level, LogLevel::kDebug);
}

TEST_F(TrustTest, IgnoresAWorldWritableFile) {
  ::chmod(path_.c_str(), 0666);
  auto loaded = load_node_config(path_);
  EXPECT_FALSE(loaded.from_file);
  EXPECT_NE(loaded.error.find("writable"), std::string::npos);
  EXPECT_NE(loaded.error.find("chmod go-w"), std::string::npos);
  EXPECT_EQ(loaded.config.log_level, LogLevel::kInfo);
}

TEST_F(TrustTest, IgnoresAFileInAWorldWritableDirectory) {
  ::chmod(dir_.c_str(), 0777);
  auto loaded = load_node_config(path_);
  EXPECT_FALSE(loaded.from_file);
  EXPECT_NE(loaded.error.find("directory"), std::string::npos);
}

TEST_F(TrustTest, IgnoresAFileOwnedBySomeoneElse) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to chown";
  ASSERT_EQ(::chown(path_.c_str(), 65534, 65534), 0);
  auto loaded = load_node_config(path_);
  EXPECT_FALSE(loaded.from_file);
  EXPECT_NE(loaded.error.find("not owned by root"), std::string::npos);
}

TEST_F(TrustTest, IgnoresASymlink) {
  auto link = (dir_ / "link.conf").string();
  std::filesystem::create_symlink(path_, link);
  auto loaded = load_node_config(link);
  EXPECT_FALSE(loaded.from_file);
  EXPECT_NE(loaded.error.find("symlink"), std::string::npos);
}

TEST_F(TrustTest, MalformedFileGivesDefaultsAndAnErrorWithTheLine) {
  std::ofstream(path_) << "[log]\n\nlevel = shouting\n";
  auto loaded = load_node_config(path_);
  EXPECT_FALSE(loaded.from_file);
  EXPECT_NE(loaded.error.find("line 3"), std::string::npos) << loaded.error;
  EXPECT_NE(loaded.error.find("shouting"), std::string::npos) << loaded.error;
  EXPECT_EQ(loaded.config.log_level, LogLevel::kInfo);
}

TEST(NodeConfig, MissingFileIsSilentUnlessNamed) {
  auto loaded = load_node_config("/nonexistent/arch.conf");
  EXPECT_FALSE(loaded.from_file);
  EXPECT_TRUE(loaded.error.empty());
  EXPECT_TRUE(loaded.warnings.empty());
  auto named = load_node_config("/nonexistent/arch.conf", true);
  EXPECT_FALSE(named.from_file);
  EXPECT_NE(named.error.find("no such file"), std::string::npos) << named.error;
}

TEST(NodeConfig, InlineCommentsAfterWhitespace) {
  auto c = parse_node_config(
      "[store]\npath = /ckpt   # where checkpoints go\nkeep = 3\t; how many\n"
      "[runtime]\nrunc = /opt/run#c\n  # an indented comment line\n");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->store_path, "/ckpt");
  EXPECT_EQ(c->keep, 3);
  EXPECT_EQ(c->runc, "/opt/run#c");  // no space before '#': part of the value
}

TEST(NodeConfig, UnknownKeysAndSectionsAreErrorsWithASuggestion) {
  auto key = parse_node_config("[store]\npath = /ckpt\nkeeep = 3\n");
  ASSERT_FALSE(key);
  EXPECT_NE(key.error().message().find("line 3"), std::string::npos) << key.error().message();
  EXPECT_NE(key.error().message().find("did you mean 'keep'"), std::string::npos)
      << key.error().message();
  auto section = parse_node_config("[restor]\non_failure = fail\n");
  ASSERT_FALSE(section);
  EXPECT_NE(section.error().message().find("did you mean 'restore'"), std::string::npos)
      << section.error().message();
  auto far = parse_node_config("[agent]\nfuture = 1\n");
  ASSERT_FALSE(far);
  EXPECT_NE(far.error().message().find("unknown key"), std::string::npos);
  // [roots] takes any valid name.
  auto roots = parse_node_config("[roots]\nefs = /mnt/efs\n");
  ASSERT_TRUE(roots) << roots.error().message();
}

TEST(NodeConfig, EveryHandledKeyIsKnown) {
  // A key the parser handles but the default text lacks would be refused as unknown.
  for (const char* text :
       {"[runtime]\ncriu_trial = /x.json\n",
        "[checkpoint]\nghost_limit = 8M\n",
        "[checkpoint]\nfailed_dumps_kept = 1\n",
        "[checkpoint]\npages_at_rest = encrypted\n",
        "[checkpoint]\npriority_max = 10\n",
        "[checkpoint]\ntcp = close\n",
        "[owners]\necs = true\n",
        "[docker]\ndata_root = /d\n",
        "[checkpoint]\ninterval = 15m\nmin_interval = 1s\n",
        "[agent]\nmetrics_max_keys = 5\n",
        "[agent]\nstatus_page = false\n",
        "[checkpoint]\nworkdir_capture = off\n",
        "[checkpoint]\nworkdir_capture = 1G\n",
        "[checkpoint]\ncontainer_interval = deny\n",
        "[restore]\ngroup_wait = 5\n",
        "[jobs]\nstream_images = true\n",
        "[restore]\ngroup_member_failure = keep\n",
        "[jobs]\nstream_compression = off\nstream_compression_level = 3\n",
        "[groups]\nkubernetes_pods = false\n",
        "[peers]\ndir = /p\nnode_name = a\nlisten = 0.0.0.0:7443\nnodes = b=10.0.0.2:7443\n"
        "timeout = 5\ncert_days = 30\n",
        "[peers]\nmigrate_ctr = /c\nmigrate_runtime = /r\nmigrate_runc_root = /x\n"
        "migrate_cgroup_parent = /g\n",
        "[peers]\nmigrate_docker = /d\nmigrate_docker_host = unix:///run/d.sock\n"
        "migrate_docker_runtime = arch\n"}) {
    auto c = parse_node_config(text);
    EXPECT_TRUE(c) << text << ": " << c.error().message();
  }
}

TEST(NodeConfig, MigrateDockerKeysParseAndRefuse) {
  auto d = parse_node_config("");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->peers.migrate_docker, "/usr/bin/docker");
  EXPECT_EQ(d->peers.migrate_docker_host, "unix:///var/run/docker.sock");
  EXPECT_EQ(d->peers.migrate_docker_runtime, "arch");
  auto c = parse_node_config(
      "[peers]\nmigrate_docker = /opt/docker\nmigrate_docker_host = tcp://10.0.0.1:2375\n"
      "migrate_docker_runtime = arch-runc\n");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->peers.migrate_docker, "/opt/docker");
  EXPECT_EQ(c->peers.migrate_docker_host, "tcp://10.0.0.1:2375");
  EXPECT_EQ(c->peers.migrate_docker_runtime, "arch-runc");
  for (const char* bad :
       {"[peers]\nmigrate_docker = docker\n", "[peers]\nmigrate_docker =\n",
        "[peers]\nmigrate_docker_host = /run/docker.sock\n", "[peers]\nmigrate_docker_host = -H\n",
        "[peers]\nmigrate_docker_runtime = -x\n", "[peers]\nmigrate_docker_runtime = a b\n",
        "[peers]\nmigrate_docker_runtime =\n"}) {
    EXPECT_FALSE(parse_node_config(bad)) << bad;
  }
}

TEST(NodeConfig, PeersParseAndRefuse) {
  auto c = parse_node_config(
      "[peers]\nnode_name = node-a\nnodes = b=10.0.0.2:7443, c=[::1]:9, d=h.example:1\n");
  ASSERT_TRUE(c) << c.error().message();
  ASSERT_EQ(c->peers.nodes.size(), 3u);
  EXPECT_EQ(c->peers.nodes[0], (NodeConfig::Peers::Node{"b", "10.0.0.2", 7443}));
  EXPECT_EQ(c->peers.nodes[1], (NodeConfig::Peers::Node{"c", "::1", 9}));
  EXPECT_EQ(c->peers.nodes[2].host, "h.example");
  EXPECT_EQ(peer_node_name(*c), "node-a");
  EXPECT_TRUE(NodeConfig{}.peers.listen.empty());  // off by default
  for (const char* bad :
       {"[peers]\nnodes = b=10.0.0.2\n", "[peers]\nnodes = B_x=h:1\n", "[peers]\nnodes = b=h:0\n",
        "[peers]\nnodes = b=h:1, b=g:2\n", "[peers]\nnode_name = ../x\n", "[peers]\ntimeout = 0\n",
        "[peers]\ndir = rel\n", "[peers]\nlisten = 7443\n"}) {
    EXPECT_FALSE(parse_node_config(bad)) << bad;
  }
}

TEST(NodeConfig, EveryDefaultKeyIsKnown) {
  // The default text is where known keys come from; it must parse to the defaults.
  auto c = parse_node_config(default_node_config_text());
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->keep, NodeConfig{}.keep);
}

TEST(NodeConfig, SetValueReplacesKeepsAndAppends) {
  std::string text = "# top\n[runtime]\nrunc = /r\n\n[log]\n# how loud\nlevel = info\n";
  std::string replaced = set_config_value(text, "log", "level", "debug");
  EXPECT_EQ(replaced, "# top\n[runtime]\nrunc = /r\n\n[log]\n# how loud\nlevel = debug\n");
  std::string added = set_config_value(replaced, "log", "file", "/x.log");
  EXPECT_EQ(added,
            "# top\n[runtime]\nrunc = /r\n\n[log]\n# how loud\nlevel = debug\nfile = /x.log\n");
  std::string inserted = set_config_value(text, "runtime", "criu", "/c");
  EXPECT_EQ(inserted,
            "# top\n[runtime]\nrunc = /r\ncriu = /c\n\n[log]\n# how loud\nlevel = info\n");
  std::string new_section = set_config_value("# only a comment\n", "log", "level", "warn");
  auto parsed = parse_node_config(new_section);
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->log_level, LogLevel::kWarn);
  EXPECT_EQ(new_section.find("# only a comment\n"), 0u);
}

TEST(NodeConfig, StreamCompressionDefaultsToAutoAndRefusesUnknownValues) {
  auto c = parse_node_config("");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->jobs.stream_compression, "auto");
  EXPECT_EQ(c->jobs.stream_compression_level, 0);
  auto z = parse_node_config("[jobs]\nstream_compression = zstd\nstream_compression_level = 19\n");
  ASSERT_TRUE(z) << z.error().message();
  EXPECT_EQ(z->jobs.stream_compression, "zstd");
  EXPECT_EQ(z->jobs.stream_compression_level, 19);
  for (const char* bad :
       {"[jobs]\nstream_compression = gzip\n", "[jobs]\nstream_compression = \n",
        "[jobs]\nstream_compression_level = 20\n", "[jobs]\nstream_compression_level = -1\n"}) {
    auto r = parse_node_config(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_NE(r.error().message().find("stream_compression"), std::string::npos)
        << r.error().message();
  }
}

}  // namespace
}  // namespace arch
