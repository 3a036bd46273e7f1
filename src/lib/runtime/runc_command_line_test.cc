// Tests for RuncCommandLine: runc 1.1's command line as containerd, dockerd and people write it.
#include "runtime/runc_command_line.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace arch {
namespace {

// Splits on single spaces (no argument in these tests contains one).
struct Argv {
  explicit Argv(const std::string& line) {
    words.push_back("arch-runc");
    std::istringstream in(line);
    for (std::string w; in >> w;) words.push_back(w);
    for (auto& w : words) ptrs.push_back(w.c_str());
  }
  std::vector<std::string> words;
  std::vector<const char*> ptrs;
};

struct Parsed {
  explicit Parsed(const std::string& line) : argv(line), cl(parse_runc_command_line(argv.ptrs)) {}
  Argv argv;
  RuncCommandLine cl;
};

TEST(RuncCommandLine, ContainerdShimCreate) {
  Parsed p(
      "--root /run/containerd/runc/default --log /b/log.json --log-format json create "
      "--bundle /b --pid-file /b/init.pid c1");
  const auto& cl = p.cl;
  EXPECT_TRUE(cl.exact) << cl.problem;
  EXPECT_EQ(cl.root, "/run/containerd/runc/default");
  EXPECT_EQ(cl.log, "/b/log.json");
  EXPECT_TRUE(cl.json_log());
  EXPECT_EQ(cl.subcommand, Subcommand::kCreate);
  EXPECT_EQ(cl.flag("bundle"), "/b");
  EXPECT_EQ(cl.flag("pid-file"), "/b/init.pid");
  EXPECT_EQ(cl.container_id(), "c1");
}

TEST(RuncCommandLine, EveryFlagForm) {
  for (const char* line : {"create --bundle=/b c1", "create --bundle /b c1", "create -bundle /b c1",
                           "create -bundle=/b c1", "create -b /b c1", "create --b=/b c1",
                           "create c1 --bundle /b", "create c1 -b=/b"}) {
    Parsed p(line);
    EXPECT_TRUE(p.cl.exact) << line << ": " << p.cl.problem;
    EXPECT_EQ(p.cl.flag("bundle"), "/b") << line;
    EXPECT_EQ(p.cl.container_id(), "c1") << line;
  }
}

TEST(RuncCommandLine, BooleanFlags) {
  Parsed p("delete -f c1");
  EXPECT_TRUE(p.cl.flag_set("force"));
  Parsed q("delete --force=false c1");
  EXPECT_FALSE(q.cl.flag_set("force"));
  EXPECT_TRUE(q.cl.exact);
  Parsed r("delete --force=maybe c1");
  EXPECT_FALSE(r.cl.exact);
  // A boolean flag never takes the next argument as its value.
  Parsed s("create --no-pivot --bundle /b c1");
  EXPECT_TRUE(s.cl.flag_set("no-pivot"));
  EXPECT_EQ(s.cl.flag("bundle"), "/b");
  EXPECT_EQ(s.cl.container_id(), "c1");
}

TEST(RuncCommandLine, GlobalFlags) {
  Parsed p(
      "--debug --systemd-cgroup --rootless=true --criu /opt/criu -log x --log-format=text state "
      "c1");
  EXPECT_TRUE(p.cl.exact) << p.cl.problem;
  EXPECT_TRUE(p.cl.debug);
  EXPECT_TRUE(p.cl.systemd_cgroup);
  EXPECT_EQ(p.cl.rootless, "true");
  EXPECT_EQ(p.cl.criu, "/opt/criu");
  EXPECT_EQ(p.cl.log, "x");
  EXPECT_FALSE(p.cl.json_log());
  EXPECT_EQ(p.cl.effective_root(), "/run/runc");
  EXPECT_EQ(p.cl.container_id(), "c1");
}

TEST(RuncCommandLine, VersionAndHelp) {
  EXPECT_TRUE(Parsed("--version").cl.version);
  EXPECT_TRUE(Parsed("-v").cl.version);
  EXPECT_EQ(Parsed("--version").cl.subcommand, Subcommand::kNone);
  EXPECT_TRUE(Parsed("create --help").cl.help);
  EXPECT_TRUE(Parsed("kill -h").cl.help);
  EXPECT_EQ(Parsed("h").cl.subcommand, Subcommand::kHelp);
}

// urfave/cli moves flags written after the id to the front, and takes the word after a
// flag without '=' along as its value: so after a boolean flag the id is swallowed and
// runc stops at it (runc then fails with "Incorrect Usage"). We see what runc sees.
TEST(RuncCommandLine, ReorderQuirk) {
  Parsed p("create --no-pivot c1 --bundle /b");
  EXPECT_EQ(p.cl.container_id(), "c1");
  EXPECT_FALSE(p.cl.flag("bundle").has_value());
  ASSERT_EQ(p.cl.args.size(), 3u);
  EXPECT_EQ(p.cl.args[1], "--bundle");
}

TEST(RuncCommandLine, KillSignalAndAll) {
  Parsed p("kill c1 9 --all");
  EXPECT_TRUE(p.cl.flag_set("all"));
  ASSERT_EQ(p.cl.args.size(), 2u);
  EXPECT_EQ(p.cl.args[0], "c1");
  EXPECT_EQ(p.cl.args[1], "9");
  Parsed q("kill -a c1 SIGTERM");
  EXPECT_TRUE(q.cl.flag_set("all"));
  EXPECT_EQ(q.cl.container_id(), "c1");
}

TEST(RuncCommandLine, ExecKeepsTheProcessArguments) {
  Parsed p("exec -t -e A=1 --env B=2 -e=C=3 -u 0:0 --cwd /tmp c1 sh -c --tty");
  EXPECT_TRUE(p.cl.exact) << p.cl.problem;
  EXPECT_TRUE(p.cl.flag_set("tty"));
  EXPECT_EQ(p.cl.flag_values("env"), (std::vector<std::string_view>{"A=1", "B=2", "C=3"}));
  EXPECT_EQ(p.cl.flag("user"), "0:0");
  EXPECT_EQ(p.cl.container_id(), "c1");
  EXPECT_EQ(p.cl.args, (std::vector<std::string_view>{"c1", "sh", "-c", "--tty"}));
}

TEST(RuncCommandLine, DoubleDashEndsFlags) {
  Parsed p("create --bundle /b -- -weird-id");
  EXPECT_TRUE(p.cl.exact);
  EXPECT_EQ(p.cl.container_id(), "-weird-id");
}

TEST(RuncCommandLine, UnknownThingsAreInexact) {
  Parsed unknown_flag("create --bogus c1");
  EXPECT_FALSE(unknown_flag.cl.exact);
  EXPECT_NE(unknown_flag.cl.problem.find("bogus"), std::string::npos);
  Parsed missing_value("create --bundle");
  EXPECT_FALSE(missing_value.cl.exact);
  Parsed unknown_sub("frobnicate c1");
  EXPECT_FALSE(unknown_sub.cl.exact);
  EXPECT_EQ(unknown_sub.cl.subcommand, Subcommand::kUnknown);
  Parsed global_after_sub("state --root /x c1");
  EXPECT_FALSE(global_after_sub.cl.exact);
  Parsed bad_syntax("create ---b x c1");
  EXPECT_FALSE(bad_syntax.cl.exact);
}

TEST(RuncCommandLine, EverySubcommandIsKnown) {
  for (const char* sub :
       {"checkpoint", "create", "delete", "events", "exec", "features", "init", "kill", "list",
        "pause", "ps", "restore", "resume", "run", "spec", "start", "state", "update", "help"}) {
    Parsed p(sub);
    EXPECT_NE(p.cl.subcommand, Subcommand::kUnknown) << sub;
    EXPECT_NE(p.cl.subcommand, Subcommand::kNone) << sub;
    EXPECT_TRUE(p.cl.exact) << sub;
    EXPECT_EQ(subcommand_name(p.cl.subcommand), sub);
  }
}

TEST(RuncCommandLine, CheckpointAndRestoreFlags) {
  Parsed c(
      "checkpoint --image-path /i --work-path /w --leave-running --tcp-established "
      "--empty-ns network --empty-ns ipc --manage-cgroups-mode soft c1");
  EXPECT_TRUE(c.cl.exact) << c.cl.problem;
  EXPECT_EQ(c.cl.flag_values("empty-ns").size(), 2u);
  EXPECT_EQ(c.cl.container_id(), "c1");
  Parsed r("restore -d -b /b --pid-file /p --image-path /i --console-socket /s --no-pivot c1");
  EXPECT_TRUE(r.cl.exact) << r.cl.problem;
  EXPECT_TRUE(r.cl.flag_set("detach"));
  EXPECT_EQ(r.cl.flag("bundle"), "/b");
  EXPECT_EQ(r.cl.container_id(), "c1");
}

// runc 1.3's flags (Debian forky's runc 1.3.6 `--help` of each command), as containerd 2.x
// and CRI-O write them.
TEST(RuncCommandLine, Runc13Flags) {
  for (const char* line :
       {"checkpoint --image-path /i --work-path /w --tcp-skip-in-flight --link-remap c1",
        "create --bundle /b --pidfd-socket /s --pid-file /p c1",
        "run -d --pidfd-socket /s -b /b c1",
        "exec --pidfd-socket /s --process /p --detach --pid-file /f c1",
        "update --cpu-burst 1000 --cpu-idle 1 c1",
        "--criu /opt/criu/bin/criu --root /r checkpoint --image-path /i c1"}) {
    Parsed p(line);
    EXPECT_TRUE(p.cl.exact) << line << ": " << p.cl.problem;
    EXPECT_EQ(p.cl.container_id(), "c1") << line;
  }
  EXPECT_EQ(Parsed("create --pidfd-socket /s c1").cl.flag("pidfd-socket"), "/s");
}

TEST(RuncCommandLine, DashValueAndLateDoubleDash) {
  // dockerd's `update --resources - ID`: "-" is the flag's value (stdin), ID the container.
  Parsed update("update --resources - c1");
  EXPECT_TRUE(update.cl.exact) << update.cl.problem;
  EXPECT_EQ(update.cl.flag("resources"), "-");
  EXPECT_EQ(update.cl.container_id(), "c1");
  // A "--" after the id still ends the flags: what follows is positional.
  Parsed late("kill c1 -- -9");
  EXPECT_EQ(late.cl.args, (std::vector<std::string_view>{"c1", "-9"}));
}

TEST(RuncCommandLine, UpdateListPsSpec) {
  EXPECT_TRUE(Parsed("update --memory 100 --pids-limit=5 -r - c1").cl.exact);
  EXPECT_EQ(Parsed("update --memory 100 c1").cl.container_id(), "c1");
  Parsed list("list -q --format json");
  EXPECT_TRUE(list.cl.exact);
  EXPECT_TRUE(list.cl.container_id().empty());
  Parsed ps("ps c1 -ef");
  EXPECT_EQ(ps.cl.args, (std::vector<std::string_view>{"c1", "-ef"}));
  // Checked against runc 1.1.5: `runc ps ID --format json` hands "--format json" to ps(1).
  Parsed ps_late_flag("ps c1 --format json");
  EXPECT_FALSE(ps_late_flag.cl.flag("format").has_value());
  EXPECT_EQ(ps_late_flag.cl.args.size(), 3u);
  EXPECT_EQ(Parsed("ps --format json c1").cl.flag("format"), "json");
  EXPECT_TRUE(Parsed("spec --rootless -b /x").cl.exact);
}

// Every command line containerd-shim-runc-v2 and dockerd were seen issuing (captured with a
// logging wrapper, ids and paths normalised) parses exactly, and the id is where runc
// takes it from.
TEST(RuncCommandLine, GoldenEngineCommandLines) {
  namespace fs = std::filesystem;
  int lines = 0;
  for (const auto& entry : fs::directory_iterator(ARCH_GOLDEN_DIR)) {
    if (entry.path().extension() != ".txt") continue;
    std::ifstream in(entry.path());
    for (std::string line; std::getline(in, line);) {
      if (line.empty() || line.front() == '#') continue;
      ++lines;
      Parsed p(line);
      SCOPED_TRACE(entry.path().filename().string() + ": " + line);
      EXPECT_TRUE(p.cl.exact) << p.cl.problem;
      EXPECT_NE(p.cl.subcommand, Subcommand::kUnknown);
      if (p.cl.subcommand != Subcommand::kNone && p.cl.subcommand != Subcommand::kList &&
          p.cl.subcommand != Subcommand::kFeatures) {
        EXPECT_EQ(p.cl.container_id(), "<id>");
      }
    }
  }
  EXPECT_GE(lines, 8) << "golden command lines missing from " << ARCH_GOLDEN_DIR;
}

}  // namespace
}  // namespace arch
