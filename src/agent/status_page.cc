// StatusPage: the HTML of GET /status, one table per part of the node's status.
#include "status_page.h"

#include <fmt/core.h>

#include <initializer_list>
#include <vector>

#include "base/clock.h"

namespace arch::agent {
namespace {

using nlohmann::json;

constexpr std::size_t kRecentOperations = 20;

// A member as text: strings as they are, times (seconds since the epoch) as UTC, null as "".
std::string text(const json& j, const char* key, bool is_time = false) {
  if (!j.is_object()) return {};
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return {};
  if (it->is_string()) return it->get<std::string>();
  if (is_time && it->is_number() && it->get<double>() > 0)
    return format_utc(static_cast<long>(it->get<double>()));
  if (it->is_boolean()) return it->get<bool>() ? "yes" : "no";
  if (it->is_number_float()) return fmt::format("{:.2f}", it->get<double>());
  return it->dump(-1, ' ', false, json::error_handler_t::replace);
}

// A member, or null (any shape of input is shown, none throws).
json member(const json& j, const char* key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  return it == j.end() ? json(nullptr) : *it;
}

// The elements of an array member that are objects.
std::vector<json> objects(const json& j, const char* key) {
  std::vector<json> out;
  json list = member(j, key);
  if (!list.is_array()) return out;
  for (const auto& e : list) {
    if (e.is_object()) out.push_back(e);
  }
  return out;
}

void table(std::string& out, std::initializer_list<const char*> heads,
           const std::vector<std::vector<std::string>>& rows) {
  out += "<table><tr>";
  for (const char* h : heads) out += fmt::format("<th>{}</th>", html_escape(h));
  out += "</tr>\n";
  for (const auto& row : rows) {
    out += "<tr>";
    for (const auto& cell : row) out += "<td>" + html_escape(cell) + "</td>";
    out += "</tr>\n";
  }
  out += "</table>\n";
  if (rows.empty()) out += "<p class=\"none\">none</p>\n";
}

std::vector<std::vector<std::string>> event_rows(const std::vector<json>& events) {
  std::vector<std::vector<std::string>> rows;
  for (auto it = events.rbegin(); it != events.rend(); ++it) {  // newest first
    const json& e = *it;
    json ms = member(e, "duration_ms");
    double seconds = ms.is_number() ? ms.get<double>() / 1000 : 0;
    rows.push_back(
        {text(e, "time"), text(e, "kind"), text(e, "namespace"), text(e, "id"), text(e, "outcome"),
         seconds > 0 ? fmt::format("{:.1f}", seconds) : std::string(), text(e, "detail")});
  }
  return rows;
}

}  // namespace

std::string html_escape(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (char c : in) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string render_status_page(const json& s) {
  std::string node = text(s, "node");
  std::string out =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<title>archd on " +
      html_escape(node) +
      "</title>\n<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:"
      "collapse;margin-bottom:1em}td,th{border:1px solid #ccc;padding:2px 6px;text-align:"
      "left;vertical-align:top}th{background:#eee}.none{color:#777}.warn{color:#b00}</style>"
      "</head><body>\n";
  out += "<h1>archd on " + html_escape(node) + "</h1>\n";
  out += fmt::format("<p>version {}, pid {}, started {}</p>\n", html_escape(text(s, "version")),
                     html_escape(text(s, "pid")), html_escape(text(s, "started", true)));
  if (member(s, "draining") == true) {
    out += fmt::format("<p class=\"warn\">Draining since {} ({}): {}</p>\n",
                       html_escape(text(s, "draining_since", true)),
                       html_escape(text(s, "drain_kind")), html_escape(text(s, "drain_reason")));
  } else {
    out += "<p>Not draining.</p>\n";
  }

  json w = member(s, "watcher");
  out += "<h2>Reclaim-notice watcher</h2>\n";
  table(out, {"endpoint", "state", "last poll", "last error", "last notice"},
        {{text(w, "endpoint"), text(w, "state"), text(w, "last_poll", true), text(w, "last_error"),
          member(w, "last_notice").is_object()
              ? text(w["last_notice"], "kind") + " " + text(w["last_notice"], "action") + " at " +
                    text(w["last_notice"], "time")
              : std::string()}});

  std::vector<std::vector<std::string>> containers;
  for (const auto& c : objects(s, "containers")) {
    containers.push_back({text(c, "namespace"), text(c, "id"), text(c, "key"), text(c, "status"),
                          text(c, "store"), text(c, "created", true)});
  }
  out += fmt::format("<h2>Containers ({})</h2>\n", containers.size());
  table(out, {"namespace", "id", "key", "status", "store", "created"}, containers);

  out += "<h2>Last drain</h2>\n";
  json d = member(s, "drain");
  if (d.is_object()) {
    out += fmt::format("<p>drain {} ({}): {}; {}; deadline {} s; requested {}; {} of {} done</p>\n",
                       html_escape(text(d, "id")), html_escape(text(d, "kind")),
                       html_escape(text(d, "reason")), html_escape(text(d, "state")),
                       html_escape(text(d, "deadline_seconds")),
                       html_escape(text(d, "requested", true)), html_escape(text(d, "done")),
                       html_escape(text(d, "total")));
    std::vector<std::vector<std::string>> rows;
    for (const auto& r : objects(member(d, "report"), "containers")) {
      rows.push_back({text(r, "namespace"), text(r, "id"), text(r, "result"), text(r, "seconds"),
                      text(r, "detail")});
    }
    table(out, {"namespace", "id", "result", "seconds", "detail"}, rows);
  } else {
    out += "<p class=\"none\">none</p>\n";
  }

  std::vector<json> events, operations;
  for (const auto& e : objects(s, "events")) {
    events.push_back(e);
    std::string kind = text(e, "kind");
    if (kind == "checkpoint" || kind == "restore" || kind == "job") operations.push_back(e);
  }
  if (operations.size() > kRecentOperations)
    operations.erase(operations.begin(), operations.end() - kRecentOperations);
  std::initializer_list<const char*> heads = {"time",    "kind",    "namespace", "id",
                                              "outcome", "seconds", "detail"};
  out += "<h2>Recent checkpoints and restores</h2>\n";
  table(out, heads, event_rows(operations));
  out += "<h2>Recent events</h2>\n";
  table(out, heads, event_rows(events));
  out += "<p class=\"none\">Metrics: <a href=\"/metrics\">/metrics</a></p>\n</body></html>\n";
  return out;
}

}  // namespace arch::agent
