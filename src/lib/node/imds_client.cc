// ImdsClient: IMDSv2 token handling and the two notice documents, over libcurl's easy
// interface (one handle per client, so the connection is kept between polls).
#include "node/imds_client.h"

#include <curl/curl.h>
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <utility>

namespace arch {
namespace {

using std::chrono::seconds;
using std::chrono::steady_clock;
using std::chrono::system_clock;

constexpr std::string_view kTokenPath = "/latest/api/token";
constexpr std::string_view kSpotPath = "/latest/meta-data/spot/instance-action";
constexpr std::string_view kRebalancePath = "/latest/meta-data/events/recommendations/rebalance";
constexpr int kMaxTokenTtl = 21600;
constexpr std::size_t kMaxBody = std::size_t{64} * 1024;  // The documents are a few dozen bytes.

// ------------------------------------------------------------------ RFC 3339

// `n` decimal digits of `s` at `pos`, or nullopt.
std::optional<int> digits_at(std::string_view s, std::size_t pos, std::size_t n) {
  if (pos + n > s.size()) return std::nullopt;
  int value = 0;
  for (std::size_t i = pos; i < pos + n; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return std::nullopt;
    value = value * 10 + (s[i] - '0');
  }
  return value;
}

// Optional ".digits" at `pos` (advanced past it), as nanoseconds (digits beyond 9 dropped).
std::optional<std::chrono::nanoseconds> fraction_at(std::string_view s, std::size_t& pos) {
  if (pos >= s.size() || s[pos] != '.') return std::chrono::nanoseconds{0};
  std::size_t start = ++pos;
  long long ns = 0;
  int kept = 0;
  for (; pos < s.size() && std::isdigit(static_cast<unsigned char>(s[pos])); ++pos) {
    if (kept < 9) {
      ns = ns * 10 + (s[pos] - '0');
      ++kept;
    }
  }
  if (pos == start) return std::nullopt;
  for (; kept < 9; ++kept) ns *= 10;
  return std::chrono::nanoseconds{ns};
}

// "Z" / "z" / "+HH:MM" / "-HH:MM" at `pos` (advanced past it): the offset east of UTC.
std::optional<std::chrono::minutes> offset_at(std::string_view s, std::size_t& pos) {
  if (pos >= s.size()) return std::nullopt;
  if (s[pos] == 'Z' || s[pos] == 'z') {
    ++pos;
    return std::chrono::minutes{0};
  }
  if (s[pos] != '+' && s[pos] != '-') return std::nullopt;
  int sign = s[pos] == '-' ? -1 : 1;
  auto hh = digits_at(s, pos + 1, 2);
  auto mm = digits_at(s, pos + 4, 2);
  if (!hh || !mm || s[pos + 3] != ':' || *hh > 23 || *mm > 59) return std::nullopt;
  pos += 6;
  return std::chrono::minutes{sign * (*hh * 60 + *mm)};
}

// ------------------------------------------------------------------ notices

// The body for an error message: at most 120 bytes, control bytes as '?'.
std::string snippet(std::string_view body) {
  std::string out(body.substr(0, 120));
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  }
  if (body.size() > 120) out += "...";
  return out;
}

Result<nlohmann::json> parse_object(std::string_view body) {
  auto doc = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return fail(fmt::format("malformed JSON: '{}'", snippet(body)));
  if (!doc.is_object()) return fail(fmt::format("not a JSON object: '{}'", snippet(body)));
  return doc;
}

Result<std::string> string_field(const nlohmann::json& doc, const char* name) {
  auto it = doc.find(name);
  if (it == doc.end()) return fail(fmt::format("no \"{}\" in {}", name, doc.dump()));
  if (!it->is_string() || it->get_ref<const std::string&>().empty()) {
    return fail(fmt::format("\"{}\" is not a non-empty string in {}", name, doc.dump()));
  }
  return it->get<std::string>();
}

Result<ImdsNotice> make_notice(ImdsNotice::Kind kind, std::string action, std::string time_text) {
  auto time = parse_rfc3339_utc(time_text);
  if (!time) return std::unexpected(time.error());
  return ImdsNotice{kind, std::move(action), std::move(time_text), *time};
}

// ------------------------------------------------------------------ HTTP

struct HttpResponse {
  long status = 0;
  std::string body;
};

// Whether libcurl's global state is set up (once per process, before any handle).
CURLcode curl_global_state() {
  static std::once_flag once;
  static CURLcode code = CURLE_OK;
  std::call_once(once, [] { code = curl_global_init(CURL_GLOBAL_DEFAULT); });
  return code;
}

struct CurlDeleter {
  void operator()(CURL* h) const { curl_easy_cleanup(h); }
};
struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using CurlHandle = std::unique_ptr<CURL, CurlDeleter>;
using CurlHeaders = std::unique_ptr<curl_slist, SlistDeleter>;

struct BodySink {
  std::string body;
  bool too_large = false;
};

size_t write_body(char* data, size_t size, size_t count, void* user) {
  auto* sink = static_cast<BodySink*>(user);
  size_t n = size * count;
  if (sink->body.size() + n > kMaxBody) {
    sink->too_large = true;
    return 0;  // Makes libcurl stop with CURLE_WRITE_ERROR.
  }
  sink->body.append(data, n);
  return n;
}

// Refresh this long before the token's TTL ends: a tenth of it, between 1 s and 60 s.
seconds refresh_margin(int ttl_seconds) {
  return std::clamp(seconds{ttl_seconds / 10}, seconds{1}, seconds{60});
}

// A token goes into a header line: printable ASCII without spaces only.
bool valid_token(std::string_view token) {
  return !token.empty() && token.size() <= 1024 &&
         std::all_of(token.begin(), token.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

}  // namespace

// ------------------------------------------------------------------ public parsers

Result<system_clock::time_point> parse_rfc3339_utc(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return fail(fmt::format("bad RFC 3339 time '{}': {}", snippet(text), why));
  };
  auto year = digits_at(text, 0, 4), month = digits_at(text, 5, 2), day = digits_at(text, 8, 2);
  auto hour = digits_at(text, 11, 2), minute = digits_at(text, 14, 2);
  auto second = digits_at(text, 17, 2);
  if (!year || !month || !day || !hour || !minute || !second || text[4] != '-' || text[7] != '-' ||
      (text[10] != 'T' && text[10] != 't') || text[13] != ':' || text[16] != ':') {
    return bad("expected YYYY-MM-DDTHH:MM:SS");
  }
  std::size_t pos = 19;
  auto fraction = fraction_at(text, pos);
  if (!fraction) return bad("no digits after '.'");
  auto offset = offset_at(text, pos);
  if (!offset) return bad("expected 'Z' or an offset like +02:00");
  if (pos != text.size()) return bad("unexpected text after the time");
  std::chrono::year_month_day date{std::chrono::year{*year},
                                   std::chrono::month{static_cast<unsigned>(*month)},
                                   std::chrono::day{static_cast<unsigned>(*day)}};
  if (!date.ok()) return bad("no such date");
  if (*hour > 23 || *minute > 59 || *second > 60) return bad("time of day out of range");
  auto t = std::chrono::sys_days{date} + std::chrono::hours{*hour} + std::chrono::minutes{*minute} +
           seconds{*second} + *fraction - *offset;
  return std::chrono::time_point_cast<system_clock::duration>(t);
}

Result<ImdsNotice> parse_spot_instance_action(std::string_view body) {
  auto doc = parse_object(body);
  if (!doc) return std::unexpected(doc.error().wrap("spot instance-action"));
  auto action = string_field(*doc, "action");
  auto time = action ? string_field(*doc, "time") : action;
  if (!time) return std::unexpected(time.error().wrap("spot instance-action"));
  auto notice = make_notice(ImdsNotice::Kind::kSpotInterruption, *action, *time);
  if (!notice) return std::unexpected(notice.error().wrap("spot instance-action"));
  return notice;
}

Result<ImdsNotice> parse_rebalance_recommendation(std::string_view body) {
  auto doc = parse_object(body);
  if (!doc) return std::unexpected(doc.error().wrap("rebalance recommendation"));
  auto time = string_field(*doc, "noticeTime");
  if (!time) return std::unexpected(time.error().wrap("rebalance recommendation"));
  auto notice = make_notice(ImdsNotice::Kind::kRebalance, "rebalance", *time);
  if (!notice) return std::unexpected(notice.error().wrap("rebalance recommendation"));
  return notice;
}

std::chrono::seconds finalize_deadline(const ImdsNotice& notice, system_clock::time_point now,
                                       seconds safety_margin, seconds min_deadline,
                                       seconds max_deadline) {
  if (notice.kind == ImdsNotice::Kind::kRebalance) return max_deadline;
  auto left = std::chrono::floor<seconds>(notice.time - safety_margin - now);
  return std::max(min_deadline, std::min(left, max_deadline));
}

// ------------------------------------------------------------------ the client

struct ImdsClient::Impl {
  ImdsOptions options;
  std::string base;  // The endpoint without a trailing '/'.
  CurlHandle curl;
  char curl_error[CURL_ERROR_SIZE] = {};
  std::string token;
  steady_clock::time_point refresh_at;
  int tokens_obtained = 0;

  Result<void> check_options() const;
  Result<HttpResponse> request(const char* method, std::string_view path,
                               const std::string& header);
  Result<void> ensure_token();
  Result<HttpResponse> get_with_token(std::string_view path);
  Result<std::optional<ImdsNotice>> get_notice(std::string_view path,
                                               Result<ImdsNotice> (*parse)(std::string_view));
};

Result<void> ImdsClient::Impl::check_options() const {
  if (!base.starts_with("http://") || base.size() <= 7) {
    return fail(fmt::format("imds: endpoint '{}' is not an http:// URL", options.endpoint));
  }
  if (options.token_ttl_seconds < 1 || options.token_ttl_seconds > kMaxTokenTtl) {
    return fail(fmt::format("imds: token TTL {} s is outside 1-{}", options.token_ttl_seconds,
                            kMaxTokenTtl));
  }
  if (options.timeout.count() <= 0) return fail("imds: the request timeout must be positive");
  return {};
}

// One request with one extra header line; any HTTP status is a response, not an error.
Result<HttpResponse> ImdsClient::Impl::request(const char* method, std::string_view path,
                                               const std::string& header) {
  std::string url = base + std::string(path);
  if (CURLcode g = curl_global_state(); g != CURLE_OK) {
    return fail(fmt::format("imds: curl_global_init: {}", curl_easy_strerror(g)));
  }
  if (!curl) curl.reset(curl_easy_init());
  if (!curl) return fail("imds: curl_easy_init failed");
  CURL* h = curl.get();
  curl_easy_reset(h);
  CurlHeaders headers(curl_slist_append(nullptr, header.c_str()));
  if (!headers) return fail("imds: curl_slist_append failed");
  BodySink sink;
  long timeout_ms = static_cast<long>(options.timeout.count());
  CURLcode rc = CURLE_OK;
  auto set = [&rc](CURLcode c) {
    if (rc == CURLE_OK) rc = c;
  };
  set(curl_easy_setopt(h, CURLOPT_URL, url.c_str()));
  set(curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method));
  set(curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.get()));
  set(curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http"));
  set(curl_easy_setopt(h, CURLOPT_NOPROXY, "*"));
  set(curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L));
  set(curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L));
  set(curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms));
  set(curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms));
  set(curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_error));
  set(curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_body));
  set(curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink));
  if (rc != CURLE_OK) {
    return fail(fmt::format("imds: {} {}: curl option: {}", method, url, curl_easy_strerror(rc)));
  }
  curl_error[0] = '\0';
  rc = curl_easy_perform(h);
  if (rc != CURLE_OK) {
    std::string why = sink.too_large ? fmt::format("response larger than {} bytes", kMaxBody)
                      : curl_error[0] != '\0' ? std::string(curl_error)
                                              : std::string(curl_easy_strerror(rc));
    return fail(fmt::format("imds: {} {}: {}", method, url, why));
  }
  HttpResponse response;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &response.status);
  response.body = std::move(sink.body);
  return response;
}

// Takes a new token when there is none or the current one is about to expire.
Result<void> ImdsClient::Impl::ensure_token() {
  auto now = steady_clock::now();
  if (!token.empty() && now < refresh_at) return {};
  token.clear();
  int ttl = options.token_ttl_seconds;
  auto r = request("PUT", kTokenPath, fmt::format("X-aws-ec2-metadata-token-ttl-seconds: {}", ttl));
  if (!r) return std::unexpected(r.error());
  std::string url = base + std::string(kTokenPath);
  if (r->status != 200) {
    return fail(fmt::format("imds: PUT {}: HTTP {}: {}", url, r->status, snippet(r->body)));
  }
  if (!valid_token(r->body)) {
    return fail(fmt::format("imds: PUT {}: HTTP 200 with a malformed token", url));
  }
  token = std::move(r->body);
  refresh_at = now + seconds{ttl} - refresh_margin(ttl);  // `now`: before the request.
  ++tokens_obtained;
  return {};
}

// A GET with the current token; after a 401 (expired or revoked), once more with a new one.
Result<HttpResponse> ImdsClient::Impl::get_with_token(std::string_view path) {
  for (int attempt = 0;; ++attempt) {
    if (token.empty()) {
      if (auto t = ensure_token(); !t) return std::unexpected(t.error());
    }
    auto r = request("GET", path, "X-aws-ec2-metadata-token: " + token);
    if (!r || r->status != 401 || attempt == 1) return r;
    token.clear();
  }
}

// 404: nothing pending; 200: the notice; anything else is an error.
Result<std::optional<ImdsNotice>> ImdsClient::Impl::get_notice(
    std::string_view path, Result<ImdsNotice> (*parse)(std::string_view)) {
  auto r = get_with_token(path);
  if (!r) return std::unexpected(r.error());
  std::string url = base + std::string(path);
  if (r->status == 404) return std::nullopt;
  if (r->status != 200) {
    return fail(fmt::format("imds: GET {}: HTTP {}: {}", url, r->status, snippet(r->body)));
  }
  auto notice = parse(r->body);
  if (!notice) {
    return std::unexpected(notice.error().wrap(fmt::format("imds: GET {}: HTTP 200", url)));
  }
  return std::optional<ImdsNotice>(std::move(*notice));
}

ImdsClient::ImdsClient(ImdsOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->base = options.endpoint;
  while (impl_->base.ends_with('/')) impl_->base.pop_back();
  impl_->options = std::move(options);
}

ImdsClient::~ImdsClient() = default;
ImdsClient::ImdsClient(ImdsClient&&) noexcept = default;
ImdsClient& ImdsClient::operator=(ImdsClient&&) noexcept = default;

Result<std::vector<ImdsNotice>> ImdsClient::poll() {
  if (auto ok = impl_->check_options(); !ok) return std::unexpected(ok.error());
  if (auto ok = impl_->ensure_token(); !ok) return std::unexpected(ok.error());
  std::vector<ImdsNotice> notices;
  for (auto [path, parse] : {std::pair{kSpotPath, &parse_spot_instance_action},
                             std::pair{kRebalancePath, &parse_rebalance_recommendation}}) {
    auto notice = impl_->get_notice(path, parse);
    if (!notice) return std::unexpected(notice.error());
    if (*notice) notices.push_back(std::move(**notice));
  }
  return notices;
}

int ImdsClient::tokens_obtained() const {
  return impl_->tokens_obtained;
}

}  // namespace arch
