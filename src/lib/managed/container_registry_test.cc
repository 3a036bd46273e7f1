// Tests for ContainerRegistry and namespace derivation.
#include "managed/container_registry.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

namespace arch {
namespace {

TEST(ContainerRegistry, DerivesTheNamespace) {
  EXPECT_EQ(derive_namespace("/run/containerd/io.containerd.runtime.v2.task/k8s.io/abc",
                             "/run/containerd/runc/k8s.io"),
            "k8s.io");
  EXPECT_EQ(derive_namespace("/somewhere/else", "/run/containerd/runc/default"), "default");
  EXPECT_EQ(derive_namespace("", "/run/docker/runtime-runc/moby"), "moby");
  EXPECT_EQ(derive_namespace("/x/io.containerd.runtime.v2.task/moby/id1", "/odd/root"), "moby");
  EXPECT_EQ(derive_namespace("", "/run/runc"), "default");
}

TEST(ContainerRegistry, RecordsFindsAndForgets) {
  auto dir = std::filesystem::temp_directory_path() / ("arch-reg-" + std::to_string(::getpid()));
  ContainerRegistry reg(dir.string());
  ContainerRecord rec{"c1", "default", "c1", "/run/r", "/b", "/store", "/b/log.json", 42};
  ASSERT_TRUE(reg.record(rec));
  auto found = reg.find("/run/r", "c1");
  ASSERT_TRUE(found) << found.error().message();
  EXPECT_EQ(found->bundle, "/b");
  EXPECT_EQ(found->created, 42);
  EXPECT_FALSE(reg.find("/run/other", "c1"));
  EXPECT_EQ(reg.all().size(), 1u);

  EXPECT_FALSE(reg.take_restored("/run/r", "c1"));
  ASSERT_TRUE(reg.mark_restored("/run/r", "c1"));
  EXPECT_TRUE(reg.take_restored("/run/r", "c1"));
  EXPECT_FALSE(reg.take_restored("/run/r", "c1"));  // consumed by the first start

  reg.forget("/run/r", "c1");
  EXPECT_FALSE(reg.find("/run/r", "c1"));
  EXPECT_TRUE(reg.all().empty());
  // The per-root directory goes with its last record.
  EXPECT_TRUE(std::filesystem::is_empty(dir / "containers"));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace arch
