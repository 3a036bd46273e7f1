// EnumNames: one table of an enum's text names, read both ways (to text, and parsed back).
#pragma once

#include <array>
#include <cstddef>
#include <optional>
#include <string_view>
#include <utility>

namespace arch {

/// An enum's names: `constexpr EnumNames<LogLevel, 4> kLevels{{{LogLevel::kError, "error"},
/// ...}};`, then `kLevels.name(level)` and `kLevels.parse("error")`. The first entry of a
/// value is its name; later entries of the same value are accepted spellings.
template <class E, std::size_t N>
struct EnumNames {
  std::array<std::pair<E, std::string_view>, N> entries;

  /// The value's name, or `fallback` for a value outside the table.
  [[nodiscard]] constexpr std::string_view name(E value, std::string_view fallback = "") const {
    for (const auto& [v, n] : entries) {
      if (v == value) return n;
    }
    return fallback;
  }
  /// The value named `text`, or nullopt.
  [[nodiscard]] constexpr std::optional<E> parse(std::string_view text) const {
    for (const auto& [v, n] : entries) {
      if (n == text) return v;
    }
    return std::nullopt;
  }
};

}  // namespace arch
