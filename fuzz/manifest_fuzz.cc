// Fuzz target: parse_manifest, and that what it accepts serializes and parses back equal.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "store/manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto m = arch::parse_manifest({reinterpret_cast<const char*>(data), size});
  if (!m) return 0;
  auto again = arch::parse_manifest(arch::serialize_manifest(*m));
  if (!again || !(*again == *m)) __builtin_trap();
  return 0;
}
