// JobRoutes: archd's HTTP API for process jobs (/v1/jobs, /v1/processes), a thin layer that
// parses JSON requests, calls JobManager and maps its errors to HTTP statuses.
#pragma once

namespace httplib {
class Server;
}

namespace arch::agent {

class JobManager;

/// Adds the /v1/jobs and /v1/processes routes to archd's API server.
void register_job_routes(httplib::Server& server, JobManager& jobs);

}  // namespace arch::agent
