// archctl: the operator's command line for ARCH.
#include <fmt/core.h>

#include <cstdio>
#include <string_view>
#include <vector>

#include "base/suggest.h"
#include "commands.h"
#include "exit_codes.h"

namespace arch::cli {
namespace {

bool g_json_errors = false;

// `-o json`, `-ojson`, `--output json` or `--output=json` anywhere on the command line:
// errors, including usage errors found while parsing, are JSON too.
bool wants_json(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "-ojson" || a == "--output=json") return true;
    if ((a == "-o" || a == "--output") && i + 1 < argc && std::string_view(argv[i + 1]) == "json")
      return true;
  }
  return false;
}

// Where parsing stopped on an unknown word: walks the subcommands the arguments name and
// suggests the closest subcommand (or option) for the first word that names none.
std::string suggestion_for(CLI::App& app, int argc, char** argv) {
  CLI::App* at = &app;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a.starts_with("--")) {
      std::string name(a.substr(
          2, a.find('=') == std::string_view::npos ? std::string_view::npos : a.find('=') - 2));
      bool known = false;
      std::vector<std::string> names;
      for (const CLI::Option* opt : at->get_options()) {
        for (const auto& n : opt->get_lnames()) {
          names.push_back(n);
          known = known || n == name;
        }
      }
      if (!known) {
        std::string best = closest_name(name, names);
        return "unknown option '--" + name + "'" +
               (best.empty() ? std::string() : " (did you mean '--" + best + "'?)");
      }
      continue;
    }
    if (a.starts_with("-")) continue;
    auto subs = at->get_subcommands({});
    if (subs.empty()) return {};  // a positional argument of a leaf command
    CLI::App* next = nullptr;
    std::vector<std::string> names;
    for (CLI::App* sub : subs) {
      names.push_back(sub->get_name());
      if (sub->check_name(std::string(a))) next = sub;
    }
    if (next == nullptr) {
      std::string path = at == &app ? "archctl" : "archctl " + at->get_name();
      return "'" + std::string(a) + "' is not a command of " + path + did_you_mean(a, names) +
             "; see `" + path + " --help`";
    }
    at = next;
  }
  return {};
}

int print_error(ErrorKind kind, const std::string& message) {
  int code = exit_code(kind);
  if (g_json_errors) {
    nlohmann::json j = {
        {"error", {{"kind", std::string(name(kind))}, {"message", message}, {"exit_code", code}}}};
    fmt::print("{}\n", j.dump());
    std::fflush(stdout);
  } else {
    fmt::print(stderr, "archctl: error: {}\n", message);
  }
  return code;
}

}  // namespace

int report_error(const Error& error) {
  return print_error(error.kind(), error.message());
}

int report_error(const std::string& message) {
  print_error(ErrorKind::kInternal, message);
  return kExitFailure;
}

void add_output_option(CLI::App* cmd, std::string& output) {
  cmd->add_option("-o,--output", output, "json for machine-readable output (errors too)")
      ->check(CLI::IsMember({"json"}));
}

}  // namespace arch::cli

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
  add(arch::cli::add_group_command);
  add(arch::cli::add_checkpoint_command);
  add(arch::cli::add_node_command);
  add(arch::cli::add_job_command);
  add(arch::cli::add_process_command);
  add(arch::cli::add_config_command);
  add(arch::cli::add_key_command);
  add(arch::cli::add_peer_command);
  add(arch::cli::add_completion_command);
  app.footer(arch::cli::kExitCodesHelp);
  arch::cli::g_json_errors = arch::cli::wants_json(argc, argv);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e), arch::cli::kExitOk;  // --help and such
    // A typo gets a suggestion rather than CLI11's "A subcommand is required"; CLI11's
    // own exit codes (105, 106 ...) never leak: every usage error is 2.
    std::string message = arch::cli::suggestion_for(app, argc, argv);
    if (message.empty()) message = e.what();
    return arch::cli::print_error(arch::ErrorKind::kInvalidInput, message);
  }
  for (auto& verb : verbs) {
    if (verb.command->parsed()) return verb.handler();
  }
  return arch::cli::kExitUsage;
}
