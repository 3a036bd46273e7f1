// Lower-case hexadecimal text of bytes: digests, MACs and key ids as ARCH writes them.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace arch {

/// The `n` bytes at `p` as 2n lower-case hex digits.
std::string to_hex(const unsigned char* p, std::size_t n);
/// The bytes of `bytes` as lower-case hex digits.
std::string to_hex(std::string_view bytes);

}  // namespace arch
