// Fuzz target: the zstd frame walker (ZstdWindowCheck), fed whole and in two pieces.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "base/expansion_limit.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  arch::ZstdWindowCheck whole;
  bool ok = whole.feed(text).has_value();
  arch::ZstdWindowCheck split;
  size_t cut = size / 3;
  bool ok2 = split.feed(text.substr(0, cut)).has_value() && split.feed(text.substr(cut)).has_value();
  if (ok != ok2) __builtin_trap();  // the result must not depend on how bytes arrive
  return 0;
}
