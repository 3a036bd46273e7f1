// Tests for the manifest seal: every bound field, a wrong key, unsealed and reserved formats.
#include "store/seal.h"

#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>

namespace arch {
namespace {

NodeKey key_or_die() {
  auto k = generate_node_key();
  EXPECT_TRUE(k);
  return *k;
}

Manifest sample() {
  Manifest m;
  m.ns = "tenant-a";
  m.key = "job-1";
  m.container_id = "c1";
  m.node = "node-1";
  m.image = "busybox";
  m.created = "2026-12-06T08:00:00.000000000Z";
  m.versions = {"1.0", "criu 4.2", "runc 1.1", "6.18"};
  m.timings_ms = {{"dump", 812.5}, {"total", 1000.25}};
  m.files = {{"images/pages-1.img", 4096, std::string(64, 'a')},
             {"rootfs-diff.tar", 10, std::string(64, 'b')}};
  m.extra = {{"rootfs_diff", {{"bytes", 100}, {"entries", 3}}}};
  m.spec.digest = std::string(64, 'c');
  m.spec.fields = {{"process.capabilities.bounding", std::string(64, 'd')}};
  return m;
}

Keyring ring_of(const NodeKey& k) {
  Keyring r;
  r.add(k, true);
  return r;
}

TEST(Seal, ASealedManifestOpensWithItsKeyAndRoundTrips) {
  NodeKey k = key_or_die();
  auto text = seal_manifest(sample(), k);
  ASSERT_TRUE(text) << text.error().message();
  auto m = open_sealed_manifest(*text, ring_of(k));
  ASSERT_TRUE(m) << m.error().message();
  Manifest want = sample();
  want.format_version = kManifestFormatVersion;
  want.seal = m->seal;
  EXPECT_EQ(*m, want);
  EXPECT_EQ(m->seal.alg, "HMAC-SHA256");
  EXPECT_EQ(m->seal.key_id, k.id);
  EXPECT_EQ(m->seal.mac.size(), 64u);
  EXPECT_NE(text->find("\"encryption\": null"), std::string::npos) << *text;
}

// Each bound field, changed after sealing, makes the manifest refused.
TEST(Seal, ChangingAnyBoundFieldIsRefused) {
  NodeKey k = key_or_die();
  auto text = seal_manifest(sample(), k);
  ASSERT_TRUE(text);
  const auto doc = nlohmann::json::parse(*text);
  std::vector<std::pair<std::string, std::function<void(nlohmann::json&)>>> edits = {
      {"format_version", [](auto& j) { j["format_version"] = 1; }},
      {"owner", [](auto& j) { j["namespace"] = "tenant-b"; }},
      {"key", [](auto& j) { j["key"] = "job-2"; }},
      {"node", [](auto& j) { j["node"] = "node-2"; }},
      {"container id", [](auto& j) { j["container_id"] = "c2"; }},
      {"file name", [](auto& j) { j["files"][0]["path"] = "images/pages-2.img"; }},
      {"file size", [](auto& j) { j["files"][0]["size"] = 4097; }},
      {"file digest", [](auto& j) { j["files"][1]["sha256"] = std::string(64, 'e'); }},
      {"file added",
       [](auto& j) {
         j["files"].push_back({{"path", "x"}, {"size", 1}, {"sha256", std::string(64, 'f')}});
       }},
      {"file removed", [](auto& j) { j["files"].erase(1); }},
      {"spec digest", [](auto& j) { j["spec"]["digest"] = std::string(64, '0'); }},
      {"spec field", [](auto& j) { j["spec"]["fields"]["process.user.uid"] = "1"; }},
      {"extra", [](auto& j) { j["extra"]["rootfs_diff"]["bytes"] = 1 << 30; }},
      {"encryption",
       [](auto& j) {
         j["encryption"] = {{"alg", "none"}};
       }},
      {"unknown field", [](auto& j) { j["future"] = true; }},
      {"key id", [](auto& j) { j["seal"]["key_id"] = "0123456789abcdef"; }},
      {"mac", [](auto& j) { j["seal"]["mac"] = std::string(64, '0'); }},
      {"alg", [](auto& j) { j["seal"]["alg"] = "none"; }},
      {"seal removed", [](auto& j) { j.erase("seal"); }},
  };
  for (const auto& [name, edit] : edits) {
    SCOPED_TRACE(name);
    nlohmann::json j = doc;
    edit(j);
    auto m = open_sealed_manifest(j.dump(2), ring_of(k));
    ASSERT_FALSE(m);
    EXPECT_EQ(m.error().code(), EBADMSG);
    EXPECT_NE(m.error().message().find("not restored"), std::string::npos) << m.error().message();
  }
  // Formatting alone is not a change: the same document in another layout opens.
  EXPECT_TRUE(open_sealed_manifest(doc.dump(), ring_of(k)));
}

TEST(Seal, AnotherKeyOrNoKeyIsRefusedAndTheReasonSaysWhich) {
  NodeKey mine = key_or_die(), theirs = key_or_die();
  auto text = seal_manifest(sample(), theirs);
  ASSERT_TRUE(text);
  auto m = open_sealed_manifest(*text, ring_of(mine));
  ASSERT_FALSE(m);
  EXPECT_NE(m.error().message().find("does not hold"), std::string::npos) << m.error().message();
  EXPECT_FALSE(open_sealed_manifest(*text, Keyring{}));
  // Same key id, other secret (a forged key file): the MAC fails.
  NodeKey forged{theirs.id, mine.secret};
  Keyring ring;
  ring.add(forged, true);
  auto f = open_sealed_manifest(*text, ring);
  ASSERT_FALSE(f);
  EXPECT_NE(f.error().message().find("MAC does not match"), std::string::npos);
}

TEST(Seal, FormatOneManifestsAreUnsealedAndRefused) {
  NodeKey k = key_or_die();
  Manifest m = sample();
  m.format_version = 1;
  auto r = open_sealed_manifest(serialize_manifest(m), ring_of(k));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("unsealed checkpoint (manifest format 1"), std::string::npos)
      << r.error().message();
  // But a listing can still read it.
  EXPECT_TRUE(parse_manifest(serialize_manifest(m)));
}

TEST(Seal, RotationKeepsOldSealsValid) {
  NodeKey old_key = key_or_die(), new_key = key_or_die();
  auto old_text = seal_manifest(sample(), old_key);
  ASSERT_TRUE(old_text);
  Keyring ring;
  ring.add(old_key, false);
  ring.add(new_key, true);
  EXPECT_TRUE(open_sealed_manifest(*old_text, ring));
  EXPECT_EQ(ring.active()->id, new_key.id);
}

TEST(Seal, SealedButEncryptedIsRefusedByThisReader) {
  NodeKey k = key_or_die();
  Manifest m = sample();
  m.encryption = {{"alg", "AES-256-GCM"}};
  auto text = seal_manifest(m, k);
  ASSERT_TRUE(text);
  auto r = open_sealed_manifest(*text, ring_of(k));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("encrypted"), std::string::npos) << r.error().message();
}

TEST(Seal, StreamEncryptionIsReadAndBoundByTheSeal) {
  NodeKey k = key_or_die();
  Manifest m = sample();
  m.encryption = stream_encryption(std::string(32, 'a'));
  auto text = seal_manifest(m, k);
  ASSERT_TRUE(text);
  auto r = open_sealed_manifest(*text, ring_of(k));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(manifest_stream_id(*r), std::string(32, 'a'));
  // Another stream id (chunks of another checkpoint would then verify): the seal breaks.
  std::string other = *text;
  other.replace(other.find(std::string(32, 'a')), 32, std::string(32, 'b'));
  EXPECT_FALSE(open_sealed_manifest(other, ring_of(k)));
  // Variants this reader does not know are refused even when sealed.
  for (auto e :
       {nlohmann::json{{"format", "arch-image-stream-v2"},
                       {"alg", "AES-256-GCM"},
                       {"stream_id", std::string(32, 'a')}},
        nlohmann::json{
            {"format", "arch-image-stream-v1"}, {"alg", "AES-256-GCM"}, {"stream_id", "short"}}}) {
    m.encryption = e;
    auto t = seal_manifest(m, k);
    ASSERT_TRUE(t);
    EXPECT_FALSE(open_sealed_manifest(*t, ring_of(k))) << e.dump();
  }
}

TEST(Seal, GarbageIsRefusedWithoutThrowing) {
  NodeKey k = key_or_die();
  for (const char* text : {"", "[]", "{", "{\"format_version\": \"2\"}", "{\"format_version\": 2}",
                           "{\"format_version\": 2, \"seal\": 5}",
                           "{\"format_version\": 2, \"seal\": {\"alg\": 1}}"}) {
    EXPECT_FALSE(open_sealed_manifest(text, ring_of(k))) << text;
  }
}

}  // namespace
}  // namespace arch
