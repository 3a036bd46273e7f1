// Host: gethostname(2) and uname(2).
#include "base/host.h"

#include <sys/utsname.h>
#include <unistd.h>

namespace arch {

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "";
  return buf;
}

std::string kernel_release() {
  utsname u{};
  return ::uname(&u) == 0 ? u.release : "";
}

}  // namespace arch
