// archctl process checkpoint|restore: CRIU for a process ARCH did not start, through archd
// (which adopts it as a job, so that the restored tree is archd's child and its exit is seen).
#include <fmt/core.h>
#include <unistd.h>

#include <memory>

#include "commands.h"

namespace arch::cli {

Handler add_process_command(CLI::App& app) {
  auto* process = app.add_subcommand(
      "process", "Checkpoint and restore a process ARCH did not start (through archd)");
  process->require_subcommand(1);
  struct Opts {
    int pid = 0;
    std::string path, export_dir, output;
    bool leave_running = false, tcp_established = false, json = false;
  };
  auto o = std::make_shared<Opts>();
  auto* ckpt = process->add_subcommand("checkpoint",
                                       "Dump PID and its descendants with CRIU into the store");
  ckpt->add_option("pid", o->pid, "Root of the process tree")->required();
  auto* leave =
      ckpt->add_flag("--leave-running", o->leave_running, "Keep it running after the dump");
  ckpt->add_option("--export", o->export_dir, "Also write <name>_<UTC time>.tar.zst into DIR");
  ckpt->add_flag("--tcp-established", o->tcp_established, "Dump established TCP connections too");
  add_output_option(ckpt, o->output);
  auto* restore = process->add_subcommand(
      "restore", "Restore a process checkpoint (a checkpoint directory or an archive)");
  restore->add_option("path", o->path, "Checkpoint directory or .tar.zst archive")->required();
  add_output_option(restore, o->output);

  auto absolute = [](std::string p) {
    char cwd[4096];
    if (!p.empty() && p.front() != '/' && ::getcwd(cwd, sizeof cwd) != nullptr)
      p = std::string(cwd) + "/" + p;
    return p;
  };
  return [=]() -> int {
    o->json = o->output == "json";
    if (ckpt->parsed()) {
      nlohmann::json body = {{"pid", o->pid},
                             {"export_dir", o->export_dir.empty() ? "" : absolute(o->export_dir)},
                             {"tcp_established", o->tcp_established}};
      if (leave->count() > 0) body["leave_running"] = true;
      auto r = archd_call("POST", "/v1/processes/checkpoint", body);
      if (!r) return report_error(r.error());
      if (r->status != 200) return report_error(archd_error(*r));
      if (o->json) return fmt::print("{}\n", r->json.dump(2)), 0;
      for (const auto& w : r->json.value("warnings", nlohmann::json::array()))
        fmt::print(stderr, "warning: {}\n", w.get<std::string>());
      const auto& job = r->json["job"];
      fmt::print("checkpointed pid {} as job {}: {}\n", o->pid, job.value("id", ""),
                 r->json.value("checkpoint", ""));
      if (r->json.contains("archive")) fmt::print("exported: {}\n", r->json.value("archive", ""));
      return 0;
    }
    auto r =
        archd_call("POST", "/v1/processes/restore", nlohmann::json{{"path", absolute(o->path)}});
    if (!r) return report_error(r.error());
    if (r->status != 200) return report_error(archd_error(*r));
    if (o->json) return fmt::print("{}\n", r->json.dump(2)), 0;
    fmt::print("restored as job {} ({}): pid {}\n", r->json.value("id", ""),
               r->json.value("name", ""), r->json.value("pid", 0));
    return 0;
  };
}

}  // namespace arch::cli
