// RuncCommandLine: the flag tables of runc 1.1 to 1.3 and a parser that follows urfave/cli v1
// and Go's flag package step by step (see the header for the rules).
#include "runtime/runc_command_line.h"

#include <array>

namespace arch {
namespace {

enum class Kind { kBool, kValue };

struct FlagSpec {
  std::string_view name;
  std::string_view alias;  // One-letter alias or "".
  Kind kind;
};

struct CommandSpec {
  std::string_view name;
  std::string_view alias;
  Subcommand sub;
  bool skip_arg_reorder;
  bool takes_id;
  std::span<const FlagSpec> flags;
};

constexpr Kind B = Kind::kBool;
constexpr Kind V = Kind::kValue;

constexpr std::array kGlobalFlags{
    FlagSpec{"debug", "", B},    FlagSpec{"log", "", V},   FlagSpec{"log-format", "", V},
    FlagSpec{"root", "", V},     FlagSpec{"criu", "", V},  FlagSpec{"systemd-cgroup", "", B},
    FlagSpec{"rootless", "", V}, FlagSpec{"help", "h", B}, FlagSpec{"version", "v", B},
};

constexpr std::array kCheckpointFlags{
    FlagSpec{"image-path", "", V},
    FlagSpec{"work-path", "", V},
    FlagSpec{"parent-path", "", V},
    FlagSpec{"leave-running", "", B},
    FlagSpec{"tcp-established", "", B},
    FlagSpec{"ext-unix-sk", "", B},
    FlagSpec{"shell-job", "", B},
    FlagSpec{"lazy-pages", "", B},
    FlagSpec{"status-fd", "", V},
    FlagSpec{"page-server", "", V},
    FlagSpec{"file-locks", "", B},
    FlagSpec{"pre-dump", "", B},
    FlagSpec{"manage-cgroups-mode", "", V},
    FlagSpec{"empty-ns", "", V},
    FlagSpec{"auto-dedup", "", B},
    FlagSpec{"help", "h", B},
    // runc 1.2+
    FlagSpec{"tcp-skip-in-flight", "", B},
    FlagSpec{"link-remap", "", B},
};
constexpr std::array kCreateFlags{
    FlagSpec{"bundle", "b", V},  FlagSpec{"console-socket", "", V}, FlagSpec{"pid-file", "", V},
    FlagSpec{"no-pivot", "", B}, FlagSpec{"no-new-keyring", "", B}, FlagSpec{"preserve-fds", "", V},
    FlagSpec{"help", "h", B},    FlagSpec{"pidfd-socket", "", V},  // runc 1.2+
};
constexpr std::array kDeleteFlags{FlagSpec{"force", "f", B}, FlagSpec{"help", "h", B}};
constexpr std::array kEventsFlags{FlagSpec{"interval", "", V}, FlagSpec{"stats", "", B},
                                  FlagSpec{"help", "h", B}};
constexpr std::array kExecFlags{
    FlagSpec{"console-socket", "", V}, FlagSpec{"cwd", "", V},
    FlagSpec{"env", "e", V},           FlagSpec{"tty", "t", B},
    FlagSpec{"user", "u", V},          FlagSpec{"additional-gids", "g", V},
    FlagSpec{"process", "p", V},       FlagSpec{"detach", "d", B},
    FlagSpec{"pid-file", "", V},       FlagSpec{"process-label", "", V},
    FlagSpec{"apparmor", "", V},       FlagSpec{"no-new-privs", "", B},
    FlagSpec{"cap", "c", V},           FlagSpec{"preserve-fds", "", V},
    FlagSpec{"cgroup", "", V},         FlagSpec{"ignore-paused", "", B},
    FlagSpec{"help", "h", B},          FlagSpec{"pidfd-socket", "", V},  // runc 1.2+
};
constexpr std::array kKillFlags{FlagSpec{"all", "a", B}, FlagSpec{"help", "h", B}};
constexpr std::array kListFlags{FlagSpec{"format", "f", V}, FlagSpec{"quiet", "q", B},
                                FlagSpec{"help", "h", B}};
constexpr std::array kPsFlags{FlagSpec{"format", "f", V}, FlagSpec{"help", "h", B}};
constexpr std::array kRestoreFlags{
    FlagSpec{"console-socket", "", V}, FlagSpec{"image-path", "", V},
    FlagSpec{"work-path", "", V},      FlagSpec{"tcp-established", "", B},
    FlagSpec{"ext-unix-sk", "", B},    FlagSpec{"shell-job", "", B},
    FlagSpec{"file-locks", "", B},     FlagSpec{"manage-cgroups-mode", "", V},
    FlagSpec{"bundle", "b", V},        FlagSpec{"detach", "d", B},
    FlagSpec{"pid-file", "", V},       FlagSpec{"no-subreaper", "", B},
    FlagSpec{"no-pivot", "", B},       FlagSpec{"empty-ns", "", V},
    FlagSpec{"auto-dedup", "", B},     FlagSpec{"lazy-pages", "", B},
    FlagSpec{"lsm-profile", "", V},    FlagSpec{"lsm-mount-context", "", V},
    FlagSpec{"help", "h", B},
};
constexpr std::array kRunFlags{
    FlagSpec{"bundle", "b", V},  FlagSpec{"console-socket", "", V}, FlagSpec{"detach", "d", B},
    FlagSpec{"keep", "", B},     FlagSpec{"pid-file", "", V},       FlagSpec{"no-subreaper", "", B},
    FlagSpec{"no-pivot", "", B}, FlagSpec{"no-new-keyring", "", B}, FlagSpec{"preserve-fds", "", V},
    FlagSpec{"help", "h", B},    FlagSpec{"pidfd-socket", "", V},  // runc 1.2+
};
constexpr std::array kSpecFlags{FlagSpec{"bundle", "b", V}, FlagSpec{"rootless", "", B},
                                FlagSpec{"help", "h", B}};
constexpr std::array kUpdateFlags{
    FlagSpec{"resources", "r", V},
    FlagSpec{"blkio-weight", "", V},
    FlagSpec{"cpu-period", "", V},
    FlagSpec{"cpu-quota", "", V},
    FlagSpec{"cpu-share", "", V},
    FlagSpec{"cpu-rt-period", "", V},
    FlagSpec{"cpu-rt-runtime", "", V},
    FlagSpec{"cpuset-cpus", "", V},
    FlagSpec{"cpuset-mems", "", V},
    FlagSpec{"memory", "", V},
    FlagSpec{"memory-reservation", "", V},
    FlagSpec{"memory-swap", "", V},
    FlagSpec{"pids-limit", "", V},
    FlagSpec{"l3-cache-schema", "", V},
    FlagSpec{"mem-bw-schema", "", V},
    FlagSpec{"help", "h", B},
    // runc 1.2+
    FlagSpec{"cpu-burst", "", V},
    FlagSpec{"cpu-idle", "", V},
};
constexpr std::array kHelpOnly{FlagSpec{"help", "h", B}};
constexpr std::span<const FlagSpec> kNoFlags{};

constexpr std::array kCommands{
    CommandSpec{"checkpoint", "", Subcommand::kCheckpoint, false, true, kCheckpointFlags},
    CommandSpec{"create", "", Subcommand::kCreate, false, true, kCreateFlags},
    CommandSpec{"delete", "", Subcommand::kDelete, false, true, kDeleteFlags},
    CommandSpec{"events", "", Subcommand::kEvents, false, true, kEventsFlags},
    CommandSpec{"exec", "", Subcommand::kExec, true, true, kExecFlags},
    CommandSpec{"features", "", Subcommand::kFeatures, false, false, kHelpOnly},
    CommandSpec{"help", "h", Subcommand::kHelp, false, false, kNoFlags},
    CommandSpec{"init", "", Subcommand::kInit, false, false, kNoFlags},
    CommandSpec{"kill", "", Subcommand::kKill, false, true, kKillFlags},
    CommandSpec{"list", "", Subcommand::kList, false, false, kListFlags},
    CommandSpec{"pause", "", Subcommand::kPause, false, true, kHelpOnly},
    CommandSpec{"ps", "", Subcommand::kPs, true, true, kPsFlags},
    CommandSpec{"restore", "", Subcommand::kRestore, false, true, kRestoreFlags},
    CommandSpec{"resume", "", Subcommand::kResume, false, true, kHelpOnly},
    CommandSpec{"run", "", Subcommand::kRun, false, true, kRunFlags},
    CommandSpec{"spec", "", Subcommand::kSpec, false, false, kSpecFlags},
    CommandSpec{"start", "", Subcommand::kStart, false, true, kHelpOnly},
    CommandSpec{"state", "", Subcommand::kState, false, true, kHelpOnly},
    CommandSpec{"update", "", Subcommand::kUpdate, false, true, kUpdateFlags},
};

const FlagSpec* find_flag(std::span<const FlagSpec> flags, std::string_view name) {
  for (const auto& f : flags) {
    if (f.name == name || (!f.alias.empty() && f.alias == name)) return &f;
  }
  return nullptr;
}

const CommandSpec* find_command(std::string_view word) {
  for (const auto& c : kCommands) {
    if (c.name == word || (!c.alias.empty() && c.alias == word)) return &c;
  }
  return nullptr;
}

// urfave/cli's argIsFlag: strips up to two leading dashes and any "=value", then looks
// the name up (aliases included).
bool arg_is_flag(std::span<const FlagSpec> flags, std::string_view arg) {
  if (arg == "-" || arg.empty() || arg.front() != '-') return false;
  arg.remove_prefix(arg.starts_with("--") ? 2 : 1);
  arg = arg.substr(0, arg.find('='));
  return find_flag(flags, arg) != nullptr;
}

// urfave/cli v1.22's reorderArgs, quirks included: the argument after a flag written
// without '=' is moved along with it as its value unless it is itself one of the
// command's flags (so a boolean flag drags the next word along too), and a "--" that is
// not such a value goes to the front of the remaining arguments.
// Checked against runc 1.1.5: `update --resources - ID` reads resources from stdin.
std::vector<std::string_view> reorder_args(std::span<const FlagSpec> flags,
                                           std::span<const std::string_view> args) {
  std::vector<std::string_view> reordered, remaining;
  bool next_may_be_value = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string_view arg = args[i];
    if (next_may_be_value && !arg_is_flag(flags, arg)) {
      next_may_be_value = false;
      reordered.push_back(arg);
    } else if (arg == "--") {
      remaining.insert(remaining.begin(), arg);
      remaining.insert(remaining.end(), args.begin() + static_cast<std::ptrdiff_t>(i) + 1,
                       args.end());
      break;
    } else if (arg_is_flag(flags, arg)) {
      reordered.push_back(arg);
      next_may_be_value = arg.find('=') == std::string_view::npos;
    } else {
      remaining.push_back(arg);
    }
  }
  reordered.insert(reordered.end(), remaining.begin(), remaining.end());
  return reordered;
}

struct FlagParser {
  std::span<const FlagSpec> table;
  RuncCommandLine& out;

  // Go's FlagSet.Parse: consumes flags from `args` starting at `i`, calls `take` for each,
  // and returns the index of the first non-flag argument.
  template <class Take>
  std::size_t parse(std::span<const std::string_view> args, std::size_t i, Take take) {
    while (i < args.size()) {
      std::string_view s = args[i];
      if (s.size() < 2 || s.front() != '-') return i;
      std::size_t minuses = 1;
      if (s[1] == '-') {
        if (s.size() == 2) return i + 1;  // "--" ends the flags and is consumed.
        minuses = 2;
      }
      std::string_view name = s.substr(minuses);
      if (name.empty() || name.front() == '-' || name.front() == '=') {
        mark_inexact("bad flag syntax: " + std::string(s));
        return i;  // runc fails here with a usage error.
      }
      ++i;
      std::string_view value;
      bool has_value = false;
      if (auto eq = name.find('=', 1); eq != std::string_view::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
        has_value = true;
      }
      const FlagSpec* spec = find_flag(table, name);
      if (spec == nullptr) {
        mark_inexact("flag provided but not defined: -" + std::string(name));
        take(ParsedFlag{name, has_value ? value : std::string_view("true")});
        continue;
      }
      if (spec->kind == Kind::kBool) {
        if (!has_value) value = "true";
        if (!parse_go_bool(value)) mark_inexact("invalid boolean value for -" + std::string(name));
      } else if (!has_value) {
        if (i >= args.size()) {
          mark_inexact("flag needs an argument: -" + std::string(name));
          return i;
        }
        value = args[i++];
      }
      take(ParsedFlag{spec->name, value});
    }
    return i;
  }

  void mark_inexact(std::string why) {
    if (out.exact) out.problem = std::move(why);
    out.exact = false;
  }
};

void apply_global(RuncCommandLine& cl, const ParsedFlag& f) {
  bool on = parse_go_bool(f.value).value_or(false);
  if (f.name == "root")
    cl.root = f.value;
  else if (f.name == "log")
    cl.log = f.value;
  else if (f.name == "log-format")
    cl.log_format = f.value;
  else if (f.name == "criu")
    cl.criu = f.value;
  else if (f.name == "rootless")
    cl.rootless = f.value;
  else if (f.name == "debug")
    cl.debug = on;
  else if (f.name == "systemd-cgroup")
    cl.systemd_cgroup = on;
  else if (f.name == "help")
    cl.help = cl.help || on;
  else if (f.name == "version")
    cl.version = cl.version || on;
}

}  // namespace

std::optional<bool> parse_go_bool(std::string_view text) {
  if (text == "1" || text == "t" || text == "T" || text == "true" || text == "TRUE" ||
      text == "True") {
    return true;
  }
  if (text == "0" || text == "f" || text == "F" || text == "false" || text == "FALSE" ||
      text == "False") {
    return false;
  }
  return std::nullopt;
}

std::string_view subcommand_name(Subcommand sub) {
  for (const auto& c : kCommands) {
    if (c.sub == sub) return c.name;
  }
  return "";
}

std::string_view RuncCommandLine::container_id() const {
  for (const auto& c : kCommands) {
    if (c.sub == subcommand) return c.takes_id && !args.empty() ? args.front() : std::string_view{};
  }
  return {};
}

std::optional<std::string_view> RuncCommandLine::flag(std::string_view name) const {
  std::optional<std::string_view> found;
  for (const auto& f : flags) {
    if (f.name == name) found = f.value;
  }
  return found;
}

std::vector<std::string_view> RuncCommandLine::flag_values(std::string_view name) const {
  std::vector<std::string_view> values;
  for (const auto& f : flags) {
    if (f.name == name) values.push_back(f.value);
  }
  return values;
}

bool RuncCommandLine::flag_set(std::string_view name) const {
  auto v = flag(name);
  return v && parse_go_bool(*v).value_or(false);
}

RuncCommandLine parse_runc_command_line(std::span<const char* const> argv) {
  RuncCommandLine cl;
  std::vector<std::string_view> args;
  args.reserve(argv.size());
  for (std::size_t i = 1; i < argv.size(); ++i) args.emplace_back(argv[i]);

  FlagParser globals{kGlobalFlags, cl};
  std::size_t i = globals.parse(args, 0, [&](const ParsedFlag& f) { apply_global(cl, f); });
  if (i >= args.size()) return cl;  // No subcommand: `runc`, `runc --version`.

  cl.subcommand_word = args[i];
  const CommandSpec* command = find_command(args[i]);
  if (command == nullptr) {
    cl.subcommand = Subcommand::kUnknown;
    if (cl.exact) cl.problem = "unknown subcommand: " + std::string(args[i]);
    cl.exact = false;
    cl.args.assign(args.begin() + static_cast<std::ptrdiff_t>(i) + 1, args.end());
    return cl;
  }
  cl.subcommand = command->sub;
  std::span<const std::string_view> rest(args.data() + i + 1, args.size() - i - 1);
  std::vector<std::string_view> ordered =
      command->skip_arg_reorder ? std::vector<std::string_view>(rest.begin(), rest.end())
                                : reorder_args(command->flags, rest);
  FlagParser sub{command->flags, cl};
  std::size_t first_arg = sub.parse(ordered, 0, [&](const ParsedFlag& f) {
    if (f.name == "help") cl.help = cl.help || parse_go_bool(f.value).value_or(false);
    cl.flags.push_back(f);
  });
  cl.args.assign(ordered.begin() + static_cast<std::ptrdiff_t>(first_arg), ordered.end());
  return cl;
}

}  // namespace arch
