// Tests for EngineConfig: containerd and Docker configuration edits, and their reversal.
#include "install/engine_config.h"

#include <gtest/gtest.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "base/temp_dir.h"

namespace arch {
namespace {

using nlohmann::json;

TEST(DockerConfig, AddsTheRuntimeAndKeepsEverythingElse) {
  std::string before =
      R"({"log-driver":"json-file","runtimes":{"nvidia":{"path":"/usr/bin/nvidia"}},"data-root":"/d"})";
  auto after = docker_config_install(before, {});
  ASSERT_TRUE(after) << after.error().message();
  json doc = json::parse(*after);
  EXPECT_EQ(doc["runtimes"]["arch"]["path"], "/usr/local/bin/arch-runc");
  EXPECT_EQ(doc["runtimes"]["nvidia"]["path"], "/usr/bin/nvidia");
  EXPECT_EQ(doc["log-driver"], "json-file");
  EXPECT_EQ(doc["data-root"], "/d");
  EXPECT_FALSE(doc.contains("default-runtime"));

  auto undone = docker_config_uninstall(*after);
  ASSERT_TRUE(undone);
  EXPECT_EQ(json::parse(*undone), json::parse(before));
}

TEST(DockerConfig, DefaultRuntimeAndEmptyFile) {
  auto after = docker_config_install("", {"/opt/arch-runc", true});
  ASSERT_TRUE(after);
  json doc = json::parse(*after);
  EXPECT_EQ(doc["default-runtime"], "arch");
  EXPECT_EQ(doc["runtimes"]["arch"]["path"], "/opt/arch-runc");
  auto undone = docker_config_uninstall(*after);
  ASSERT_TRUE(undone);
  EXPECT_EQ(json::parse(*undone), json::object());
  // Idempotent: installing twice gives the same text.
  EXPECT_EQ(*docker_config_install(*after, {"/opt/arch-runc", true}), *after);
}

TEST(DockerConfig, RefusesMalformedFiles) {
  EXPECT_FALSE(docker_config_install("{\"a\":", {}));
  EXPECT_FALSE(docker_config_install("[1]", {}));
  EXPECT_FALSE(docker_config_install(R"({"runtimes":"runc"})", {}));
}

constexpr const char* kContainerdConfig = R"(version = 2
root = "/var/lib/containerd"
[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = true
)";

TEST(ContainerdConfig, AddsAnArchRuntimeLikeRunc) {
  auto after = containerd_config_install(kContainerdConfig, {});
  ASSERT_TRUE(after) << after.error().message();
  auto doc = toml::parse(*after);
  auto rts = doc["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"];
  EXPECT_EQ(rts["arch"]["runtime_type"].value_or(std::string()), "io.containerd.runc.v2");
  EXPECT_EQ(rts["arch"]["options"]["BinaryName"].value_or(std::string()),
            "/usr/local/bin/arch-runc");
  EXPECT_TRUE(rts["arch"]["options"]["SystemdCgroup"].value_or(false));
  EXPECT_FALSE(rts["runc"]["options"]["BinaryName"]);
  EXPECT_EQ(doc["root"].value_or(std::string()), "/var/lib/containerd");
  EXPECT_EQ(
      doc["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["default_runtime_name"].value_or(
          std::string()),
      "runc");
}

TEST(ContainerdConfig, DefaultSetsRuncBinaryNameAndUninstallRestores) {
  auto after = containerd_config_install(kContainerdConfig, {"/usr/local/bin/arch-runc", true});
  ASSERT_TRUE(after);
  auto doc = toml::parse(*after);
  auto runc = doc["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["runc"];
  EXPECT_EQ(runc["options"]["BinaryName"].value_or(std::string()), "/usr/local/bin/arch-runc");
  EXPECT_TRUE(runc["options"]["SystemdCgroup"].value_or(false));

  auto undone = containerd_config_uninstall(*after, "/usr/local/bin/arch-runc");
  ASSERT_TRUE(undone);
  auto restored = toml::parse(*undone);
  auto original = toml::parse(kContainerdConfig);
  EXPECT_EQ(restored, original);
}

TEST(ContainerdConfig, NewFileAndMalformedFiles) {
  auto fresh = containerd_config_install("", {});
  ASSERT_TRUE(fresh);
  auto doc = toml::parse(*fresh);
  EXPECT_EQ(doc["version"].value_or(int64_t{0}), 2);
  EXPECT_TRUE(doc["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["arch"]);
  auto bad = containerd_config_install("version = 2\n[plugins\n", {});
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("not valid TOML"), std::string::npos);
  EXPECT_FALSE(containerd_config_install("root = \"/x\"\n", {}));  // version 1 file
}

// containerd 2.x's config version 3 (`containerd config default` of containerd 2.1, trimmed).
constexpr const char* kContainerd2Config = R"(version = 3
root = "/var/lib/containerd"

[plugins]
  [plugins.'io.containerd.cri.v1.runtime']
    enable_selinux = false
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes]
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
          runtime_type = 'io.containerd.runc.v2'
          [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
            SystemdCgroup = true
  [plugins.'io.containerd.grpc.v1.cri']
    disable_tcp_service = true
)";

TEST(ContainerdConfig, Version3LayoutOfContainerd2) {
  auto after = containerd_config_install(kContainerd2Config, {"/usr/bin/arch-runc", true});
  ASSERT_TRUE(after) << after.error().message();
  auto doc = toml::parse(*after);
  EXPECT_EQ(doc["version"].value_or(int64_t{0}), 3);
  auto rts = doc["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"];
  EXPECT_EQ(rts["arch"]["runtime_type"].value_or(std::string()), "io.containerd.runc.v2");
  EXPECT_EQ(rts["arch"]["options"]["BinaryName"].value_or(std::string()), "/usr/bin/arch-runc");
  EXPECT_TRUE(rts["arch"]["options"]["SystemdCgroup"].value_or(false));
  EXPECT_EQ(rts["runc"]["options"]["BinaryName"].value_or(std::string()), "/usr/bin/arch-runc");
  // Nothing is written where containerd 2.x no longer looks for runtimes.
  EXPECT_FALSE(doc["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]);
  EXPECT_TRUE(doc["plugins"]["io.containerd.grpc.v1.cri"]["disable_tcp_service"].value_or(false));

  auto undone = containerd_config_uninstall(*after, "/usr/bin/arch-runc");
  ASSERT_TRUE(undone);
  EXPECT_EQ(toml::parse(*undone), toml::parse(kContainerd2Config));

  EngineInstallOptions v3;
  v3.containerd_config_version = 3;
  auto fresh = containerd_config_install("", v3);
  ASSERT_TRUE(fresh);
  auto fresh_doc = toml::parse(*fresh);
  EXPECT_EQ(fresh_doc["version"].value_or(int64_t{0}), 3);
  EXPECT_TRUE(
      fresh_doc["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["arch"]);
}

TEST(EngineFile, BacksUpAndReplacesDurably) {
  TempDir tmp("arch-engine-");
  std::filesystem::path dir = tmp.path();
  auto path = (dir / "daemon.json").string();
  std::ofstream(path) << R"({"debug":true})";
  auto edit =
      edit_engine_file(path, [](std::string_view t) { return docker_config_install(t, {}); });
  ASSERT_TRUE(edit) << edit.error().message();
  EXPECT_TRUE(edit->changed);
  ASSERT_FALSE(edit->backup.empty());
  std::ifstream backup(edit->backup);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(backup), {}), R"({"debug":true})");
  auto again =
      edit_engine_file(path, [](std::string_view t) { return docker_config_install(t, {}); });
  ASSERT_TRUE(again);
  EXPECT_FALSE(again->changed);
  // A malformed file is left exactly as it was.
  std::ofstream(path) << "{broken";
  auto refused =
      edit_engine_file(path, [](std::string_view t) { return docker_config_install(t, {}); });
  EXPECT_FALSE(refused);
  std::ifstream kept(path);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(kept), {}), "{broken");
}

}  // namespace
}  // namespace arch
