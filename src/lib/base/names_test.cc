// Tests for validate_name: the allowed characters, lengths and leading characters.
#include "base/names.h"

#include <gtest/gtest.h>

#include <string>

namespace arch {
namespace {

TEST(Names, AcceptsIdsNamespacesAndKeys) {
  for (const char* ok : {"a", "default", "k8s.io", "moby", "job-42", "A_b.c-D", "x..y",
                         "0123456789abcdef0123456789abcdef", "a.", "a-"}) {
    EXPECT_TRUE(validate_name("key", ok)) << ok;
  }
  EXPECT_TRUE(validate_name("key", std::string(kMaxNameLength, 'k')));
}

TEST(Names, RefusesPathsAndOddCharacters) {
  for (const char* bad : {"", ".", "..", "../x", "a/b", "/abs", ".hidden", "-x", "a b", "a\nb",
                          "a:b", "ä", "a\\b", "*"}) {
    EXPECT_FALSE(validate_name("key", bad)) << bad;
  }
  EXPECT_FALSE(validate_name("key", std::string(kMaxNameLength + 1, 'k')));
  EXPECT_FALSE(validate_name("key", std::string_view("a\0b", 3)));
}

TEST(Names, ErrorSaysWhichKindAndWhy) {
  auto slash = validate_name("namespace", "a/b");
  ASSERT_FALSE(slash);
  EXPECT_NE(slash.error().message().find("invalid namespace \"a/b\""), std::string::npos)
      << slash.error().message();
  EXPECT_NE(slash.error().message().find("\"/\" at offset 1"), std::string::npos);

  auto empty = validate_name("container id", "");
  ASSERT_FALSE(empty);
  EXPECT_NE(empty.error().message().find("container id"), std::string::npos);
  EXPECT_NE(empty.error().message().find("empty"), std::string::npos);

  auto lng = validate_name("key", std::string(129, 'k'));
  ASSERT_FALSE(lng);
  EXPECT_NE(lng.error().message().find("129 characters"), std::string::npos);

  auto dot = validate_name("key", "..");
  ASSERT_FALSE(dot);
  EXPECT_NE(dot.error().message().find("starts with '.'"), std::string::npos);

  auto ctl = validate_name("key", "a\x01");
  ASSERT_FALSE(ctl);
  EXPECT_NE(ctl.error().message().find("\\x01"), std::string::npos) << ctl.error().message();
}

}  // namespace
}  // namespace arch
