// Fuzz target: a container's job identity from its spec (ARCH_JOB_ID, AWS_BATCH_JOB_ID,
// the CRI annotations), the container id being the input's first line.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "base/names.h"
#include "managed/job_identity.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto nl = text.find('\n');
  std::string_view id = nl == std::string_view::npos ? std::string_view("c0") : text.substr(0, nl);
  auto env = arch::parse_arch_env(nl == std::string_view::npos ? text : text.substr(nl + 1));
  if (!env) return 0;
  auto key = arch::resolve_job_key(*env, id);
  if (key && !arch::validate_name("key", key->key)) __builtin_trap();  // keys are always valid names
  (void)arch::looks_generated_pod_name(env->annotation("io.kubernetes.cri.sandbox-name"));
  return 0;
}
