#include "base/suggest.h"

#include <gtest/gtest.h>

namespace arch {
namespace {

TEST(Suggest, EditDistanceCountsEditsAndSwaps) {
  EXPECT_EQ(edit_distance("", ""), 0u);
  EXPECT_EQ(edit_distance("keep", "keep"), 0u);
  EXPECT_EQ(edit_distance("kep", "keep"), 1u);
  EXPECT_EQ(edit_distance("kepe", "keep"), 1u);  // adjacent swap
  EXPECT_EQ(edit_distance("path", "pool"), 3u);
  EXPECT_EQ(edit_distance("", "abc"), 3u);
}

TEST(Suggest, ClosestNameOnlyForTypos) {
  std::vector<std::string> verbs = {"container", "checkpoint", "config", "job", "node"};
  EXPECT_EQ(closest_name("containr", verbs), "container");
  EXPECT_EQ(closest_name("chekpoint", verbs), "checkpoint");
  EXPECT_EQ(closest_name("jbo", verbs), "job");
  EXPECT_EQ(closest_name("frobnicate", verbs), "");
  EXPECT_EQ(closest_name("x", {}), "");
  EXPECT_EQ(did_you_mean("nod", verbs), " (did you mean 'node'?)");
  EXPECT_EQ(did_you_mean("zzzzzz", verbs), "");
}

}  // namespace
}  // namespace arch
