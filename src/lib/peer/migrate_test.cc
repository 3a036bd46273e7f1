// Migrate: what the source serves of a page export, and to whom.
#include "peer/migrate.h"

#include <gtest/gtest.h>

namespace arch {
namespace {

const std::string kId = std::string(32, 'a');

TEST(PageExport, ServedOnlyToItsPeerWithinTheFile) {
  register_page_export(kId, "b", "/store/ns/key/ckpt-1", {{"pages-1.img", 3 << 20}});
  auto ok = check_pages_read(kId, "b", "pages-1.img", 1 << 20, 1 << 20);
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_EQ(*ok, "/store/ns/key/ckpt-1/images/pages-1.img");
  EXPECT_TRUE(check_pages_read(kId, "b", "pages-1.img", (3 << 20) - 4096, 4096));
  // Another peer, another export, another file: the same refusal for unknown and foreign.
  EXPECT_FALSE(check_pages_read(kId, "c", "pages-1.img", 0, 4096));
  EXPECT_FALSE(check_pages_read(std::string(32, 'b'), "b", "pages-1.img", 0, 4096));
  EXPECT_EQ(check_pages_read(kId, "c", "pages-1.img", 0, 4096).error().message(),
            check_pages_read(std::string(32, 'b'), "c", "pages-1.img", 0, 4096).error().message());
  EXPECT_FALSE(check_pages_read(kId, "b", "pages-2.img", 0, 4096));
  EXPECT_FALSE(check_pages_read(kId, "b", "../manifest.json", 0, 4096));
  EXPECT_FALSE(check_pages_read(kId, "b", "pagemap-1.img", 0, 4096));
  // Out of bounds, wrapping, empty, over a bulk frame.
  EXPECT_FALSE(check_pages_read(kId, "b", "pages-1.img", 3 << 20, 1));
  EXPECT_FALSE(check_pages_read(kId, "b", "pages-1.img", (3 << 20) - 4096, 8192));
  EXPECT_FALSE(check_pages_read(kId, "b", "pages-1.img", UINT64_MAX - 100, 4096));
  EXPECT_FALSE(check_pages_read(kId, "b", "pages-1.img", 0, 0));
  EXPECT_FALSE(check_pages_read(kId, "b", "pages-1.img", 0, kMaxBulkFrame + 1));
  unregister_page_export(kId);
  EXPECT_FALSE(check_pages_read(kId, "b", "pages-1.img", 0, 4096));
}

TEST(MigrationOrigin, ReadFromTheSealedManifestOnly) {
  Manifest m;
  auto none = migration_origin(m);
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());
  m.extra = {{"migration", migration_origin_json({"node-a", kId})}};
  auto o = migration_origin(m);
  ASSERT_TRUE(o && o->has_value());
  EXPECT_EQ((*o)->node, "node-a");
  m.extra["migration"]["node"] = "../etc";
  EXPECT_FALSE(migration_origin(m));
  m.extra["migration"] = {{"node", "a"}, {"export", "x"}};
  EXPECT_FALSE(migration_origin(m));
}

}  // namespace
}  // namespace arch
