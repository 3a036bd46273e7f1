// Tests for JobIdentity: which key a container gets and where it came from.
#include "managed/job_identity.h"

#include <gtest/gtest.h>

namespace arch {
namespace {

ArchEnv env_of(std::initializer_list<std::pair<const char*, const char*>> vars,
               std::initializer_list<std::pair<const char*, const char*>> annotations = {}) {
  ArchEnv env;
  for (const auto& [k, v] : vars) env.vars[k] = v;
  for (const auto& [k, v] : annotations) env.annotations[k] = v;
  return env;
}

const std::initializer_list<std::pair<const char*, const char*>> kStatefulPod = {
    {"io.kubernetes.cri.sandbox-name", "trainer-0"},
    {"io.kubernetes.cri.sandbox-namespace", "ml"},
    {"io.kubernetes.cri.container-name", "main"}};

TEST(JobIdentity, ArchJobIdWinsOverEverything) {
  auto key = resolve_job_key(
      env_of({{"ARCH_JOB_ID", "ledger-7"}, {"AWS_BATCH_JOB_ID", "b-1"}}, kStatefulPod), "c1");
  ASSERT_TRUE(key) << key.error().message();
  EXPECT_EQ(key->key, "ledger-7");
  EXPECT_EQ(key->source, kKeyFromJobId);
}

TEST(JobIdentity, InvalidArchJobIdIsAnError) {
  for (const char* bad : {"../x", "a/b", ".hidden", "with space"}) {
    auto key = resolve_job_key(env_of({{"ARCH_JOB_ID", bad}}), "c1");
    EXPECT_FALSE(key) << bad;
  }
}

TEST(JobIdentity, AwsBatchJobIdNextWithArrayIndexMadeValid) {
  auto key = resolve_job_key(
      env_of({{"AWS_BATCH_JOB_ID", "e7a2c5a4-1b2c-4c3d-9e8f-0a1b2c3d4e5f:12"}}, kStatefulPod),
      "c1");
  ASSERT_TRUE(key);
  EXPECT_EQ(key->key, "e7a2c5a4-1b2c-4c3d-9e8f-0a1b2c3d4e5f_12");
  EXPECT_EQ(key->source, kKeyFromBatch);
}

TEST(JobIdentity, StableKubernetesPodName) {
  auto key = resolve_job_key(env_of({}, kStatefulPod), "0123abcd");
  ASSERT_TRUE(key);
  EXPECT_EQ(key->key, "k8s-ml-trainer-0-main");
  EXPECT_EQ(key->source, kKeyFromKubernetes);
}

TEST(JobIdentity, GeneratedPodNameFallsBackToContainerIdWithAHint) {
  auto key = resolve_job_key(env_of({}, {{"io.kubernetes.cri.sandbox-name", "sim-job-x7k2q"},
                                         {"io.kubernetes.cri.sandbox-namespace", "ml"},
                                         {"io.kubernetes.cri.container-name", "main"}}),
                             "0123abcd");
  ASSERT_TRUE(key);
  EXPECT_EQ(key->key, "0123abcd");
  EXPECT_EQ(key->source, kKeyFromContainerId);
  EXPECT_NE(key->note.find("ARCH_JOB_ID"), std::string::npos);
}

TEST(JobIdentity, GeneratedNameDetection) {
  EXPECT_TRUE(looks_generated_pod_name("sim-job-x7k2q"));
  EXPECT_TRUE(looks_generated_pod_name("web-6d4cf56db6-zb2vw"));
  EXPECT_FALSE(looks_generated_pod_name("web-0"));
  EXPECT_FALSE(looks_generated_pod_name("trainer-12"));
  EXPECT_FALSE(looks_generated_pod_name("pod-aeiou"));  // vowels never appear in suffixes
  EXPECT_FALSE(looks_generated_pod_name("plain"));
}

TEST(JobIdentity, ContainerIdLast) {
  auto key = resolve_job_key(env_of({{"ARCH_ENABLE", "1"}}), "c-42");
  ASSERT_TRUE(key);
  EXPECT_EQ(key->key, "c-42");
  EXPECT_EQ(key->source, kKeyFromContainerId);
  EXPECT_FALSE(resolve_job_key(env_of({}), "../evil"));
}

TEST(JobIdentity, OrchestratorFromNamespaceOwnerOrBatchId) {
  EXPECT_EQ(orchestrator_of("k8s.io", "k8s.io+ml", env_of({}, kStatefulPod)), "kubernetes");
  EXPECT_EQ(orchestrator_of("moby", "ecs+prod+web", env_of({})), "ecs");
  EXPECT_EQ(orchestrator_of("default", "default", env_of({{"AWS_BATCH_JOB_ID", "b-1"}})),
            "aws-batch");
  // An explicit ARCH_JOB_ID does not make a Batch job any less Batch's.
  EXPECT_EQ(
      orchestrator_of("moby", "moby", env_of({{"ARCH_JOB_ID", "j"}, {"AWS_BATCH_JOB_ID", "b"}})),
      "aws-batch");
  EXPECT_EQ(orchestrator_of("default", "default", env_of({{"ARCH_JOB_ID", "j"}})), "");
  EXPECT_EQ(orchestrator_of("moby", "moby", env_of({})), "");
  // CRI annotations in another namespace are the tenant's, not the kubelet's.
  EXPECT_EQ(orchestrator_of("default", "default", env_of({}, kStatefulPod)), "");
}

}  // namespace
}  // namespace arch
