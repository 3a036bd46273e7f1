// Tests for the unit tests' TempDir: unique, private, and gone with its contents.
#include "base/temp_dir.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>

namespace arch {
namespace {

TEST(TempDir, IsFreshPrivateAndRemovedWithItsContents) {
  std::string kept;
  {
    TempDir a("arch-tempdir-"), b("arch-tempdir-");
    EXPECT_NE(a.path(), b.path());
    struct stat st {};
    ASSERT_EQ(::stat(a.path().c_str(), &st), 0);
    EXPECT_TRUE(S_ISDIR(st.st_mode));
    EXPECT_EQ(st.st_mode & 0777, 0700u);
    std::filesystem::create_directories(a / "x/y");
    std::ofstream(a / "x/y/f") << "data";
    EXPECT_EQ(a / "x", a.path() + "/x");
    kept = a.path();
  }
  EXPECT_FALSE(std::filesystem::exists(kept));
}

TEST(TempDir, AnImpossiblePrefixThrows) {
  EXPECT_THROW(TempDir("no-such-dir/x-"), std::runtime_error);
}

}  // namespace
}  // namespace arch
