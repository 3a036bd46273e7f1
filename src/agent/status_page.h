// StatusPage: GET /status on archd's metrics address, a small read-only HTML view of the
// node for a person (node, drain state, the notice watcher, containers, the last drain,
// recent checkpoints and restores, recent events). Built from Agent::status()'s JSON; every
// value is HTML-escaped, and the page has no script and loads nothing from elsewhere (the
// server also sends a Content-Security-Policy that forbids both).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace arch::agent {

/// The Content-Security-Policy sent with the page: nothing but its own inline style.
inline constexpr const char* kStatusPagePolicy =
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'";

/// `text` with & < > " ' replaced by their character references.
std::string html_escape(std::string_view text);

/// The page for a status object as GET /v1/node/status returns it (missing members shown
/// as empty).
std::string render_status_page(const nlohmann::json& status);

}  // namespace arch::agent
