// HTTP replies of archd's API: the ErrorKind -> status table and JSON bodies.
#include "http_reply.h"

#include <httplib.h>

namespace arch::agent {

int http_status(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidInput:
      return 400;
    case ErrorKind::kPermission:
      return 403;
    case ErrorKind::kNotFound:
      return 404;
    case ErrorKind::kConflict:
      return 409;
    case ErrorKind::kUnsupported:
      return 501;
    case ErrorKind::kUnavailable:
      return 503;
    case ErrorKind::kTimeout:
      return 504;
    case ErrorKind::kInternal:
      return 500;
  }
  return 500;
}

void reply(httplib::Response& res, int status, const nlohmann::json& body) {
  res.status = status;
  res.set_content(body.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n",
                  "application/json");
}

void reply_error(httplib::Response& res, const Error& e) {
  reply(res, http_status(e.kind()), {{"error", e.message()}, {"kind", name(e.kind())}});
}

}  // namespace arch::agent
