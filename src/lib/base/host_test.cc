// Tests for the host helpers against the kernel's own files.
#include "base/host.h"

#include <gtest/gtest.h>

#include "base/file_util.h"

namespace arch {
namespace {

std::string first_line(const std::string& path) {
  auto text = read_file(path);
  if (!text) return "";
  return text->substr(0, text->find('\n'));
}

TEST(Host, NameIsTheUtsNamespacesHostname) {
  EXPECT_FALSE(host_name().empty());
  EXPECT_EQ(host_name(), first_line("/proc/sys/kernel/hostname"));
}

TEST(Host, KernelReleaseIsTheRunningKernels) {
  EXPECT_FALSE(kernel_release().empty());
  EXPECT_EQ(kernel_release(), first_line("/proc/sys/kernel/osrelease"));
}

}  // namespace
}  // namespace arch
