// archctl container migrate NS/ID --to NODE [--handoff]: asks this node's archd to migrate the
// container to a [peers] node (peer/migrate.h) and follows it until post-copy is over (or
// the handoff is done); prints the total time, the downtime (handoff: the time frozen) and
// the bytes of each phase.
#include <fmt/core.h>

#include <chrono>
#include <thread>

#include "commands.h"
#include "exit_codes.h"

namespace arch::cli {

using nlohmann::json;

namespace {

void print_report(const json& r) {
  auto ms = r.value("ms", json::object());
  auto bytes = r.value("bytes", json::object());
  auto num = [](const json& j, const char* k) { return j.contains(k) ? j[k].get<double>() : 0.0; };
  fmt::print("{}/{} → {}: {} ({})\n", r.value("namespace", ""), r.value("id", ""),
             r.value("to", ""), r.value("phase", ""), r.value("mode", "recreate"));
  if (r.value("mode", "") == "handoff") {
    fmt::print(
        "  total {:.0f} ms, frozen {:.0f} ms (until kept on {}; the job runs again when {} "
        "reschedules it there)\n",
        num(ms, "total"), num(ms, "frozen"), r.value("to", ""),
        r.value("orchestrator", "its orchestrator"));
    fmt::print(
        "  prepare {:.0f} ms; checkpoint {:.0f} ms ({} bytes, {} of pages); transfer {:.0f} ms "
        "({} bytes, pages included)\n",
        num(ms, "prepare"), num(ms, "checkpoint"), num(bytes, "checkpoint"), num(bytes, "pages"),
        num(ms, "transfer"), num(bytes, "transfer"));
    if (r.contains("warning")) fmt::print("  warning: {}\n", r["warning"].get<std::string>());
    return;
  }
  fmt::print("  total {:.0f} ms, downtime {:.0f} ms (frozen → running on {})\n", num(ms, "total"),
             num(ms, "downtime"), r.value("to", ""));
  fmt::print(
      "  prepare {:.0f} ms; checkpoint {:.0f} ms ({} bytes, {} of pages); transfer {:.0f} ms "
      "({} bytes); create {:.0f} ms; post-copy {:.0f} ms ({} bytes)\n",
      num(ms, "prepare"), num(ms, "checkpoint"), num(bytes, "checkpoint"), num(bytes, "pages"),
      num(ms, "transfer"), num(bytes, "transfer"), num(ms, "create"), num(ms, "post_copy"),
      num(bytes, "post_copy"));
  if (r.value("engine", "") == "docker") {
    fmt::print("  Docker container {} re-created on {} as {}\n", r.value("name", ""),
               r.value("to", ""), r.value("destination_id", "?"));
  }
  if (r.contains("warning")) fmt::print("  warning: {}\n", r["warning"].get<std::string>());
}

}  // namespace

int run_migrate(const std::string& ref, const std::string& to, bool handoff, bool as_json) {
  auto slash = ref.find('/');
  if (slash == std::string::npos) {
    return report_error(Error(ErrorKind::kInvalidInput, "give the container as NAMESPACE/ID"));
  }
  json body = {{"namespace", ref.substr(0, slash)}, {"id", ref.substr(slash + 1)}, {"to", to}};
  if (handoff) body["handoff"] = true;  // else archd chooses (handoff when orchestrated)
  auto r = archd_call("POST", "/v1/migrations", body, 60000);
  if (!r) return report_error(r.error().wrap("archd (migration needs it)"));
  if (r->status != 202) return report_error(archd_error(*r));
  int64_t id = r->json.value("migration_id", int64_t{0});
  for (;;) {
    auto s = archd_call("GET", fmt::format("/v1/migrations/{}", id), nullptr, 60000);
    if (!s) return report_error(s.error());
    if (s->status != 200) return report_error(archd_error(*s));
    std::string phase = s->json.value("phase", "");
    if (phase == "done" || phase == "incomplete" || phase == "failed") {
      if (as_json) {
        fmt::print("{}\n", s->json.dump());
      } else if (phase != "failed") {
        print_report(s->json);
      }
      if (phase == "failed") {
        if (as_json) return kExitFailure;
        return report_error(Error(s->json.value("error", "migration failed")));
      }
      return phase == "done" ? kExitOk : kExitPartial;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

}  // namespace arch::cli
