// Error: message formatting and wrapping.
#include "base/error.h"

#include <cstring>

namespace arch {

std::string Error::message() const {
  if (errno_ == 0) return message_;
  std::string out = message_;
  out += ": ";
  out += std::strerror(errno_);
  return out;
}

Error Error::wrap(std::string_view context) const {
  Error wrapped = *this;
  wrapped.message_.insert(0, ": ");
  wrapped.message_.insert(0, context);
  return wrapped;
}

Error errno_error(std::string what) {
  return Error(std::move(what), errno);
}

}  // namespace arch
