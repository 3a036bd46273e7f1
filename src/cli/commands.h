// archctl's verbs: each registers its CLI11 subcommand and runs one library call.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "base/error.h"
#include "config/node_config.h"

namespace arch::cli {

/// A verb's handler, run after parsing; returns the process exit status.
using Handler = std::function<int()>;

/// Adds the verb to `app` and returns the handler to run when it was chosen.
Handler add_version_command(CLI::App& app);
Handler add_log_command(CLI::App& app);
Handler add_install_command(CLI::App& app);
Handler add_container_command(CLI::App& app);
Handler add_checkpoint_command(CLI::App& app);
Handler add_node_command(CLI::App& app);
Handler add_job_command(CLI::App& app);
Handler add_process_command(CLI::App& app);
Handler add_config_command(CLI::App& app);
Handler add_key_command(CLI::App& app);
Handler add_group_command(CLI::App& app);
Handler add_peer_command(CLI::App& app);
/// `archctl container migrate` (cmd_migrate.cc).
int run_migrate(const std::string& ref, const std::string& to, bool handoff, bool as_json);
/// `archctl completion bash`: a bash completion script made from `app`'s commands.
Handler add_completion_command(CLI::App& app);

/// Adds `-o,--output json` (machine-readable output) to `cmd`; any other value is a usage error.
void add_output_option(CLI::App* cmd, std::string& output);

/// One answer of archd's local API: the status, the raw body, and the body as JSON (null
/// when it is not JSON), plus the response headers archctl reads.
struct ArchdReply {
  long status = 0;
  std::string body;
  nlohmann::json json;
  std::string next_offset;  ///< X-Arch-Next-Offset (job logs).
  std::string job_state;    ///< X-Arch-Job-State (job logs).
};
/// `method` `path` to archd on the node config's [agent] socket (archd_client.cc).
/// Fails when archd cannot be reached; a non-2xx answer is a reply, not an error.
Result<ArchdReply> archd_call(const std::string& method, const std::string& path,
                              const nlohmann::json& body = nullptr, long timeout_ms = 900000);
/// "archd answered 404: no job 'x'", of the kind the status stands for (cli/exit_codes.h).
Error archd_error(const ArchdReply& reply);

/// The node config archctl acts on ($ARCH_CONFIG or /etc/arch/arch.conf; the defaults
/// when that file is absent). Its warnings go to stderr. A file that exists (or that
/// ARCH_CONFIG names) but cannot be used is an error: archctl never acts on a policy it
/// could not read.
Result<NodeConfig> node_config();

/// The node config and the runtime arch-runc hands calls to, for verbs that act on
/// containers (container, group).
struct Node {
  NodeConfig config;
  std::string runc;
};
/// node_config() and the runtime it names (relative to this archctl).
Result<Node> load_node();

/// A progress line for a long byte copy ("export: 312 / 1024 MiB (30%)"), redrawn on stderr
/// at most every 250 ms and ended with a newline when done reaches total; an empty function
/// (no output) when `quiet` or stderr is not a terminal.
std::function<void(uint64_t done, uint64_t total)> terminal_progress(std::string verb, bool quiet);

/// Prints "archctl: error: <message>" to stderr and returns the exit code of its kind.
int report_error(const Error& error);
/// Prints "archctl: error: <message>" to stderr and returns 1 (kExitFailure).
int report_error(const std::string& message);

}  // namespace arch::cli
