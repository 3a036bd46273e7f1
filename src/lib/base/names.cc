// Names: an allowed-character list, checked before any name becomes a path component.
// Part of arch_core (arch-runc checks ids on its hot path): no dependencies beyond libstdc++.
#include "base/names.h"

#include <cstdio>
#include <string>

namespace arch {
namespace {

bool allowed_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

// The name as it can be shown in an error: quoted, non-printable bytes escaped, cut short.
std::string printable(std::string_view name) {
  std::string out = "\"";
  for (std::size_t i = 0; i < name.size() && i < 64; ++i) {
    auto c = static_cast<unsigned char>(name[i]);
    if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
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
    return fail("invalid " + std::string(kind) + " " + printable(name) + ": " + std::string(why));
  };
  if (name.empty()) return refuse("empty");
  if (name.size() > kMaxNameLength) {
    return refuse(std::to_string(name.size()) + " characters, at most " +
                  std::to_string(kMaxNameLength) + " allowed");
  }
  if (name.front() == '.' || name.front() == '-') return refuse("starts with '.' or '-'");
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (!allowed_char(name[i])) {
      return refuse("character " + printable(name.substr(i, 1)) + " at offset " +
                    std::to_string(i) + " is not one of [A-Za-z0-9_.-]");
    }
  }
  return {};
}

Result<void> validate_owner(std::string_view name) {
  if (name.size() > kMaxNameLength) return validate_name("owner", name);  // Says why.
  std::size_t pos = 0;
  for (;;) {
    std::size_t plus = name.find('+', pos);
    auto part =
        name.substr(pos, plus == std::string_view::npos ? std::string_view::npos : plus - pos);
    if (auto ok = validate_name("owner part", part); !ok) {
      return fail("invalid owner " + printable(name) + ": " + ok.error().message());
    }
    if (plus == std::string_view::npos) return {};
    pos = plus + 1;
  }
}

}  // namespace arch
