// Names: an allowed-character list, checked before any name becomes a path component.
#include "names.h"

#include <fmt/core.h>

#include <string>

namespace arch {
namespace {

bool allowed_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '_' || c == '.' || c == '-';
}

// The name as it can be shown in an error: quoted, non-printable bytes escaped, cut short.
std::string printable(std::string_view name) {
  std::string out = "\"";
  for (std::size_t i = 0; i < name.size() && i < 64; ++i) {
    auto c = static_cast<unsigned char>(name[i]);
    if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  if (name.size() > 64) out += "...";
  return out + "\"";
}

}  // namespace

Result<void> validate_name(std::string_view kind, std::string_view name) {
  auto refuse = [&](std::string_view why) {
    return fail(fmt::format("invalid {} {}: {}", kind, printable(name), why));
  };
  if (name.empty()) return refuse("empty");
  if (name.size() > kMaxNameLength) {
    return refuse(fmt::format("{} characters, at most {} allowed", name.size(), kMaxNameLength));
  }
  if (name.front() == '.' || name.front() == '-') return refuse("starts with '.' or '-'");
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (!allowed_char(name[i])) {
      return refuse(fmt::format("character {} at offset {} is not one of [A-Za-z0-9_.-]",
                                printable(name.substr(i, 1)), i));
    }
  }
  return {};
}

}  // namespace arch
