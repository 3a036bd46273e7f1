// Error: kinds, message formatting and wrapping.
#include "base/error.h"

#include <cstring>

#include "base/enum_names.h"

namespace arch {

namespace {

constexpr EnumNames<ErrorKind, 8> kKindNames{{{{ErrorKind::kInternal, "internal"},
                                               {ErrorKind::kNotFound, "not-found"},
                                               {ErrorKind::kInvalidInput, "invalid-input"},
                                               {ErrorKind::kConflict, "conflict"},
                                               {ErrorKind::kPermission, "permission"},
                                               {ErrorKind::kUnavailable, "unavailable"},
                                               {ErrorKind::kTimeout, "timeout"},
                                               {ErrorKind::kUnsupported, "unsupported"}}}};

}  // namespace

std::string_view name(ErrorKind kind) {
  return kKindNames.name(kind, "internal");
}

ErrorKind kind_of_errno(int err) {
  switch (err) {
    case ENOENT:
    case ESRCH:
    case ENXIO:
    case ENODEV:
      return ErrorKind::kNotFound;
    case EINVAL:
    case ENAMETOOLONG:
    case E2BIG:
    case ELOOP:
    case ENOTDIR:
    case EISDIR:
    case EBADMSG:
      return ErrorKind::kInvalidInput;
    case EEXIST:
    case EBUSY:
    case ENOTEMPTY:
    case ETXTBSY:
    case EWOULDBLOCK:
    case EALREADY:
      return ErrorKind::kConflict;
    case EACCES:
    case EPERM:
    case EROFS:
      return ErrorKind::kPermission;
    case ECONNREFUSED:
    case ECONNRESET:
    case ECONNABORTED:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case ENOTCONN:
      return ErrorKind::kUnavailable;
    case ETIMEDOUT:
    case ETIME:
      return ErrorKind::kTimeout;
    case ENOTSUP:
    case ENOSYS:
    case EAFNOSUPPORT:
    case EPROTONOSUPPORT:
      return ErrorKind::kUnsupported;
    default:
      return ErrorKind::kInternal;
  }
}

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

Error Error::with_kind(ErrorKind kind) const {
  Error out = *this;
  out.kind_ = kind;
  return out;
}

Error errno_error(std::string what) {
  return Error(std::move(what), errno);
}

}  // namespace arch
