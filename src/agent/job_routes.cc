// JobRoutes: the /v1/jobs and /v1/processes routes: JSON in, JobManager call, JSON out;
// error kinds become HTTP statuses through http_reply.h.
#include "job_routes.h"

#include <httplib.h>
#include <signal.h>

#include <cstdlib>
#include <nlohmann/json.hpp>

#include "http_reply.h"
#include "jobs.h"

namespace arch::agent {

using nlohmann::json;

namespace {

Result<json> body_object(const httplib::Request& req) {
  if (req.body.empty()) return json::object();
  auto j = json::parse(req.body, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return fail(ErrorKind::kInvalidInput, "body is not a JSON object");
  return j;
}

Result<CheckpointRequest> checkpoint_request(const json& j) {
  CheckpointRequest r;
  try {
    if (j.contains("leave_running") && !j["leave_running"].is_null())
      r.leave_running = j["leave_running"].get<bool>();
    r.export_dir = j.value("export_dir", "");
    r.tcp_established = j.value("tcp_established", false);
  } catch (const json::exception& e) {
    return fail(ErrorKind::kInvalidInput, e.what());
  }
  return r;
}

template <class F>
auto with_body(F f) {
  return [f](const httplib::Request& req, httplib::Response& res) {
    auto body = body_object(req);
    if (!body) return reply_error(res, body.error());
    try {
      f(req, res, *body);
    } catch (const json::exception& e) {
      reply_error(res, Error(ErrorKind::kInvalidInput, std::string("bad request: ") + e.what()));
    }
  };
}

}  // namespace

void register_job_routes(httplib::Server& s, JobManager& jobs) {
  s.Get("/v1/jobs", [&jobs](const httplib::Request&, httplib::Response& res) {
    reply(res, 200, {{"jobs", jobs.list()}});
  });
  s.Post("/v1/jobs",
         with_body([&jobs](const httplib::Request&, httplib::Response& res, const json& b) {
           JobRunRequest r{b.at("argv").get<std::vector<std::string>>(),
                           b.value("env", std::vector<std::string>{}), b.value("cwd", ""),
                           b.value("name", "")};
           auto rec = jobs.run(std::move(r));
           if (!rec) return reply_error(res, rec.error());
           reply(res, 201, *rec);
         }));
  s.Get("/v1/imports", [&jobs](const httplib::Request&, httplib::Response& res) {
    reply(res, 200, jobs.imports());
  });
  s.Post("/v1/jobs/restore",
         with_body([&jobs](const httplib::Request&, httplib::Response& res, const json& b) {
           std::string archive = b.value("archive", "");
           if (archive.empty())
             return reply_error(res, Error(ErrorKind::kInvalidInput, "archive is required"));
           auto rec = jobs.restore("", archive);
           if (!rec) return reply_error(res, rec.error());
           reply(res, 200, *rec);
         }));
  s.Get(R"(/v1/jobs/([^/]+))", [&jobs](const httplib::Request& req, httplib::Response& res) {
    auto rec = jobs.get(req.matches[1].str());
    if (!rec) return reply_error(res, rec.error());
    reply(res, 200, *rec);
  });
  s.Get(R"(/v1/jobs/([^/]+)/logs)", [&jobs](const httplib::Request& req, httplib::Response& res) {
    uint64_t offset = req.has_param("offset")
                          ? std::strtoull(req.get_param_value("offset").c_str(), nullptr, 10)
                          : 0;
    auto rec = jobs.get(req.matches[1].str());
    if (!rec) return reply_error(res, rec.error());
    auto data = jobs.read_log(rec->id, offset, 1 << 20);
    if (!data) return reply_error(res, data.error());
    res.set_header("X-Arch-Next-Offset", std::to_string(offset + data->size()));
    res.set_header("X-Arch-Job-State", rec->state);
    res.set_content(*data, "application/octet-stream");
  });
  s.Post(R"(/v1/jobs/([^/]+)/kill)",
         with_body([&jobs](const httplib::Request& req, httplib::Response& res, const json& b) {
           auto rec = jobs.kill(req.matches[1].str(), b.value("signal", SIGTERM));
           if (!rec) return reply_error(res, rec.error());
           reply(res, 200, *rec);
         }));
  s.Delete(R"(/v1/jobs/([^/]+))", [&jobs](const httplib::Request& req, httplib::Response& res) {
    bool force = req.has_param("force") && req.get_param_value("force") == "1";
    auto done = jobs.remove(req.matches[1].str(), force);
    if (!done) return reply_error(res, done.error());
    reply(res, 200, {{"removed", req.matches[1].str()}});
  });
  s.Post(R"(/v1/jobs/([^/]+)/checkpoint)",
         with_body([&jobs](const httplib::Request& req, httplib::Response& res, const json& b) {
           auto r = checkpoint_request(b);
           if (!r) return reply_error(res, r.error());
           auto out = jobs.checkpoint(req.matches[1].str(), *r);
           if (!out) return reply_error(res, out.error());
           reply(res, 200, *out);
         }));
  s.Post(R"(/v1/jobs/([^/]+)/restore)",
         with_body([&jobs](const httplib::Request& req, httplib::Response& res, const json& b) {
           auto rec = jobs.restore(req.matches[1].str(), b.value("archive", ""));
           if (!rec) return reply_error(res, rec.error());
           reply(res, 200, *rec);
         }));
  s.Post("/v1/processes/checkpoint",
         with_body([&jobs](const httplib::Request&, httplib::Response& res, const json& b) {
           auto r = checkpoint_request(b);
           if (!r) return reply_error(res, r.error());
           auto out = jobs.checkpoint_process(b.at("pid").get<pid_t>(), *r);
           if (!out) return reply_error(res, out.error());
           reply(res, 200, *out);
         }));
  s.Post("/v1/processes/restore",
         with_body([&jobs](const httplib::Request&, httplib::Response& res, const json& b) {
           auto rec = jobs.restore_process(b.value("path", ""));
           if (!rec) return reply_error(res, rec.error());
           reply(res, 200, *rec);
         }));
}

}  // namespace arch::agent
