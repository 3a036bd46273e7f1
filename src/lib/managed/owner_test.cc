// Tests for Owner: derived from the containerd namespace and the CRI sandbox namespace only.
#include "managed/owner.h"

#include <gtest/gtest.h>

#include <utility>
#include <vector>

namespace arch {
namespace {

ArchEnv with_annotation(const std::string& name, const std::string& value) {
  ArchEnv env;
  env.annotations[name] = value;
  return env;
}

TEST(Owner, IsTheContainerdNamespace) {
  EXPECT_EQ(derive_owner("default", ArchEnv{}).value(), "default");
  EXPECT_EQ(derive_owner("moby", ArchEnv{}).value(), "moby");
}

TEST(Owner, KubernetesPodsAreOwnedByTheirPodNamespace) {
  auto a = with_annotation("io.kubernetes.cri.sandbox-namespace", "team-a");
  auto b = with_annotation("io.kubernetes.cri.sandbox-namespace", "team-b");
  EXPECT_EQ(derive_owner("k8s.io", a).value(), "k8s.io+team-a");
  EXPECT_EQ(derive_owner("k8s.io", b).value(), "k8s.io+team-b");
  EXPECT_EQ(derive_owner("k8s.io", ArchEnv{}).value(), "k8s.io");  // The sandbox.
}

TEST(Owner, TheCriAnnotationCountsOnlyInTheCriNamespace) {
  // Anyone creating containers in another namespace can set any annotation.
  auto a = with_annotation("io.kubernetes.cri.sandbox-namespace", "team-a");
  EXPECT_EQ(derive_owner("default", a).value(), "default");
}

TEST(Owner, EnvironmentNeverChangesTheOwner) {
  ArchEnv env;
  env.vars["ARCH_OWNER"] = "team-b";
  env.vars["POD_NAMESPACE"] = "team-b";
  EXPECT_EQ(derive_owner("k8s.io", env).value(), "k8s.io");
}

TEST(Owner, BadPartsAreRefused) {
  EXPECT_FALSE(derive_owner("../x", ArchEnv{}));
  EXPECT_FALSE(derive_owner("a+b", ArchEnv{}));
  EXPECT_FALSE(
      derive_owner("k8s.io", with_annotation("io.kubernetes.cri.sandbox-namespace", "../etc")));
  EXPECT_FALSE(
      derive_owner("k8s.io", with_annotation("io.kubernetes.cri.sandbox-namespace", "a/b")));
}

Labels ecs_labels(const std::string& cluster, const std::string& family) {
  return {{"com.amazonaws.ecs.cluster", cluster},
          {"com.amazonaws.ecs.task-definition-family", family},
          {"com.amazonaws.ecs.task-arn",
           "arn:aws:ecs:eu-west-1:123456789012:task/" + cluster + "/0123456789abcdef"},
          {"com.amazonaws.ecs.container-name", "app"}};
}

TEST(Owner, EcsTasksAreOwnedByClusterAndFamily) {
  auto web = ecs_labels("prod", "web");
  auto etl = ecs_labels("prod", "etl_nightly-2");
  EXPECT_EQ(derive_owner("moby", ArchEnv{}, &web).value(), "ecs+prod+web");
  EXPECT_EQ(derive_owner("moby", ArchEnv{}, &etl).value(), "ecs+prod+etl_nightly-2");
}

TEST(Owner, DockerContainersWithoutEcsLabelsStayMoby) {
  Labels none;
  Labels other{{"com.example.team", "a"}};
  EXPECT_EQ(derive_owner("moby", ArchEnv{}, &none).value(), "moby");
  EXPECT_EQ(derive_owner("moby", ArchEnv{}, &other).value(), "moby");
  auto web = ecs_labels("prod", "web");
  EXPECT_EQ(derive_owner("moby", ArchEnv{}, nullptr).value(), "moby");     // Node setting off.
  EXPECT_EQ(derive_owner("default", ArchEnv{}, &web).value(), "default");  // Not Docker's.
}

TEST(Owner, EcsClusterArnMapsToTheClusterName) {
  auto labels = ecs_labels("arn:aws:ecs:eu-west-1:123456789012:cluster/prod", "web");
  labels["com.amazonaws.ecs.task-arn"] = "arn:aws:ecs:eu-west-1:123456789012:task/prod/abc";
  EXPECT_EQ(derive_owner("moby", ArchEnv{}, &labels).value(), "ecs+prod+web");
  labels["com.amazonaws.ecs.task-arn"] = "arn:aws:ecs:eu-west-1:123456789012:task/abc";  // Old.
  EXPECT_EQ(derive_owner("moby", ArchEnv{}, &labels).value(), "ecs+prod+web");
}

TEST(Owner, EcsLabelsThatCannotBeMappedAreRefused) {
  for (const auto& [cluster, family] : std::vector<std::pair<std::string, std::string>>{
           {"a/b", "web"},
           {"..", "web"},
           {"prod", ".."},
           {"prod", "a+b"},
           {"prod", "x:y"},
           {"prod", "we b"},
           {"prod", "web."},
           {"", "web"},
           {"prod", std::string(200, 'f')},
           {"arn:aws:s3:::cluster/prod", "web"},
           {"arn:aws:ecs:r:1:service/prod", "web"},
           {"arn:aws:ecs:r:1:cluster/a/b", "web"},
           {"arn:aws:ecs", "web"},
       }) {
    auto labels = ecs_labels(cluster, family);
    labels["com.amazonaws.ecs.task-arn"] = "arn:aws:ecs:r:1:task/abc";
    auto owner = derive_owner("moby", ArchEnv{}, &labels);
    ASSERT_FALSE(owner) << cluster << " " << family << " -> " << owner.value();
    EXPECT_EQ(owner.error().kind(), ErrorKind::kPermission) << owner.error().message();
    EXPECT_NE(owner.error().message().find("ECS"), std::string::npos) << owner.error().message();
  }
}

TEST(Owner, PartialOrInconsistentEcsLabelsAreRefused) {
  auto labels = ecs_labels("prod", "web");
  labels.erase("com.amazonaws.ecs.task-arn");
  EXPECT_FALSE(derive_owner("moby", ArchEnv{}, &labels));
  labels = ecs_labels("prod", "web");
  labels.erase("com.amazonaws.ecs.cluster");
  EXPECT_FALSE(derive_owner("moby", ArchEnv{}, &labels));
  labels = ecs_labels("prod", "web");
  labels["com.amazonaws.ecs.task-arn"] = "not-an-arn";
  EXPECT_FALSE(derive_owner("moby", ArchEnv{}, &labels));
  labels = ecs_labels("prod", "web");
  labels["com.amazonaws.ecs.task-arn"] = "arn:aws:ecs:r:1:task/other-cluster/abc";
  auto owner = derive_owner("moby", ArchEnv{}, &labels);
  ASSERT_FALSE(owner);
  EXPECT_NE(owner.error().message().find("other-cluster"), std::string::npos);
}

TEST(ValidateOwner, PartsJoinedByPlus) {
  EXPECT_TRUE(validate_owner("default"));
  EXPECT_TRUE(validate_owner("k8s.io+team-a"));
  EXPECT_TRUE(validate_owner("ecs+prod+web"));
  EXPECT_FALSE(validate_owner("k8s.io+"));
  EXPECT_FALSE(validate_owner("+x"));
  EXPECT_FALSE(validate_owner("a++b"));
  EXPECT_FALSE(validate_owner("a+.."));
  EXPECT_FALSE(validate_owner(std::string(200, 'a')));
}

}  // namespace
}  // namespace arch
