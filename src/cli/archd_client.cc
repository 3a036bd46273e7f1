// The archd client every archctl verb that talks to the node agent shares: HTTP/1.1 +
// JSON on the root-only unix socket [agent] socket, through libcurl.
#include <curl/curl.h>
#include <fmt/core.h>
#include <strings.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "commands.h"
#include "config/node_config.h"
#include "exit_codes.h"

namespace arch::cli {
namespace {

using nlohmann::json;

std::size_t collect(char* data, std::size_t size, std::size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

std::size_t collect_header(char* data, std::size_t size, std::size_t n, void* out) {
  std::string line(data, size * n);
  auto* reply = static_cast<ArchdReply*>(out);
  auto value = [&](std::string_view name) -> std::optional<std::string> {
    if (line.size() <= name.size() || strncasecmp(line.c_str(), name.data(), name.size()) != 0)
      return std::nullopt;
    std::string v = line.substr(name.size());
    while (!v.empty() && (v.back() == '\r' || v.back() == '\n' || v.back() == ' ')) v.pop_back();
    while (!v.empty() && v.front() == ' ') v.erase(0, 1);
    return v;
  };
  if (auto v = value("X-Arch-Next-Offset:")) reply->next_offset = *v;
  if (auto v = value("X-Arch-Job-State:")) reply->job_state = *v;
  return size * n;
}

Result<std::string> socket_path() {
  auto config = node_config();
  if (!config) return std::unexpected(config.error());
  return config->agent.socket;
}

}  // namespace

Result<ArchdReply> archd_call(const std::string& method, const std::string& path, const json& body,
                              long timeout_ms) {
  static const bool initialised = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
  static const Result<std::string> socket_or = socket_path();
  if (!socket_or) return std::unexpected(socket_or.error());
  const std::string& socket = *socket_or;
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(initialised ? curl_easy_init() : nullptr,
                                                           curl_easy_cleanup);
  if (!curl) return fail("libcurl could not be initialised");
  std::string url = "http://archd" + path, sent = body.is_null() ? "" : body.dump();
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  CURL* c = curl.get();
  ArchdReply reply;
  curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, socket.c_str());
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  if (method == "POST") {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, sent.c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(sent.size()));
  }
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &reply.body);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, collect_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &reply);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 3000L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  CURLcode rc = curl_easy_perform(c);
  curl_slist_free_all(headers);
  if (rc == CURLE_COULDNT_CONNECT) {
    return fail(ErrorKind::kUnavailable,
                "archd is not running (nothing answers on " + socket + ")");
  }
  if (rc == CURLE_OPERATION_TIMEDOUT)
    return fail(ErrorKind::kTimeout,
                fmt::format("archd on {}: {}", socket, curl_easy_strerror(rc)));
  if (rc != CURLE_OK) {
    return fail(ErrorKind::kUnavailable,
                fmt::format("archd on {}: {}", socket, curl_easy_strerror(rc)));
  }
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &reply.status);
  reply.json = json::parse(reply.body, nullptr, false);
  if (reply.json.is_discarded()) reply.json = nullptr;
  return reply;
}

Error archd_error(const ArchdReply& r) {
  std::string msg = r.json.is_object() ? r.json.value("error", "") : "";
  return Error(kind_of_http_status(r.status),
               fmt::format("archd answered {}{}", r.status, msg.empty() ? "" : ": " + msg));
}

}  // namespace arch::cli
