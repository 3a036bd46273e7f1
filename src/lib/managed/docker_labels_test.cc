// Tests for DockerLabels: config.v2.json read beneath the data root, never followed or trusted
// blindly.
#include "managed/docker_labels.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "base/temp_dir.h"

namespace arch {
namespace {

namespace fs = std::filesystem;

const std::string kId(64, 'a');

class DockerLabelsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = tmp_.path() + "/data";
    fs::create_directories(root_ + "/containers/" + kId);
  }
  std::string config_path() const { return root_ + "/containers/" + kId + "/config.v2.json"; }
  void write(const std::string& text) const { std::ofstream(config_path()) << text; }

  TempDir tmp_{"docker-labels-"};
  std::string root_;
};

TEST_F(DockerLabelsTest, ReadsConfigLabels) {
  write(R"({"ID":"x","Config":{"Image":"i","Labels":{"com.amazonaws.ecs.cluster":"prod",)"
        R"("a":"b"}}})");
  auto labels = read_docker_labels(root_, kId);
  ASSERT_TRUE(labels) << labels.error().message();
  EXPECT_EQ(labels->at("com.amazonaws.ecs.cluster"), "prod");
  EXPECT_EQ(labels->at("a"), "b");
}

TEST_F(DockerLabelsTest, NoLabelsIsEmpty) {
  write(R"({"Config":{"Labels":null}})");
  auto labels = read_docker_labels(root_, kId);
  ASSERT_TRUE(labels);
  EXPECT_TRUE(labels->empty());
  write(R"({"Config":{}})");
  EXPECT_TRUE(read_docker_labels(root_, kId).value().empty());
}

TEST_F(DockerLabelsTest, SymlinkedFileOrDirectoryIsNeverFollowed) {
  std::string elsewhere = tmp_.path() + "/planted.json";
  std::ofstream(elsewhere) << R"({"Config":{"Labels":{"com.amazonaws.ecs.cluster":"victim"}}})";
  fs::create_symlink(elsewhere, config_path());
  auto labels = read_docker_labels(root_, kId);
  ASSERT_FALSE(labels);
  EXPECT_EQ(labels.error().kind(), ErrorKind::kPermission);
  EXPECT_NE(labels.error().message().find("symlink"), std::string::npos)
      << labels.error().message();

  // The container's directory itself a symlink.
  std::string other(64, 'b');
  fs::create_directories(tmp_.path() + "/real");
  std::ofstream(tmp_.path() + "/real/config.v2.json") << R"({"Config":{"Labels":{}}})";
  fs::create_directory_symlink(tmp_.path() + "/real", root_ + "/containers/" + other);
  auto via_dir = read_docker_labels(root_, other);
  ASSERT_FALSE(via_dir);
  EXPECT_NE(via_dir.error().message().find("symlink"), std::string::npos);
}

TEST_F(DockerLabelsTest, HugeFileIsRefusedUnread) {
  {
    std::ofstream f(config_path());
    f << R"({"Config":{"Labels":{"a":")" << std::string(kMaxDockerConfigBytes, 'x') << "\"}}}";
  }
  auto labels = read_docker_labels(root_, kId);
  ASSERT_FALSE(labels);
  EXPECT_NE(labels.error().message().find("bytes"), std::string::npos) << labels.error().message();
}

TEST_F(DockerLabelsTest, MalformedJsonIsRefused) {
  for (const char* text : {"{", "[]", R"({"Config":[]})", R"({"Config":{"Labels":[1]}})",
                           R"({"Config":{"Labels":{"a":1}}})", ""}) {
    write(text);
    auto labels = read_docker_labels(root_, kId);
    ASSERT_FALSE(labels) << text;
    EXPECT_EQ(labels.error().kind(), ErrorKind::kPermission) << text;
    EXPECT_NE(labels.error().message().find("config.v2.json"), std::string::npos);
  }
}

TEST_F(DockerLabelsTest, FifoAndDirectoryAreRefused) {
  ASSERT_EQ(::mkfifo(config_path().c_str(), 0600), 0);
  auto fifo = read_docker_labels(root_, kId);  // Must not block.
  ASSERT_FALSE(fifo);
  EXPECT_NE(fifo.error().message().find("regular file"), std::string::npos);
  fs::remove(config_path());
  fs::create_directory(config_path());
  EXPECT_FALSE(read_docker_labels(root_, kId));
}

TEST_F(DockerLabelsTest, BadIdsAreRefusedBeforeAnyPath) {
  for (const std::string& id : {std::string("../../etc"), std::string(64, 'A'), std::string("abc"),
                                std::string(63, 'a') + "/", std::string(65, 'a')}) {
    auto labels = read_docker_labels(root_, id);
    ASSERT_FALSE(labels) << id;
    EXPECT_NE(labels.error().message().find("64 hex"), std::string::npos);
  }
}

TEST(DockerLabels, ParseOnlyReadsConfigLabels) {
  auto labels = parse_docker_labels(R"({"Labels":{"x":"top-level is not Docker's"},)"
                                    R"("Config":{"Labels":{"y":"z"}}})");
  ASSERT_TRUE(labels);
  EXPECT_EQ(labels->size(), 1U);
  EXPECT_EQ(labels->at("y"), "z");
}

}  // namespace
}  // namespace arch
