// archctl's verbs: each registers its CLI11 subcommand and runs one library call.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

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

/// Prints "archctl: error: <message>" to stderr and returns 1.
int report_error(const std::string& message);

}  // namespace arch::cli
