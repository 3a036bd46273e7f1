// archctl node status|drain|undrain: the node agent (archd) through its local API,
// HTTP/1.1 + JSON on the root-only unix socket [agent] socket (libcurl). When archd is
// not running, `node drain` says so and names what still works without it.
#include <fmt/core.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/clock.h"
#include "commands.h"
#include "config/node_config.h"
#include "criu/criu_report.h"
#include "exit_codes.h"

namespace arch::cli {
namespace {

using nlohmann::json;

// archd_call() with the reply required to be JSON (every /v1/node and /v1/drains answer is).
Result<ArchdReply> call_archd(const char* method, const std::string& path,
                              const json& body = nullptr) {
  auto r = archd_call(method, path, body, 60000);
  if (!r) return r;
  if (r->json.is_null()) return fail(fmt::format("archd answered {} without JSON", r->status));
  return r;
}

std::string when(const json& t) {
  if (!t.is_number()) return "-";
  return format_utc(t.get<long>());
}

void print_report(const json& report) {
  fmt::print("{:<40} {:<13} {:>9}  {}\n", "NAMESPACE/ID", "RESULT", "SECONDS", "DETAIL");
  std::size_t n = 0, ok = 0;
  for (const auto& c : report.value("containers", json::array())) {
    std::string detail = c.value("detail", "");
    fmt::print("{:<40} {:<13} {:>9.2f}  {}\n", c.value("namespace", "") + "/" + c.value("id", ""),
               c.value("result", ""), c.value("seconds", 0.0), detail.substr(0, detail.find('\n')));
    ++n;
    ok += c.value("result", "") == "checkpointed";
  }
  fmt::print("{} containers, {} checkpointed, {} not, in {:.2f} s\n", n, ok, n - ok,
             report.value("total_seconds", 0.0));
  auto jobs = report.value("jobs", json::array());
  if (jobs.empty()) return;
  std::size_t jobs_ok = 0;
  for (const auto& j : jobs) {
    std::string detail = j.value("detail", "");
    fmt::print("{:<40} {:<13} {:>9}  {}\n", "job " + j.value("id", ""), j.value("result", ""), "",
               detail.substr(0, detail.find('\n')));
    jobs_ok += j.value("result", "") == "checkpointed";
  }
  fmt::print("{} process jobs, {} checkpointed, {} not\n", jobs.size(), jobs_ok,
             jobs.size() - jobs_ok);
}

void print_status(const json& s) {
  fmt::print("node:       {} (archd {}, pid {})\n", s.value("node", ""), s.value("version", ""),
             s.value("pid", 0));
  if (s.value("draining", false)) {
    fmt::print("draining:   yes, since {} ({}: {})\n", when(s["draining_since"]),
               s.value("drain_kind", ""), s.value("drain_reason", ""));
  } else {
    fmt::print("draining:   no\n");
  }
  const json& w = s["watcher"];
  std::string notice = "none";
  if (w["last_notice"].is_object()) {
    notice = w["last_notice"].value("kind", "") + " " + w["last_notice"].value("action", "") +
             " at " + w["last_notice"].value("time", "");
  }
  fmt::print("watcher:    {} ({}), last poll {}, last notice {}\n", w.value("state", ""),
             w.value("endpoint", "") == "" ? "no endpoint" : w.value("endpoint", ""),
             when(w["last_poll"]), notice);
  if (s["drain"].is_object()) {
    const json& d = s["drain"];
    fmt::print("last drain: {} {} ({}), {} of {} containers done, deadline {} s\n",
               d.value("id", 0), d.value("state", ""), d.value("reason", ""), d.value("done", 0),
               d.value("total", 0), d.value("deadline_seconds", 0.0));
  }
  if (s.contains("criu") && s["criu"].is_object()) fmt::print("{}", criu_report_text(s["criu"]));
  fmt::print("\n{:<40} {:<9} {}\n", "NAMESPACE/ID", "STATUS", "STORE");
  for (const auto& c : s["containers"]) {
    fmt::print("{:<40} {:<9} {}\n", c.value("namespace", "") + "/" + c.value("id", ""),
               c.value("status", ""), c.value("store", ""));
  }
  fmt::print("\nrecent events:\n");
  for (const auto& e : s["events"]) {
    std::string who =
        e.value("id", "").empty() ? "" : e.value("namespace", "") + "/" + e.value("id", "") + " ";
    fmt::print("  {} {} {}{} {}\n", e.value("time", ""), e.value("kind", ""), who,
               e.value("outcome", ""), e.value("detail", ""));
  }
}

int run_status(bool as_json) {
  auto r = call_archd("GET", "/v1/node/status");
  if (!r) return report_error(r.error());
  if (r->status != 200) return report_error(archd_error(*r));
  if (as_json) {
    fmt::print("{}\n", r->json.dump(2));
  } else {
    print_status(r->json);
  }
  return 0;
}

// One line on stderr per container and job as the drain reports it (the same line as
// `container finalize` draws), when `progress` is on.
class DrainProgress {
 public:
  explicit DrainProgress(bool on) : on_(on) {}
  void show(const json& drain) {
    if (!on_) return;
    auto report = drain.value("report", json::object());
    std::size_t total = drain.value("total", std::size_t{0});
    for (const char* what : {"containers", "jobs"}) {
      auto list = report.value(what, json::array());
      std::size_t& shown = what[0] == 'c' ? containers_ : jobs_;
      for (std::size_t i = shown; i < list.size(); ++i) {
        const json& c = list[i];
        std::string name = c.contains("namespace")
                               ? c.value("namespace", "") + "/" + c.value("id", "")
                               : "job " + c.value("id", "");
        ++done_;
        fmt::print(stderr, "[{}/{}] {}: {}", done_, std::max(total, done_), name,
                   c.value("result", ""));
        if (c.contains("seconds")) fmt::print(stderr, " in {:.2f} s", c.value("seconds", 0.0));
        fmt::print(stderr, "\n");
      }
      shown = std::max(shown, list.size());
    }
  }

 private:
  bool on_;
  std::size_t containers_ = 0, jobs_ = 0, done_ = 0;
};

// Polls drain `id` until it is no longer running; returns its record.
Result<json> wait_for_drain(int64_t id, DrainProgress& progress) {
  for (;;) {
    auto r = call_archd("GET", fmt::format("/v1/drains/{}", id));
    if (!r) return std::unexpected(r.error());
    if (r->status != 200) return std::unexpected(archd_error(*r));
    progress.show(r->json);
    if (r->json.value("state", "") != "running") return r->json;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

int run_drain(const std::string& reason, double deadline, bool wait, bool as_json, bool quiet) {
  json body = {{"reason", reason.empty() ? "manual drain (archctl)" : reason},
               {"deadline_seconds", deadline}};
  auto r = call_archd("POST", "/v1/node/drain", body);
  if (!r) {
    return report_error(Error(
        r.error().kind(), r.error().message() +
                              "\nThe node is not marked draining. To checkpoint every running "
                              "ARCH-enabled container without archd: archctl container finalize"));
  }
  if (r->status != 202) return report_error(archd_error(*r));
  int64_t id = r->json.value("drain_id", int64_t{0});
  if (!wait) {
    if (as_json) {
      fmt::print("{}\n", r->json.dump(2));
    } else {
      fmt::print("drain {} started: node marked draining, finalize running (deadline {} s)\n", id,
                 r->json.value("deadline_seconds", 0.0));
    }
    return 0;
  }
  // Progress on a terminal (stderr; stdout keeps the report or the JSON).
  DrainProgress progress(!quiet && ::isatty(STDERR_FILENO) == 1);
  if (!quiet && ::isatty(STDERR_FILENO) == 1)
    fmt::print(stderr, "drain {}: checkpointing, deadline {:.0f} s\n", id, deadline);
  auto done = wait_for_drain(id, progress);
  if (!done) return report_error(done.error());
  if (as_json) {
    fmt::print("{}\n", done->dump(2));
  } else {
    fmt::print("drain {} {}\n", id, done->value("state", ""));
    print_report(done->value("report", json::object()));
  }
  bool all_ok = done->value("state", "") == "done";
  auto report = done->value("report", json::object());
  for (const char* what : {"containers", "jobs"}) {
    for (const auto& c : report.value(what, json::array())) {
      all_ok = all_ok && c.value("result", "") == "checkpointed";
    }
  }
  return all_ok ? kExitOk : kExitPartial;
}

int run_undrain(bool as_json) {
  auto r = call_archd("POST", "/v1/node/undrain");
  if (!r) return report_error(r.error());
  if (r->status != 200) return report_error(archd_error(*r));
  if (as_json) {
    fmt::print("{}\n", r->json.dump(2));
  } else if (r->json["cancelled_drain"].is_number()) {
    fmt::print("node no longer draining (drain {} cancelled: checkpoints in progress finish)\n",
               r->json["cancelled_drain"].get<int64_t>());
  } else {
    fmt::print("node no longer draining{}\n",
               r->json.value("was_draining", false) ? "" : " (it was not)");
  }
  return 0;
}

}  // namespace

Handler add_node_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("node", "This node's agent (archd): status, drain, undrain");
  cmd->require_subcommand(1);
  struct Opts {
    std::string output, reason;
    double deadline = 110;
    bool wait = false, quiet = false;
  };
  auto o = std::make_shared<Opts>();
  auto* status = cmd->add_subcommand("status", "Draining or not, watcher, containers, events");
  add_output_option(status, o->output);
  auto* drain = cmd->add_subcommand(
      "drain", "Mark the node draining and checkpoint every running ARCH-enabled container");
  drain->add_option("--reason", o->reason, "Why (shown in status and the event log)");
  drain
      ->add_option("--deadline", o->deadline, "Seconds; containers not started by then are skipped")
      ->capture_default_str();
  drain->add_flag("--wait", o->wait,
                  "Wait for the drain's report; exit 7 if any container or job failed");
  drain->add_flag("-q,--quiet", o->quiet, "With --wait: no progress lines on a terminal");
  add_output_option(drain, o->output);
  auto* undrain = cmd->add_subcommand("undrain", "The node is no longer draining");
  add_output_option(undrain, o->output);
  return [=] {
    bool as_json = o->output == "json";
    if (status->parsed()) return run_status(as_json);
    if (drain->parsed()) return run_drain(o->reason, o->deadline, o->wait, as_json, o->quiet);
    return run_undrain(as_json);
  };
}

}  // namespace arch::cli
