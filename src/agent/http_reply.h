// HTTP replies of archd's API: JSON bodies, and the one table from ErrorKind to HTTP status.
#pragma once

#include <nlohmann/json.hpp>

#include "base/error.h"

namespace httplib {
struct Response;
}

namespace arch::agent {

/// The HTTP status archd answers for an error of `kind`: 400 invalid input, 403 permission,
/// 404 not found, 409 conflict, 501 unsupported, 503 unavailable, 504 timeout, 500 otherwise.
/// archctl reads it back in cli/exit_codes.h.
int http_status(ErrorKind kind);

/// Sets `res` to `status` with `body` as pretty JSON (invalid UTF-8 replaced, never thrown).
void reply(httplib::Response& res, int status, const nlohmann::json& body);

/// Sets `res` to the error's status and {"error": message, "kind": "not-found"}.
void reply_error(httplib::Response& res, const Error& e);

}  // namespace arch::agent
