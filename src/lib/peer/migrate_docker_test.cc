// Tests for MigrateDocker: Docker's record parsed and refused, the offer validated (hostile
// names, images, environment), the docker create command line never reading a value as an
// option.
#include "peer/migrate_docker.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "base/temp_dir.h"

namespace arch {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::string kId(64, 'c');

json record() {
  return {{"ID", kId},
          {"Name", "/ledger"},
          {"Path", "sh"},
          {"Config",
           {{"Hostname", "cccccccccccc"},
            {"User", ""},
            {"Tty", false},
            {"OpenStdin", false},
            {"Env", {"ARCH_ENABLE=1", "PATH=/usr/bin:/bin"}},
            {"Cmd", {"-c", "while :; do sleep 1; done"}},
            {"Entrypoint", {"sh"}},
            {"Image", "arch-test:latest"},
            {"WorkingDir", ""},
            {"Labels", {{"team", "a"}}}}},
          {"MountPoints", json::object()}};
}

json hostconfig() {
  return {{"Binds", nullptr},
          {"NetworkMode", "default"},
          {"PortBindings", json::object()},
          {"RestartPolicy", {{"Name", "no"}, {"MaximumRetryCount", 0}}},
          {"AutoRemove", false},
          {"CapAdd", nullptr},
          {"CapDrop", nullptr},
          {"Dns", json::array()},
          {"IpcMode", "private"},
          {"Links", nullptr},
          {"PidMode", ""},
          {"Privileged", false},
          {"ReadonlyRootfs", false},
          {"SecurityOpt", nullptr},
          {"UTSMode", ""},
          {"UsernsMode", ""},
          {"ShmSize", 67108864},
          {"Memory", 0},
          {"NanoCpus", 1500000000},
          {"CgroupParent", ""},
          {"Devices", json::array()},
          {"Init", nullptr}};
}

Result<DockerContainerSpec> parse(const json& c, const json& h) {
  return parse_docker_container(c.dump(), h.dump());
}

TEST(MigrateDocker, ParsesARecord) {
  auto s = parse(record(), hostconfig());
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_EQ(s->name, "ledger");
  EXPECT_EQ(s->image, "arch-test:latest");
  EXPECT_EQ(s->args, (std::vector<std::string>{"sh", "-c", "while :; do sleep 1; done"}));
  EXPECT_EQ(s->env, (std::vector<std::string>{"ARCH_ENABLE=1", "PATH=/usr/bin:/bin"}));
  EXPECT_EQ(s->cwd, "/");
  EXPECT_EQ(s->hostname, "cccccccccccc");
  EXPECT_EQ(s->labels.at("team"), "a");
  EXPECT_EQ(s->restart, "no");
  EXPECT_EQ(s->nano_cpus, 1500000000);
  EXPECT_EQ(s->shm_size, 67108864);
}

TEST(MigrateDocker, RefusesWhatItCannotCarryNamingIt) {
  struct Case {
    const char* key;
    json value;
    bool in_config;
    const char* says;
  };
  const Case cases[] = {
      {"Binds", json::array({"/srv/data:/data"}), false, "bind mounts"},
      {"PortBindings", {{"80/tcp", json::array({{{"HostPort", "8080"}}})}}, false, "ports"},
      {"Privileged", true, false, "--privileged"},
      {"CapAdd", json::array({"SYS_ADMIN"}), false, "--cap-add"},
      {"Tmpfs", {{"/run", ""}}, false, "tmpfs"},
      {"PidMode", "host", false, "--pid"},
      {"IpcMode", "host", false, "--ipc"},
      {"NetworkMode", "container:abc", false, "network"},
      {"NetworkMode", "my-net", false, "network"},
      {"MountPoints", {{"/data", {{"Type", "volume"}}}}, true, "mounts"},
  };
  for (const auto& c : cases) {
    auto r = record();
    auto h = hostconfig();
    (c.in_config ? r : h)[c.key] = c.value;
    auto s = parse(r, h);
    ASSERT_FALSE(s) << c.key;
    EXPECT_EQ(s.error().kind(), ErrorKind::kUnsupported) << c.key;
    EXPECT_NE(s.error().message().find(c.says), std::string::npos) << s.error().message();
  }
  auto tty = record();
  tty["Config"]["Tty"] = true;
  EXPECT_FALSE(parse(tty, hostconfig()));
}

TEST(MigrateDocker, RefusesMalformedRecords) {
  EXPECT_FALSE(parse_docker_container("not json", hostconfig().dump()));
  EXPECT_FALSE(parse_docker_container(record().dump(), "[1]"));
  EXPECT_FALSE(parse_docker_container(R"({"Config":"x"})", hostconfig().dump()));
  auto r = record();
  r["Config"]["Env"] = {"A=1", 2};
  EXPECT_FALSE(parse(r, hostconfig()));
  r = record();
  r["Config"]["Cmd"] = "sh";
  EXPECT_FALSE(parse(r, hostconfig()));
  r = record();
  r["Config"]["Labels"] = {{"a", 1}};
  EXPECT_FALSE(parse(r, hostconfig()));
  r = record();
  r["Config"]["Entrypoint"] = nullptr;
  r["Config"]["Cmd"] = nullptr;
  EXPECT_FALSE(parse(r, hostconfig()));  // no process
  auto h = hostconfig();
  h["RestartPolicy"] = "always";
  EXPECT_FALSE(parse(record(), h));
}

DockerContainerSpec good() {
  return parse(record(), hostconfig()).value();
}

TEST(MigrateDocker, ValidatesNamesImagesAndEnvironment) {
  EXPECT_TRUE(validate_docker_spec(good()));
  auto bad = [](auto edit) {
    auto s = good();
    edit(s);
    return !validate_docker_spec(s);
  };
  for (const char* name :
       {"", "x", "-x", "--privileged", ".x", "_x", "a/b", "../a", "a b", "a\nb", "a=b", "a:b"}) {
    EXPECT_TRUE(bad([&](auto& s) { s.name = name; })) << name;
  }
  EXPECT_TRUE(bad([](auto& s) { s.name = std::string(129, 'a'); }));
  EXPECT_FALSE(bad([](auto& s) { s.name = "a.b_c-1"; }));
  for (const char* image : {"", "-x", "--help", "a b", "a\nb"}) {
    EXPECT_TRUE(bad([&](auto& s) { s.image = image; })) << image;
  }
  EXPECT_TRUE(bad([](auto& s) { s.image = std::string(513, 'a'); }));
  EXPECT_FALSE(bad([](auto& s) { s.image = "registry.example:5000/a/b@sha256:00"; }));
  // "PATH" alone would make the docker CLI copy archd's own variable.
  for (const char* e : {"PATH", "=x", "A\nB=1"}) {
    EXPECT_TRUE(bad([&](auto& s) { s.env.push_back(e); })) << e;
  }
  EXPECT_FALSE(bad([](auto& s) { s.env.push_back("A=--privileged"); }));
  EXPECT_TRUE(bad([](auto& s) { s.env.push_back(std::string("A=x\0y", 5)); }));
  EXPECT_TRUE(bad([](auto& s) { s.env.push_back("A=" + std::string(40000, 'x')); }));
  EXPECT_TRUE(bad([](auto& s) { s.env.assign(2000, "A=1"); }));
  EXPECT_TRUE(bad([](auto& s) { s.args.assign(2000, "x"); }));
  EXPECT_TRUE(bad([](auto& s) { s.args.clear(); }));
  EXPECT_TRUE(bad([](auto& s) { s.args = {""}; }));
  EXPECT_TRUE(bad([](auto& s) { s.args.push_back(std::string("a\0b", 3)); }));
  EXPECT_TRUE(bad([](auto& s) { s.cwd = "work"; }));
  EXPECT_TRUE(bad([](auto& s) { s.user = "-u"; }));
  EXPECT_TRUE(bad([](auto& s) { s.hostname = "-h"; }));
  EXPECT_TRUE(bad([](auto& s) { s.hostname = "a/b"; }));
  EXPECT_TRUE(bad([](auto& s) { s.labels["a=b"] = "c"; }));
  EXPECT_TRUE(bad([](auto& s) { s.labels[""] = "c"; }));
  EXPECT_TRUE(bad([](auto& s) { s.restart = "sometimes"; }));
  EXPECT_TRUE(bad([](auto& s) { s.restart_max = 3; }));  // only with on-failure
  EXPECT_FALSE(bad([](auto& s) {
    s.restart = "on-failure";
    s.restart_max = 3;
  }));
  EXPECT_TRUE(bad([](auto& s) { s.network = "container:x"; }));
  EXPECT_TRUE(bad([](auto& s) { s.memory = -1; }));
  EXPECT_TRUE(bad([](auto& s) {
    s.auto_remove = true;
    s.restart = "always";
  }));
}

ContainerRecord docker_rec() {
  ContainerRecord rec;
  rec.id = kId;
  rec.ns = "moby";
  rec.owner = "moby";
  rec.key = kId;
  rec.key_source = "container-id";
  return rec;
}

TEST(MigrateDocker, OfferRoundTripsAndRefusesHostileFields) {
  auto s = good();
  auto offer = docker_offer(docker_rec(), s);
  EXPECT_EQ(offer["engine"], "docker");
  auto back = parse_docker_offer(offer);
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(*back, s);
  auto edited = [&](auto edit) {
    auto o = offer;
    edit(o);
    return parse_docker_offer(o);
  };
  EXPECT_FALSE(edited([](json& o) { o["ns"] = "default"; }));
  EXPECT_FALSE(edited([](json& o) { o["docker"]["name"] = "-x"; }));
  EXPECT_FALSE(edited([](json& o) { o["docker"]["name"] = "a/b"; }));
  EXPECT_FALSE(edited([](json& o) { o["image"] = "--privileged"; }));
  EXPECT_FALSE(edited([](json& o) { o["env"].push_back("HOME"); }));
  EXPECT_FALSE(edited([](json& o) { o["docker"].erase("restart"); }));
  EXPECT_FALSE(edited([](json& o) { o["docker"]["labels"] = {{"a", 1}}; }));
  EXPECT_FALSE(edited([](json& o) { o["docker"]["labels"] = json::array(); }));
  EXPECT_FALSE(edited([](json& o) { o["docker"]["memory"] = "1g"; }));
  EXPECT_FALSE(edited([](json& o) { o["docker"] = "x"; }));
  EXPECT_FALSE(edited([](json& o) { o.erase("docker"); }));
  EXPECT_FALSE(edited([](json& o) { o["docker"]["network"] = "host --privileged"; }));
}

TEST(MigrateDocker, CreateArgsNeverLetAValueBeReadAsAnOption) {
  auto s = good();
  s.env.push_back("X=--privileged");
  s.labels["l"] = "--volume=/:/host";
  s.user = "1000:1000";
  s.restart = "on-failure";
  s.restart_max = 2;
  s.memory = 1 << 20;
  s.args = {"--privileged", "-v", "/:/host"};
  auto a = docker_create_args(s, "arch");
  ASSERT_GE(a.size(), 3u);
  EXPECT_EQ(a.front(), "create");
  auto dashes = std::find(a.begin(), a.end(), "--");
  ASSERT_NE(dashes, a.end());
  for (auto it = a.begin() + 1; it != dashes; ++it) {
    EXPECT_EQ(it->rfind("--", 0), 0u) << *it;  // every option in --flag[=value] form
    bool valueless = *it == "--read-only" || *it == "--init" || *it == "--rm";
    EXPECT_TRUE(valueless || it->find('=') != std::string::npos) << *it;
  }
  EXPECT_EQ(*(dashes + 1), s.image);
  EXPECT_EQ(std::vector<std::string>(dashes + 2, a.end()),
            (std::vector<std::string>{"-v", "/:/host"}));
  auto has = [&](const std::string& x) { return std::find(a.begin(), a.end(), x) != a.end(); };
  EXPECT_TRUE(has("--entrypoint=--privileged"));
  EXPECT_TRUE(has("--env=X=--privileged"));
  EXPECT_TRUE(has("--label=l=--volume=/:/host"));
  EXPECT_TRUE(has("--name=ledger"));
  EXPECT_TRUE(has("--runtime=arch"));
  EXPECT_TRUE(has("--restart=on-failure:2"));
  EXPECT_TRUE(has("--memory=1048576b"));
  EXPECT_TRUE(has("--cpus=1.500000000"));
  EXPECT_TRUE(has("--user=1000:1000"));
  EXPECT_TRUE(has("--hostname=cccccccccccc"));
  s.network = "host";  // Docker refuses a hostname with the host's network
  a = docker_create_args(s, "arch");
  EXPECT_TRUE(has("--network=host"));
  EXPECT_FALSE(
      std::any_of(a.begin(), a.end(), [](const auto& x) { return x.rfind("--hostname", 0) == 0; }));
}

class DockerRecordTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_.docker_data_root = tmp_.path() + "/data";
    fs::create_directories(dir());
  }
  std::string dir() const { return config_.docker_data_root + "/containers/" + kId; }
  void write(const json& c, const json& h) const {
    std::ofstream(dir() + "/config.v2.json") << c.dump();
    std::ofstream(dir() + "/hostconfig.json") << h.dump();
  }

  TempDir tmp_{"migrate-docker-"};
  NodeConfig config_;
};

TEST_F(DockerRecordTest, TheJobKeySurvivesTheNewContainerId) {
  write(record(), hostconfig());
  auto s = docker_container_of(docker_rec(), config_);
  ASSERT_TRUE(s) << s.error().message();
  ASSERT_TRUE(s->has_value());
  EXPECT_EQ((*s)->env.back(), "ARCH_JOB_ID=" + kId);
  // A key from ARCH_JOB_ID is already in the environment.
  auto rec = docker_rec();
  rec.key = "job-1";
  rec.key_source = "ARCH_JOB_ID";
  auto r = record();
  r["Config"]["Env"].push_back("ARCH_JOB_ID=job-1");
  write(r, hostconfig());
  auto t = docker_container_of(rec, config_);
  ASSERT_TRUE(t && t->has_value());
  EXPECT_EQ(std::count_if((*t)->env.begin(), (*t)->env.end(),
                          [](const auto& e) { return e.rfind("ARCH_JOB_ID=", 0) == 0; }),
            1);
}

TEST_F(DockerRecordTest, NoDockerDataRootIsNone) {
  config_.docker_data_root = tmp_.path() + "/no-docker-here";
  auto none = docker_container_of(docker_rec(), config_);
  ASSERT_TRUE(none) << none.error().message();
  EXPECT_FALSE(none->has_value());
}

TEST_F(DockerRecordTest, NotDockersIsNoneAndEcsTasksAreRefused) {
  auto other = docker_rec();
  other.ns = "default";
  auto none = docker_container_of(other, config_);
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());
  // In moby without Docker's record (ctr -n moby): a containerd container.
  none = docker_container_of(docker_rec(), config_);
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());
  auto r = record();
  r["Config"]["Labels"] = {{"com.amazonaws.ecs.cluster", "prod"},
                           {"com.amazonaws.ecs.task-definition-family", "web"},
                           {"com.amazonaws.ecs.task-arn", "arn:x"}};
  write(r, hostconfig());
  auto ecs = docker_container_of(docker_rec(), config_);
  ASSERT_FALSE(ecs);
  EXPECT_NE(ecs.error().message().find("ECS"), std::string::npos) << ecs.error().message();
  write(record(), hostconfig());
  auto owned = docker_rec();
  owned.owner = "ecs+prod+web";
  EXPECT_FALSE(docker_container_of(owned, config_));
}

TEST_F(DockerRecordTest, SymlinkedOrOversizeRecordsAreRefused) {
  std::string planted = tmp_.path() + "/planted.json";
  std::ofstream(planted) << hostconfig().dump();
  std::ofstream(dir() + "/config.v2.json") << record().dump();
  fs::create_symlink(planted, dir() + "/hostconfig.json");
  auto s = docker_container_of(docker_rec(), config_);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message().find("symlink"), std::string::npos) << s.error().message();
  fs::remove(dir() + "/hostconfig.json");
  std::ofstream(dir() + "/hostconfig.json") << std::string(kMaxDockerConfigBytes + 1, ' ');
  s = docker_container_of(docker_rec(), config_);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message().find("allowed"), std::string::npos) << s.error().message();
  fs::remove(dir() + "/hostconfig.json");
  EXPECT_FALSE(docker_container_of(docker_rec(), config_));  // the record is incomplete
}

// A fake docker CLI: logs each call's argv (one line, words joined by '|') and answers
// from the files of its directory (<subcommand>.out / .rc, e.g. "image.rc").
class FakeDockerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string script = tmp_.path() + "/docker";
    std::ofstream(script) << "#!/bin/sh\n"
                             "d=" +
                                 tmp_.path() +
                                 "\n"
                                 "printf '%s|' \"$@\" >> $d/calls; echo >> $d/calls\n"
                                 "sub=$2\n"
                                 "[ -f $d/$sub.out ] && cat $d/$sub.out\n"
                                 "[ -f $d/$sub.rc ] && exit $(cat $d/$sub.rc)\n"
                                 "exit 0\n";
    fs::permissions(script, fs::perms::owner_all);
    config_.peers.migrate_docker = script;
    config_.peers.migrate_docker_host = "unix:///run/d.sock";
    answer("info", R"({"arch":{"path":"/usr/local/bin/arch-runc"},"runc":{"path":"runc"}})", 0);
    answer("container", "", 1);  // no container of that name
  }
  void answer(const std::string& sub, const std::string& out, int rc) const {
    std::ofstream(tmp_.path() + "/" + sub + ".out") << out;
    std::ofstream(tmp_.path() + "/" + sub + ".rc") << rc;
  }
  std::vector<std::string> calls() const {
    std::ifstream in(tmp_.path() + "/calls");
    std::vector<std::string> out;
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
  }

  TempDir tmp_{"fake-docker-"};
  NodeConfig config_;
};

TEST_F(FakeDockerTest, DestinationChecksNameWhatIsMissing) {
  auto s = good();
  ASSERT_TRUE(check_docker_destination(config_, s));
  EXPECT_EQ(calls().at(1),
            "--host=unix:///run/d.sock|image|inspect|--format={{.Id}}|--|" + s.image + "|");
  EXPECT_EQ(calls().at(2),
            "--host=unix:///run/d.sock|container|inspect|--format={{.Id}}|--|"
            "ledger|");
  answer("image", "", 1);
  auto missing = check_docker_destination(config_, s);
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message().find("image arch-test:latest is not in Docker"),
            std::string::npos)
      << missing.error().message();
  answer("image", "sha256:x", 0);
  answer("container", "cafe", 0);
  auto taken = check_docker_destination(config_, s);
  ASSERT_FALSE(taken);
  EXPECT_NE(taken.error().message().find("named ledger exists"), std::string::npos);
  config_.peers.migrate_docker_runtime = "kata";
  auto runtime = check_docker_destination(config_, s);
  ASSERT_FALSE(runtime);
  EXPECT_NE(runtime.error().message().find("no runtime kata"), std::string::npos);
  answer("info", "", 1);
  EXPECT_FALSE(check_docker_destination(config_, s));
}

TEST_F(FakeDockerTest, CreateStartsAndRemovesWhatFailedToStart) {
  auto s = good();
  const std::string id(64, 'e');
  answer("create", id + "\n", 0);
  auto created = create_docker_container(config_, s);
  ASSERT_TRUE(created) << created.error().message();
  EXPECT_EQ(*created, id);
  EXPECT_EQ(calls().back(), "--host=unix:///run/d.sock|start|--|" + id + "|");
  answer("start", "", 1);
  EXPECT_FALSE(create_docker_container(config_, s));
  EXPECT_EQ(calls().back(), "--host=unix:///run/d.sock|rm|--force|--|" + id + "|");
  // A failed create removes nothing (the name may be another container's by now).
  auto before = calls().size();
  answer("create", "", 1);
  EXPECT_FALSE(create_docker_container(config_, s));
  EXPECT_EQ(calls().size(), before + 1);
  // An answer that is not an id is a failure too.
  answer("create", "--privileged\n", 0);
  EXPECT_FALSE(create_docker_container(config_, s));
}

TEST_F(FakeDockerTest, RestartPolicyIsHeldAndPutBackUnlessTheContainerMoved) {
  auto s = good();
  s.restart = "on-failure";
  s.restart_max = 3;
  {
    auto held = DockerRestartHold::hold(config_, kId, s);
    ASSERT_TRUE(held) << held.error().message();
    EXPECT_EQ(calls().back(), "--host=unix:///run/d.sock|update|--restart=no|--|" + kId + "|");
  }  // the migration failed: put back
  EXPECT_EQ(calls().back(),
            "--host=unix:///run/d.sock|update|--restart=on-failure:3|--|" + kId + "|");
  auto before = calls().size();
  {
    auto held = DockerRestartHold::hold(config_, kId, s);
    ASSERT_TRUE(held);
    held->disarm();  // it moved: stays "no" until removed
  }
  EXPECT_EQ(calls().size(), before + 1);
  s.restart = "no";
  s.restart_max = 0;
  before = calls().size();
  { ASSERT_TRUE(DockerRestartHold::hold(config_, kId, s)); }
  EXPECT_EQ(calls().size(), before);  // nothing to hold
  s.restart = "always";
  answer("update", "", 1);
  EXPECT_FALSE(DockerRestartHold::hold(config_, kId, s));
  EXPECT_FALSE(DockerRestartHold::hold(config_, "not-an-id", s));
}

}  // namespace
}  // namespace arch
