// imds_probe: a test-only driver for ImdsClient. Polls an IMDSv2 endpoint and prints one
// JSON line per poll on stdout:
//   {"poll":1,"ok":true,"elapsed_ms":3,"tokens_obtained":1,"notices":[{"kind":"spot",
//    "action":"terminate","time":"2026-11-21T23:59:00Z","time_unix_ms":...,
//    "deadline_seconds":105}]}
//   {"poll":2,"ok":false,"elapsed_ms":0,"tokens_obtained":1,"error":"imds: GET ...: HTTP 500"}
// With --stdin it polls once per line read from stdin (until EOF), so a test decides
// exactly when each poll happens; otherwise --count polls, --interval-ms apart.
// Exit status: 0 when every poll succeeded, 1 when one failed, 2 on a usage error.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "node/imds_client.h"

namespace {

nlohmann::json notice_json(const arch::ImdsNotice& n, std::chrono::seconds margin) {
  bool spot = n.kind == arch::ImdsNotice::Kind::kSpotInterruption;
  auto since_epoch =
      std::chrono::duration_cast<std::chrono::milliseconds>(n.time.time_since_epoch());
  auto deadline = arch::finalize_deadline(n, std::chrono::system_clock::now(), margin);
  return {{"kind", spot ? "spot" : "rebalance"},
          {"action", n.action},
          {"time", n.time_text},
          {"time_unix_ms", since_epoch.count()},
          {"deadline_seconds", deadline.count()}};
}

nlohmann::json poll_once(arch::ImdsClient& client, int index, std::chrono::seconds margin) {
  auto start = std::chrono::steady_clock::now();
  auto notices = client.poll();
  auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start);
  nlohmann::json line = {{"poll", index},
                         {"ok", notices.has_value()},
                         {"elapsed_ms", elapsed.count()},
                         {"tokens_obtained", client.tokens_obtained()}};
  if (!notices) {
    line["error"] = notices.error().message();
    return line;
  }
  line["notices"] = nlohmann::json::array();
  for (const auto& n : *notices) line["notices"].push_back(notice_json(n, margin));
  return line;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"imds_probe: poll an EC2 metadata endpoint (IMDSv2) with ARCH's ImdsClient"};
  arch::ImdsOptions options;
  int count = 1;
  int interval_ms = 2000;
  int timeout_ms = 2000;
  int margin_seconds = 15;
  bool from_stdin = false;
  app.add_option("--endpoint", options.endpoint, "e.g. http://127.0.0.1:8111")->required();
  app.add_option("--ttl", options.token_ttl_seconds, "token TTL to ask for (s)");
  app.add_option("--timeout-ms", timeout_ms, "per request");
  app.add_option("--count", count, "number of polls")->check(CLI::PositiveNumber);
  app.add_option("--interval-ms", interval_ms, "between polls")->check(CLI::NonNegativeNumber);
  app.add_option("--margin", margin_seconds, "safety margin for deadline_seconds (s)");
  app.add_flag("--stdin", from_stdin, "poll once per line read from stdin, until EOF");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  options.timeout = std::chrono::milliseconds{timeout_ms};
  std::chrono::seconds margin{margin_seconds};
  arch::ImdsClient client(options);
  bool all_ok = true;
  std::string request;
  for (int i = 1; from_stdin || i <= count; ++i) {
    if (from_stdin && !std::getline(std::cin, request)) break;
    if (!from_stdin && i > 1) std::this_thread::sleep_for(std::chrono::milliseconds{interval_ms});
    auto line = poll_once(client, i, margin);
    all_ok = all_ok && line["ok"].get<bool>();
    std::printf("%s\n", line.dump().c_str());
    std::fflush(stdout);
  }
  return all_ok ? 0 : 1;
}
