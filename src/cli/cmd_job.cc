// archctl job run|ps|logs|kill|rm|checkpoint|restore: process jobs, managed by archd (its
// local API on [agent] socket: /v1/jobs, through archd_call()).
#include <fmt/core.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "base/file_util.h"
#include "commands.h"
#include "config/node_config.h"
#include "exit_codes.h"

namespace arch::cli {

namespace {

using nlohmann::json;

std::string age(long since) {
  if (since <= 0) return "-";
  long s = static_cast<long>(std::time(nullptr)) - since;
  if (s < 120) return fmt::format("{}s", s);
  if (s < 7200) return fmt::format("{}m", s / 60);
  if (s < 172800) return fmt::format("{}h", s / 3600);
  return fmt::format("{}d", s / 86400);
}

std::string exit_text(const json& j) {
  std::string state = j.value("state", "");
  if (state != "exited") return "-";
  int sig = j.value("exit_signal", 0);
  return sig != 0 ? fmt::format("signal {}", sig) : std::to_string(j.value("exit_code", -1));
}

std::string latest_checkpoint(const json& j) {
  const json& c = j.value("checkpoint", json::object());
  std::string archive = c.value("archive", ""), path = c.value("path", "");
  if (!archive.empty()) return c.value("created", "") + " " + archive;
  if (!path.empty()) return c.value("created", "") + " (local)";
  return "-";
}

// A signal by number or name ("TERM", "SIGKILL", "9").
std::optional<int> parse_signal(std::string text) {
  if (!text.empty() && std::isdigit(static_cast<unsigned char>(text[0]))) {
    int n = std::atoi(text.c_str());
    return n > 0 && n < NSIG ? std::optional(n) : std::nullopt;
  }
  for (auto& c : text) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (text.starts_with("SIG")) text = text.substr(3);
  for (int s = 1; s < NSIG; ++s) {
    const char* abbrev = sigabbrev_np(s);
    if (abbrev != nullptr && text == abbrev) return s;
  }
  return std::nullopt;
}

Result<std::vector<std::string>> read_env_file(const std::string& path) {
  auto text = read_file(path, 1 << 20);
  if (!text) return std::unexpected(text.error().wrap("--env-file"));
  std::vector<std::string> out;
  std::size_t pos = 0, line_no = 0;
  while (pos < text->size()) {
    auto nl = text->find('\n', pos);
    std::string line = text->substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? text->size() : nl + 1;
    ++line_no;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (line.empty() || line.front() == '#') continue;
    if (line.starts_with("export ")) line = line.substr(7);
    auto eq = line.find('=');
    if (eq == std::string::npos || eq == 0)
      return fail(fmt::format("--env-file {} line {}: not NAME=VALUE", path, line_no));
    out.push_back(line);
  }
  return out;
}

// The job's environment: only what the user gave, the --env-file lines then each --env
// ("NAME=VALUE", or "NAME" for this process's own value of NAME), a later NAME replacing
// an earlier one. archctl's own environment is never passed on as a whole: it is root's,
// and a job may run on another node later.
Result<std::vector<std::string>> job_environment(const std::vector<std::string>& file_lines,
                                                 const std::vector<std::string>& flags) {
  std::vector<std::string> env;
  auto set = [&](const std::string& entry) {
    std::string key = entry.substr(0, entry.find('=') + 1);
    std::erase_if(env, [&](const std::string& e) { return e.starts_with(key); });
    env.push_back(entry);
  };
  for (const auto& line : file_lines) set(line);
  for (const auto& flag : flags) {
    auto eq = flag.find('=');
    if (eq == 0 || flag.empty()) return fail("--env " + flag + ": not NAME=VALUE or NAME");
    if (eq != std::string::npos) {
      set(flag);
      continue;
    }
    const char* value = std::getenv(flag.c_str());
    if (value == nullptr) return fail("--env " + flag + ": not set in this environment");
    set(flag + "=" + value);
  }
  return env;
}

int print_json_or(const ArchdReply& r, bool as_json, const std::function<void()>& human) {
  if (r.status / 100 != 2) return report_error(archd_error(r));
  if (as_json) {
    fmt::print("{}\n", r.json.dump(2));
  } else {
    human();
  }
  return 0;
}

void print_jobs(const json& jobs) {
  fmt::print("{:<12}  {:<16} {:>7}  {:<12} {:>9} {:>5}  {}\n", "ID", "NAME", "PID", "STATE", "EXIT",
             "AGE", "LATEST CHECKPOINT");
  for (const auto& j : jobs) {
    fmt::print("{:<12}  {:<16} {:>7}  {:<12} {:>9} {:>5}  {}\n", j.value("id", ""),
               j.value("name", ""), j.value("pid", 0), j.value("state", ""), exit_text(j),
               age(j.value("created", 0L)), latest_checkpoint(j));
  }
}

std::string q(const std::string& id) {
  std::string out;
  for (char c : id) {
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.') {
      out += c;
    } else {
      out += fmt::format("%{:02X}", static_cast<unsigned char>(c));
    }
  }
  return out;
}

int follow_logs(const std::string& id, bool follow) {
  uint64_t offset = 0;
  for (;;) {
    auto r = archd_call("GET", "/v1/jobs/" + q(id) + "/logs?offset=" + std::to_string(offset));
    if (!r) return report_error(r.error());
    if (r->status != 200) return report_error(archd_error(*r));
    std::fwrite(r->body.data(), 1, r->body.size(), stdout);
    std::fflush(stdout);
    offset = std::strtoull(r->next_offset.c_str(), nullptr, 10);
    bool alive = r->job_state == "running" || r->job_state == "detached";
    if (!r->body.empty()) continue;
    if (!follow || !alive) return 0;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
}

}  // namespace

namespace {

using Progress = std::function<void(uint64_t done, uint64_t total)>;

// While archd imports `archive` for a restore, its progress (GET /v1/imports, polled from a
// thread of its own) drives `progress`; nothing happens without one (not a terminal, -q).
class ImportWatch {
 public:
  ImportWatch(Progress progress, std::string archive)
      : progress_(std::move(progress)), archive_(std::move(archive)) {
    if (progress_) thread_ = std::thread([this] { loop(); });
  }
  ImportWatch(const ImportWatch&) = delete;
  ImportWatch& operator=(const ImportWatch&) = delete;
  ~ImportWatch() { stop(); }

  void stop() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
    if (shown_) fmt::print(stderr, "\n");
    shown_ = false;
  }

 private:
  void loop() {
    std::unique_lock lock(mutex_);
    while (!wake_.wait_for(lock, std::chrono::milliseconds(200), [this] { return stopping_; })) {
      lock.unlock();
      auto r = archd_call("GET", "/v1/imports", json());
      lock.lock();
      if (!r || stopping_) continue;
      for (const auto& i : r->json.value("imports", json::array())) {
        if (i.value("archive", "") != archive_) continue;
        uint64_t done = i.value("done", uint64_t{0}), total = i.value("total", uint64_t{0});
        if (finished_ || done == 0) continue;
        progress_(done, total);
        finished_ = total > 0 && done >= total;  // A finished line ends itself, once.
        shown_ = !finished_;
      }
    }
  }

  Progress progress_;
  std::string archive_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false, shown_ = false, finished_ = false;
  std::thread thread_;
};

}  // namespace

Handler add_job_command(CLI::App& app) {
  auto* job =
      app.add_subcommand("job", "Process jobs: run, checkpoint and restore processes under archd");
  job->require_subcommand(1);
  struct Opts {
    std::string name, env_file, dir, id, export_dir, from, output, signal = "TERM";
    std::vector<std::string> command, env;
    bool follow = false, leave_running = false, force = false, json = false, quiet = false;
  };
  auto o = std::make_shared<Opts>();

  auto* run = job->add_subcommand(
      "run",
      "Start CMD as a job of archd (own session, no tty, output to the job's log); prints its id");
  run->add_option("--name", o->name, "A name for the job (default: the command's name)");
  run->add_option("-e,--env", o->env,
                  "NAME=VALUE (or NAME: its value here) for the job's environment; repeatable. "
                  "The job gets only what --env and --env-file give")
      ->allow_extra_args(false);
  run->add_option("--env-file", o->env_file,
                  "NAME=VALUE lines for the job's environment (--env wins)");
  run->add_option("--dir", o->dir, "Working directory (default: the current one)");
  run->add_option("command", o->command, "-- CMD ARGS...")->required()->expected(-1);
  run->add_option("-o,--output", o->output, "json: print the job as JSON")
      ->check(CLI::IsMember({"json"}));

  auto* ps = job->add_subcommand("ps", "Jobs: pid, state, exit status, age, latest checkpoint");
  add_output_option(ps, o->output);
  auto* logs = job->add_subcommand("logs", "A job's output (stdout and stderr)");
  logs->add_option("id", o->id, "Job id or name")->required();
  logs->add_flag("-f,--follow", o->follow, "Keep printing while the job runs");
  auto* kill = job->add_subcommand("kill", "Send a signal to the job's process group");
  kill->add_option("id", o->id, "Job id or name")->required();
  kill->add_option("-s,--signal", o->signal, "Signal name or number (default TERM)");
  auto* rm = job->add_subcommand(
      "rm", "Forget a job: its record, log and stored checkpoints (exported archives stay)");
  rm->add_option("id", o->id, "Job id or name")->required();
  rm->add_flag("-f,--force", o->force, "Kill it first if it runs");
  auto* ckpt =
      job->add_subcommand("checkpoint", "Dump the job's process tree with CRIU into the store");
  ckpt->add_option("id", o->id, "Job id or name")->required();
  auto* leave =
      ckpt->add_flag("--leave-running", o->leave_running, "Keep the job running after the dump");
  ckpt->add_option("--export", o->export_dir, "Also write <name>_<UTC time>.tar.zst into DIR");
  add_output_option(ckpt, o->output);
  auto* restore = job->add_subcommand(
      "restore", "Restore a job from its newest checkpoint, or from an archive");
  restore->add_option("id", o->id, "Job id or name (optional with --from)");
  restore->add_option("--from", o->from, "An archive from `job checkpoint --export` (any node)");
  restore->add_flag("-q,--quiet", o->quiet, "No progress line on a terminal");
  add_output_option(restore, o->output);

  return [=]() -> int {
    o->json = o->output == "json";
    if (run->parsed()) {
      std::vector<std::string> lines;
      if (!o->env_file.empty()) {
        auto from_file = read_env_file(o->env_file);
        if (!from_file) return report_error(from_file.error());
        lines = *from_file;
      }
      auto env = job_environment(lines, o->env);
      if (!env) return report_error(env.error());
      std::string dir = o->dir;
      if (dir.empty() || dir.front() != '/') {
        char cwd[4096];
        if (::getcwd(cwd, sizeof cwd) == nullptr)
          return report_error("cannot read the current directory");
        dir = dir.empty() ? cwd : std::string(cwd) + "/" + dir;
      }
      json body = {{"argv", o->command}, {"env", *env}, {"cwd", dir}, {"name", o->name}};
      auto r = archd_call("POST", "/v1/jobs", body);
      if (!r) return report_error(r.error());
      return print_json_or(*r, o->json, [&] { fmt::print("{}\n", r->json.value("id", "")); });
    }
    if (ps->parsed()) {
      auto r = archd_call("GET", "/v1/jobs");
      if (!r) return report_error(r.error());
      return print_json_or(*r, o->json, [&] { print_jobs(r->json.value("jobs", json::array())); });
    }
    if (logs->parsed()) return follow_logs(o->id, o->follow);
    if (kill->parsed()) {
      auto sig = parse_signal(o->signal);
      if (!sig)
        return report_error(Error(ErrorKind::kInvalidInput, "unknown signal '" + o->signal + "'"));
      auto r = archd_call("POST", "/v1/jobs/" + q(o->id) + "/kill", json{{"signal", *sig}});
      if (!r) return report_error(r.error());
      return print_json_or(*r, false, [] {});
    }
    if (rm->parsed()) {
      auto r = archd_call("DELETE", "/v1/jobs/" + q(o->id) + (o->force ? "?force=1" : ""));
      if (!r) return report_error(r.error());
      return print_json_or(*r, false, [&] { fmt::print("removed {}\n", o->id); });
    }
    if (ckpt->parsed()) {
      json body = {{"export_dir", o->export_dir}};
      if (leave->count() > 0) body["leave_running"] = true;
      if (!o->export_dir.empty() && o->export_dir.front() != '/') {
        char cwd[4096];
        if (::getcwd(cwd, sizeof cwd) != nullptr)
          body["export_dir"] = std::string(cwd) + "/" + o->export_dir;
      }
      auto r = archd_call("POST", "/v1/jobs/" + q(o->id) + "/checkpoint", body);
      if (!r) return report_error(r.error());
      return print_json_or(*r, o->json, [&] {
        for (const auto& w : r->json.value("warnings", json::array()))
          fmt::print(stderr, "warning: {}\n", w.get<std::string>());
        fmt::print("checkpointed {} in {:.2f} s: {}\n", o->id, r->json.value("dump_ms", 0.0) / 1000,
                   r->json.value("checkpoint", ""));
        if (r->json.contains("archive")) fmt::print("exported: {}\n", r->json.value("archive", ""));
        if (!r->json.value("leave_running", false))
          fmt::print("the job is stopped; `archctl job restore {}` resumes it\n", o->id);
      });
    }
    if (restore->parsed()) {
      if (o->id.empty() && o->from.empty())
        return report_error(
            Error(ErrorKind::kInvalidInput, "job restore needs a job id or --from ARCHIVE"));
      std::string from = o->from;
      if (!from.empty() && from.front() != '/') {
        char cwd[4096];
        if (::getcwd(cwd, sizeof cwd) != nullptr) from = std::string(cwd) + "/" + from;
      }
      std::string path = o->id.empty() ? "/v1/jobs/restore" : "/v1/jobs/" + q(o->id) + "/restore";
      ImportWatch watch(from.empty() ? Progress{} : terminal_progress("restore", o->quiet), from);
      auto r = archd_call("POST", path, json{{"archive", from}});
      watch.stop();
      if (!r) return report_error(r.error());
      return print_json_or(*r, o->json, [&] {
        fmt::print("restored job {} ({}): pid {}\n", r->json.value("id", ""),
                   r->json.value("name", ""), r->json.value("pid", 0));
      });
    }
    return kExitUsage;
  };
}

}  // namespace arch::cli
