// Fuzz target: a Docker config.v2.json's labels and the ECS owner derived from them.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "base/names.h"
#include "managed/docker_labels.h"
#include "managed/owner.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto labels = arch::parse_docker_labels(text);
  if (!labels) return 0;
  auto owner = arch::ecs_owner(*labels);
  // An owner is always one valid path component per part, never a path.
  if (owner && !owner->empty() && !arch::validate_owner(*owner)) __builtin_trap();
  return 0;
}
