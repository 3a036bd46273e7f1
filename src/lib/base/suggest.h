// Suggest: "did you mean ...?" for a mistyped name among the known ones (config keys,
// archctl verbs), by edit distance.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace arch {

/// The edit distance (insertions, deletions, substitutions, adjacent swaps) of a and b.
std::size_t edit_distance(std::string_view a, std::string_view b);

/// The candidate closest to `typed` when it is close enough to be a typo (distance at
/// most a third of the longer name, and at least 1 edit allowed); empty when none is.
std::string closest_name(std::string_view typed, const std::vector<std::string>& candidates);

/// " (did you mean 'x'?)" for closest_name(), or "" when there is no close candidate.
std::string did_you_mean(std::string_view typed, const std::vector<std::string>& candidates);

}  // namespace arch
