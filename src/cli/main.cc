// archctl: the operator's command line for ARCH.
#include <cstdio>
#include <vector>

#include "commands.h"
#include "exit_codes.h"

int main(int argc, char** argv) {
  CLI::App app{"archctl: checkpoint and restore for containers (ARCH)"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every command");
  struct Verb {
    CLI::App* command;
    arch::cli::Handler handler;
  };
  std::vector<Verb> verbs;
  auto add = [&](arch::cli::Handler (*adder)(CLI::App&)) {
    auto handler = adder(app);
    verbs.push_back({app.get_subcommands({}).back(), std::move(handler)});
  };
  add(arch::cli::add_version_command);
  add(arch::cli::add_log_command);
  add(arch::cli::add_install_command);
  add(arch::cli::add_container_command);
  add(arch::cli::add_checkpoint_command);
  add(arch::cli::add_node_command);
  add(arch::cli::add_job_command);
  add(arch::cli::add_process_command);
  add(arch::cli::add_config_command);
  add(arch::cli::add_key_command);
  app.footer(arch::cli::kExitCodesHelp);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11 prints its message (or the help) itself; its own codes (105, 106...) never leak.
    return app.exit(e) == 0 ? arch::cli::kExitOk : arch::cli::kExitUsage;
  }
  for (auto& verb : verbs) {
    if (verb.command->parsed()) return verb.handler();
  }
  return arch::cli::kExitUsage;
}

namespace arch::cli {
int report_error(const Error& error) {
  std::fprintf(stderr, "archctl: error: %s\n", error.message().c_str());
  return exit_code(error.kind());
}

void add_output_option(CLI::App* cmd, std::string& output) {
  cmd->add_option("-o,--output", output, "json for machine-readable output")
      ->check(CLI::IsMember({"json"}));
}

int report_error(const std::string& message) {
  std::fprintf(stderr, "archctl: error: %s\n", message.c_str());
  return kExitFailure;
}
}  // namespace arch::cli
