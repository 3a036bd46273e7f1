// Fuzz target: open_sealed_manifest (the seal check a reader runs before it trusts a byte of
// a checkpoint) against a fixed keyring, and the spec digest and credential parsers on the
// same bytes read as an OCI spec and as /proc/<pid>/status text.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "runtime/spec_digest.h"
#include "store/node_key.h"
#include "store/seal.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const arch::Keyring keys = [] {
    arch::Keyring ring;
    auto key = arch::generate_node_key();
    if (!key) __builtin_trap();
    ring.add(*key, true);
    return ring;
  }();
  std::string_view text(reinterpret_cast<const char*>(data), size);
  // Nothing sealed with a key generated in this process can come from the fuzzer: any
  // manifest it accepts is a forged seal.
  if (arch::open_sealed_manifest(text, keys)) __builtin_trap();
  (void)arch::spec_digest(text);
  if (auto creds = arch::spec_credentials(text)) (void)arch::credential_excess(text, *creds);
  return 0;
}
