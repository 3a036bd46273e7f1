// RuncCommandLine: runc's command line (1.1 to 1.3), parsed exactly as runc (urfave/cli v1 +
// Go's flag package) parses it.
//
// The tables are runc 1.1's plus what 1.2/1.3 added (checkpoint --tcp-skip-in-flight and
// --link-remap, create/run/exec --pidfd-socket, update --cpu-burst and --cpu-idle; checked
// against Debian forky's runc 1.3.6, where the global --criu is still accepted but ignored
// with a warning: CRIU is taken from PATH). A 1.3 flag given to runc 1.1 parses here as
// exact; runc 1.1 then refuses the call itself.
//
// The rules reproduced here:
//  - Global flags come before the subcommand; parsing stops at the first non-flag.
//  - A flag is `-name` or `--name`, with its value as `=value` or as the next argument
//    (a value flag takes the next argument whatever it looks like); boolean flags take
//    a value only as `--name=true|false|1|0|t|f...`.
//  - `--` ends the flags. `-` alone is an argument.
//  - For most subcommands urfave/cli (v1.22) first moves the command's flags that appear
//    after positional arguments to the front ("reorderArgs"), each with the argument that
//    follows it unless that is itself a flag (a quirk: a boolean flag drags the next word
//    along); `exec` and `ps` skip that so the process's own arguments are left alone.
//  - Every subcommand also accepts `--help`/`-h`.
// Anything the table does not know (a flag runc lacks, a newer subcommand) makes the
// result inexact: ARCH then never changes the call, it only passes it through.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace arch {

enum class Subcommand {
  kNone,  ///< No subcommand (e.g. `runc --version`).
  kCheckpoint,
  kCreate,
  kDelete,
  kEvents,
  kExec,
  kFeatures,
  kHelp,
  kInit,
  kKill,
  kList,
  kPause,
  kPs,
  kRestore,
  kResume,
  kRun,
  kSpec,
  kStart,
  kState,
  kUpdate,
  kUnknown,  ///< A word runc 1.1 does not know (passed through; runc reports it).
};

/// The subcommand's canonical name ("create"), or "" for kNone/kUnknown.
std::string_view subcommand_name(Subcommand sub);

/// One flag occurrence: its canonical (long) name and value ("true" for a bare boolean).
struct ParsedFlag {
  std::string_view name;
  std::string_view value;
};

/// The parsed command line. Views point into the argv that was parsed.
struct RuncCommandLine {
  // Global flags.
  std::string_view root;        ///< --root (runc's default "/run/runc" when empty)
  std::string_view log;         ///< --log
  std::string_view log_format;  ///< --log-format ("text" when empty)
  std::string_view criu;        ///< --criu
  std::string_view rootless;    ///< --rootless
  bool debug = false;           ///< --debug
  bool systemd_cgroup = false;  ///< --systemd-cgroup
  bool help = false;            ///< --help/-h (global or subcommand)
  bool version = false;         ///< --version/-v

  Subcommand subcommand = Subcommand::kNone;
  std::string_view subcommand_word;    ///< As written (e.g. "h" for help).
  std::vector<ParsedFlag> flags;       ///< Subcommand flags in the order runc sees them.
  std::vector<std::string_view> args;  ///< Positional arguments after the flags.

  /// False when something was not understood exactly as runc would (unknown flag,
  /// missing value, unknown subcommand); `problem` says what.
  bool exact = true;
  std::string problem;

  /// The container id (first positional argument) for subcommands that take one.
  [[nodiscard]] std::string_view container_id() const;
  /// The last value given for flag `name` (canonical long name), if any.
  [[nodiscard]] std::optional<std::string_view> flag(std::string_view name) const;
  /// Every value given for a repeatable flag, in order.
  [[nodiscard]] std::vector<std::string_view> flag_values(std::string_view name) const;
  /// True when boolean flag `name` was given and parses as true.
  [[nodiscard]] bool flag_set(std::string_view name) const;
  /// runc's effective --root.
  [[nodiscard]] std::string_view effective_root() const {
    return root.empty() ? std::string_view("/run/runc") : root;
  }
  /// True for `--log-format json`.
  [[nodiscard]] bool json_log() const { return log_format == "json"; }
};

/// Parses argv (argv[0] is the program and is skipped). Never fails: oddities make the
/// result inexact instead, because the call must still reach runc unchanged.
RuncCommandLine parse_runc_command_line(std::span<const char* const> argv);

/// Parses a Go strconv.ParseBool value.
std::optional<bool> parse_go_bool(std::string_view text);

}  // namespace arch
