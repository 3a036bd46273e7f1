// Tests for OciSpec: ARCH_* detection in config.json.
#include "runtime/oci_spec.h"

#include <gtest/gtest.h>

namespace arch {
namespace {

TEST(OciSpec, DetectsArchEnable) {
  auto env = parse_arch_env(
      R"({"ociVersion":"1.0.2","process":{"env":["PATH=/bin","ARCH_ENABLE=1","ARCH_CHECKPOINT_HOST_PATH=/ckpt"]}})");
  ASSERT_TRUE(env) << env.error().message();
  EXPECT_TRUE(env->enabled());
  EXPECT_EQ(env->get("ARCH_CHECKPOINT_HOST_PATH"), "/ckpt");
  EXPECT_EQ(env->vars.size(), 2u);
}

TEST(OciSpec, NotEnabledUnlessOne) {
  for (const char* value : {"0", "", "yes", "false"}) {
    auto env =
        parse_arch_env(std::string(R"({"process":{"env":["ARCH_ENABLE=)") + value + R"("]}})");
    ASSERT_TRUE(env);
    EXPECT_FALSE(env->enabled()) << value;
  }
  auto none = parse_arch_env(R"({"process":{"env":["PATH=/bin","XARCH_ENABLE=1"]}})");
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->enabled());
  EXPECT_TRUE(parse_arch_env(R"({"root":{"path":"rootfs"}})").has_value());
}

TEST(OciSpec, LastDefinitionWins) {
  auto env = parse_arch_env(R"({"process":{"env":["ARCH_ENABLE=1","ARCH_ENABLE=0"]}})");
  ASSERT_TRUE(env);
  EXPECT_FALSE(env->enabled());
}

TEST(OciSpec, MalformedSpecsGiveClearErrors) {
  auto truncated = parse_arch_env(R"({"process":{"env":["ARCH_ENABLE=1")");
  ASSERT_FALSE(truncated);
  EXPECT_NE(truncated.error().message().find("not valid JSON"), std::string::npos);
  EXPECT_FALSE(parse_arch_env("[]"));
  EXPECT_FALSE(parse_arch_env(R"({"process":"x"})"));
  EXPECT_FALSE(parse_arch_env(R"({"process":{"env":"ARCH_ENABLE=1"}})"));
  EXPECT_FALSE(parse_arch_env(R"({"process":{"env":[1,2]}})"));
}

TEST(OciSpec, MissingBundleNamesThePath) {
  auto env = read_arch_env("/nonexistent-bundle");
  ASSERT_FALSE(env);
  EXPECT_NE(env.error().message().find("/nonexistent-bundle/config.json"), std::string::npos);
  EXPECT_EQ(env.error().code(), ENOENT);
}

TEST(OciSpec, CriuConfigAnnotationIsFound) {
  EXPECT_EQ(criu_config_from_spec(R"({"process":{}})").value(), "");
  EXPECT_EQ(criu_config_from_spec(R"({"annotations":{"a":"b"}})").value(), "");
  EXPECT_EQ(criu_config_from_spec(R"({"annotations":{"org.criu.config":"/x.conf"}})").value(),
            "/x.conf");
  EXPECT_EQ(criu_config_from_spec(R"({"annotations":{"org.criu.config":""}})").value(), "");
  EXPECT_EQ(criu_config_from_spec(R"({"annotations":{"org.criu.config":["/x"]}})").value(),
            R"(["/x"])");
  EXPECT_FALSE(criu_config_from_spec("not json"));
}

}  // namespace
}  // namespace arch
