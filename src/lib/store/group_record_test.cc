// GroupRecord: the record round-trips, and a generation is usable only when the record and
// every member generation it names verify.
#include "store/group_record.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "store/seal.h"

namespace arch {
namespace {

namespace fs = std::filesystem;

class GroupRecordTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("arch-group-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
    auto key = generate_node_key();
    ASSERT_TRUE(key);
    auto ring = std::make_shared<Keyring>();
    ring->add(*key, true);
    store_.emplace((root_ / "store").string(), 2, ring);
  }
  void TearDown() override { fs::remove_all(root_); }

  // A member generation of `key` naming group "g", generation `gen`.
  GroupMember member(const std::string& key, const std::string& gen) {
    auto lock = store_->lock("o", key);
    EXPECT_TRUE(lock);
    auto staging = store_->begin(*lock);
    std::ofstream(staging->path() + "/images") << "pages of " << key;
    Manifest m;
    m.extra = {{"group", {{"name", "g"}, {"generation", gen}}}};
    auto path = store_->commit_unpruned(std::move(*staging), m, *lock);
    EXPECT_TRUE(path) << path.error().message();
    std::string name = path->substr(path->rfind('/') + 1);
    auto read = store_->read_verified("o", key, name, false);
    EXPECT_TRUE(read);
    return {key, key + "-id", name, read->seal.mac};
  }

  GroupRecord record(const std::string& gen) {
    GroupRecord r{"o", "g", gen, {member("a", gen), member("b", gen)}, ""};
    auto committed = commit_group_record(*store_, r);
    EXPECT_TRUE(committed) << committed.error().message();
    return r;
  }

  fs::path root_;
  std::optional<CheckpointStore> store_;
};

TEST(GroupRecord, RoundTripsAndRefusesMalformed) {
  GroupRecord r{"k8s.io+a", "web", "abc", {{"x", "id", "ckpt-1", "00"}}, ""};
  auto back = parse_group_record(serialize_group_record(r));
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->members, r.members);
  EXPECT_EQ(back->owner, "k8s.io+a");
  EXPECT_FALSE(parse_group_record(R"({"format":1,"owner":"o","name":"../x","generation":"a",
    "members":[{"key":"k","container_id":"c","checkpoint":"ckpt-1","seal_mac":"0"}]})"));
  EXPECT_FALSE(parse_group_record(R"({"format":1,"owner":"o","name":"g","generation":"a",
    "members":[{"key":"k","container_id":"c","checkpoint":"ckpt-1","seal_mac":"0"},
               {"key":"k","container_id":"d","checkpoint":"ckpt-2","seal_mac":"0"}]})"));
  EXPECT_FALSE(parse_group_record(R"({"format":2,"owner":"o","name":"g","generation":"a",
    "members":[]})"));
  EXPECT_FALSE(validate_group_name(std::string(101, 'a')));
  EXPECT_FALSE(validate_group_name("a/b"));
  EXPECT_TRUE(validate_group_name("pair-1.x"));
}

TEST(GroupRecord, CrossNodeMembersKeepTheirNodeAndARestoreWaitsForItsOwn) {
  GroupRecord r{"o",
                "g",
                "abc",
                {{"c", "c1", "ckpt-1", "00", "node-a"},
                 {"s", "s1", "ckpt-2", "11", "node-b"},
                 {"t", "t1", "ckpt-3", "22", "node-b"}},
                ""};
  auto back = parse_group_record(serialize_group_record(r));
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->members, r.members);
  auto keys = [](const GroupRecord& x) {
    std::vector<std::string> out;
    for (const auto& m : x.members) out.push_back(m.key);
    return out;
  };
  EXPECT_EQ(keys(members_on_node(r, "node-b", "s")), (std::vector<std::string>{"s", "t"}));
  EXPECT_EQ(keys(members_on_node(r, "node-a", "c")), (std::vector<std::string>{"c"}));
  // Rescheduled onto a node that held none: every member comes back there.
  EXPECT_EQ(keys(members_on_node(r, "node-z", "c")), (std::vector<std::string>{"c", "s", "t"}));
  // A one-node record (no node): all of them, wherever.
  GroupRecord local{"o", "g", "abc", {{"x", "x", "ckpt-1", "0"}, {"y", "y", "ckpt-2", "1"}}, ""};
  EXPECT_EQ(members_on_node(local, "node-a", "x").members.size(), 2u);
  // A malformed node name is refused.
  EXPECT_FALSE(parse_group_record(R"({"format":1,"owner":"o","name":"g","generation":"a",
    "members":[{"key":"k","container_id":"c","checkpoint":"ckpt-1","seal_mac":"0",
    "node":"../x"}]})"));
}

TEST_F(GroupRecordTest, NewestCompleteGenerationVerifies) {
  record("gen1");
  auto second = record("gen2");
  auto records = group_records(*store_, "o", "g");
  ASSERT_TRUE(records) << records.error().message();
  ASSERT_EQ(records->size(), 2u);
  EXPECT_EQ(records->front().generation, "gen2");
  EXPECT_TRUE(check_group_generation(*store_, records->front(), true));
  // Another owner's group of the same name has none.
  auto other = group_records(*store_, "p", "g");
  ASSERT_TRUE(other);
  EXPECT_TRUE(other->empty());
}

TEST_F(GroupRecordTest, AMemberThatDoesNotVerifyMakesTheGenerationUnusable) {
  record("gen1");
  auto records = group_records(*store_, "o", "g");
  ASSERT_TRUE(records && records->size() == 1);
  // A member's pages changed: its own files do not match its seal.
  const auto& b = records->front().members[1];
  std::ofstream(root_ / "store/o" / b.key / b.checkpoint / "images") << "tampered";
  auto ok = check_group_generation(*store_, records->front(), true);
  ASSERT_FALSE(ok);
  EXPECT_NE(ok.error().message().find("member b"), std::string::npos) << ok.error().message();
  // A member generation that is gone.
  fs::remove_all(root_ / "store/o" / b.key / b.checkpoint);
  EXPECT_FALSE(check_group_generation(*store_, records->front(), false));
}

TEST_F(GroupRecordTest, ATamperedRecordIsLeftOut) {
  record("gen1");
  auto records = group_records(*store_, "o", "g");
  ASSERT_TRUE(records && records->size() == 1);
  std::ofstream(records->front().path + "/group.json") << "{}";
  std::vector<std::string> refused;
  auto again = group_records(*store_, "o", "g", &refused);
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->empty());
  ASSERT_EQ(refused.size(), 1u);
}

TEST_F(GroupRecordTest, ARecordNamingAnotherMembersSealIsRefused) {
  record("gen1");
  auto records = group_records(*store_, "o", "g");
  ASSERT_TRUE(records && records->size() == 1);
  GroupRecord forged = records->front();
  std::swap(forged.members[0].seal_mac, forged.members[1].seal_mac);
  EXPECT_FALSE(check_group_generation(*store_, forged, false));
  GroupRecord other_gen = records->front();
  other_gen.generation = "gen9";
  EXPECT_FALSE(check_group_generation(*store_, other_gen, false));
}

}  // namespace
}  // namespace arch
