// JobRecord: JSON form, the jobs file, ids and names.
#include "jobs/job_record.h"

#include <fcntl.h>
#include <fmt/core.h>
#include <sys/random.h>

#include <ctime>

#include "base/clock.h"
#include "base/file_util.h"

namespace arch {

using nlohmann::json;

void to_json(json& j, const JobRecord& r) {
  j = json{{"id", r.id},
           {"name", r.name},
           {"kind", r.kind},
           {"argv", r.argv},
           {"env", r.env},
           {"cwd", r.cwd},
           {"log", r.log},
           {"log_key", r.log_key},
           {"pid", r.pid},
           {"start_time", r.start_time},
           {"state", r.state},
           {"exit_code", r.exit_code},
           {"exit_signal", r.exit_signal},
           {"created", r.created},
           {"started", r.started},
           {"finished", r.finished},
           {"restores", r.restores},
           {"checkpoint",
            {{"path", r.checkpoint.path},
             {"created", r.checkpoint.created},
             {"archive", r.checkpoint.archive}}}};
}

void from_json(const json& j, JobRecord& r) {
  r.id = j.at("id").get<std::string>();
  r.name = j.value("name", r.id);
  r.kind = j.value("kind", "job");
  r.argv = j.value("argv", std::vector<std::string>{});
  r.env = j.value("env", std::vector<std::string>{});
  r.cwd = j.value("cwd", "");
  r.log = j.value("log", "");
  r.log_key = j.value("log_key", "");
  r.pid = j.value("pid", 0);
  r.start_time = j.value("start_time", uint64_t{0});
  r.state = j.value("state", std::string(job_state::kLost));
  r.exit_code = j.value("exit_code", -1);
  r.exit_signal = j.value("exit_signal", 0);
  r.created = j.value("created", 0L);
  r.started = j.value("started", 0L);
  r.finished = j.value("finished", 0L);
  r.restores = j.value("restores", 0);
  if (auto c = j.find("checkpoint"); c != j.end() && c->is_object()) {
    r.checkpoint.path = c->value("path", "");
    r.checkpoint.created = c->value("created", "");
    r.checkpoint.archive = c->value("archive", "");
  }
}

Result<std::vector<JobRecord>> parse_jobs(std::string_view text) {
  auto j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return fail("jobs file is not a JSON object");
  int version = j.value("format_version", 0);
  if (version > kJobsFormatVersion) {
    return fail(fmt::format("jobs file format {} is newer than this archd reads ({})", version,
                            kJobsFormatVersion));
  }
  try {
    return j.value("jobs", json::array()).get<std::vector<JobRecord>>();
  } catch (const json::exception& e) {
    return fail(std::string("jobs file: ") + e.what());
  }
}

std::string serialize_jobs(const std::vector<JobRecord>& jobs) {
  return json{{"format_version", kJobsFormatVersion}, {"jobs", jobs}}.dump(2) + "\n";
}

Result<std::vector<JobRecord>> load_jobs(const std::string& path) {
  auto text = read_file(path);
  if (!text) {
    if (text.error().code() == ENOENT) return std::vector<JobRecord>{};
    return std::unexpected(text.error());
  }
  auto jobs = parse_jobs(*text);
  if (!jobs) return std::unexpected(jobs.error().wrap(path));
  return jobs;
}

Result<void> save_jobs(const std::string& path, const std::vector<JobRecord>& jobs) {
  return write_file_atomic(path, serialize_jobs(jobs), 0600);
}

std::string new_job_id() {
  unsigned char bytes[6];
  if (::getrandom(bytes, sizeof bytes, 0) != sizeof bytes) {
    auto t = static_cast<unsigned long>(std::time(nullptr));
    for (auto& b : bytes) b = static_cast<unsigned char>((t = t * 6364136223846793005UL + 1) >> 56);
  }
  std::string id;
  for (unsigned char b : bytes) id += fmt::format("{:02x}", b);
  return id;
}

namespace {
bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}
}  // namespace

Result<void> validate_job_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return fail("job name must have 1 to 64 characters");
  if (name.front() == '.' || name.front() == '-')
    return fail("job name '" + std::string(name) + "' must not start with '.' or '-'");
  for (char c : name) {
    if (!name_char(c))
      return fail("job name '" + std::string(name) + "' may only hold [A-Za-z0-9_.-]");
  }
  return {};
}

std::string default_job_name(const std::vector<std::string>& argv) {
  std::string base = argv.empty() ? "job" : argv[0];
  if (auto slash = base.rfind('/'); slash != std::string::npos) base = base.substr(slash + 1);
  for (char& c : base) {
    if (!name_char(c)) c = '-';
  }
  while (!base.empty() && (base.front() == '.' || base.front() == '-')) base.erase(0, 1);
  if (base.size() > 64) base.resize(64);
  return base.empty() ? "job" : base;
}

std::string archive_file_name(std::string_view name, long when, bool compressed) {
  return fmt::format("{}_{}{}", name, format_utc(when, true), compressed ? ".tar.zst" : ".tar");
}

}  // namespace arch
