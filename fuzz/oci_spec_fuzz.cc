// Fuzz target: the OCI spec fields ARCH reads (config.json -> ARCH_* env, CRI annotations).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "runtime/oci_spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto env = arch::parse_arch_env({reinterpret_cast<const char*>(data), size});
  if (env) {
    (void)env->enabled();
    (void)env->get("ARCH_JOB_ID");
    (void)env->annotation("io.kubernetes.cri.sandbox-namespace");
  }
  return 0;
}
