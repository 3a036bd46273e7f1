// Tests for Owner: derived from the containerd namespace and the CRI sandbox namespace only.
#include "managed/owner.h"

#include <gtest/gtest.h>

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
