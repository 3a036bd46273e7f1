// JobIdentity: ARCH_JOB_ID > AWS_BATCH_JOB_ID > stable Kubernetes identity > container id.
#include "managed/job_identity.h"

#include "base/names.h"
#include "managed/owner.h"

namespace arch {
namespace {

// Kubernetes' generateName suffix alphabet (k8s.io/apimachinery/pkg/util/rand): no vowels,
// no 0, 1 or 3, so that generated names do not spell words.
constexpr std::string_view kGeneratedAlphabet = "bcdfghjklmnpqrstvwxz2456789";
constexpr std::size_t kGeneratedSuffixLength = 5;

// `raw` with every character outside [A-Za-z0-9_.-] replaced by '_', a leading '.' or '-'
// replaced too, cut to the longest valid name.
std::string sanitize(std::string_view raw) {
  std::string out;
  for (char c : raw.substr(0, kMaxNameLength)) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-';
    out += ok ? c : '_';
  }
  if (!out.empty() && (out.front() == '.' || out.front() == '-')) out.front() = '_';
  return out;
}

}  // namespace

bool looks_generated_pod_name(std::string_view pod_name) {
  auto dash = pod_name.rfind('-');
  if (dash == std::string_view::npos) return false;
  std::string_view suffix = pod_name.substr(dash + 1);
  if (suffix.size() != kGeneratedSuffixLength) return false;
  return suffix.find_first_not_of(kGeneratedAlphabet) == std::string_view::npos;
}

std::string orchestrator_of(std::string_view ns, std::string_view owner, const ArchEnv& env) {
  if (ns == kCriNamespace) return "kubernetes";
  if (owner.starts_with("ecs+")) return "ecs";
  if (!env.get("AWS_BATCH_JOB_ID").empty()) return "aws-batch";
  return {};
}

Result<JobKey> resolve_job_key(const ArchEnv& env, std::string_view container_id) {
  if (auto job = env.get("ARCH_JOB_ID"); !job.empty()) {
    if (auto ok = validate_name("ARCH_JOB_ID", job); !ok) return std::unexpected(ok.error());
    return JobKey{std::string(job), std::string(kKeyFromJobId), {}};
  }
  if (auto batch = env.get("AWS_BATCH_JOB_ID"); !batch.empty()) {
    // Array-job children are "<uuid>:<index>": the ':' becomes '_'.
    return JobKey{sanitize(batch), std::string(kKeyFromBatch), {}};
  }
  std::string note;
  std::string_view pod = env.annotation("io.kubernetes.cri.sandbox-name");
  std::string_view pod_ns = env.annotation("io.kubernetes.cri.sandbox-namespace");
  std::string_view container = env.annotation("io.kubernetes.cri.container-name");
  if (!pod.empty() && !pod_ns.empty() && !container.empty()) {
    if (!looks_generated_pod_name(pod)) {
      std::string key = sanitize("k8s-" + std::string(pod_ns) + "-" + std::string(pod) + "-" +
                                 std::string(container));
      return JobKey{key, std::string(kKeyFromKubernetes), {}};
    }
    note = "pod name " + std::string(pod) +
           " looks generated (it changes when the pod is replaced): set ARCH_JOB_ID from the "
           "downward API for a key that survives rescheduling";
  }
  if (auto ok = validate_name("container id", container_id); !ok)
    return std::unexpected(ok.error());
  return JobKey{std::string(container_id), std::string(kKeyFromContainerId), note};
}

}  // namespace arch
