// DockerLabels: config.v2.json read beneath Docker's data root, labels parsed (see
// docker_labels.h).
#include "managed/docker_labels.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "base/unique_fd.h"

namespace arch {
namespace {

std::unexpected<Error> refuse(const std::string& what, const std::string& why) {
  return fail(ErrorKind::kPermission, "Docker's record " + what + ": " + why);
}

}  // namespace

Result<void> validate_docker_id(std::string_view id) {
  bool ok = id.size() == 64;
  for (char c : id) ok = ok && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
  if (!ok) return fail(ErrorKind::kPermission, "not a Docker container id (64 hex digits)");
  return {};
}

Result<Labels> parse_docker_labels(std::string_view text) {
  auto doc = nlohmann::json::parse(text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return fail("not a JSON object");
  Labels labels;
  auto config = doc.find("Config");
  if (config == doc.end() || config->is_null()) return labels;
  if (!config->is_object()) return fail("Config is not an object");
  auto found = config->find("Labels");
  if (found == config->end() || found->is_null()) return labels;
  if (!found->is_object()) return fail("Config.Labels is not an object");
  for (const auto& [name, value] : found->items()) {
    if (!value.is_string()) return fail("label " + name + " is not a string");
    labels.emplace(name, value.get<std::string>());
  }
  return labels;
}

Result<std::optional<std::string>> read_docker_record(const std::string& data_root,
                                                      std::string_view id, std::string_view file) {
  if (auto ok = validate_docker_id(id); !ok) {
    return refuse("of container " + std::string(id.substr(0, 80)), ok.error().message());
  }
  if (file != kDockerConfigFile && file != kDockerHostConfigFile) {
    return refuse("file " + std::string(file.substr(0, 80)), "not a file of Docker's record");
  }
  std::string rel = "containers/" + std::string(id) + "/" + std::string(file);
  std::string shown = data_root + "/" + rel;
  // The data root is the node config's (trusted); below it nothing is followed.
  auto root = open_file(data_root, O_RDONLY | O_DIRECTORY);
  if (!root) return refuse(shown, root.error().message());
  open_how how{};
  how.flags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  long raw = retry_eintr(
      [&] { return ::syscall(SYS_openat2, root->get(), rel.c_str(), &how, sizeof how); });
  if (raw < 0) {
    if (errno == ENOENT) return std::optional<std::string>();
    if (errno == ELOOP) return refuse(shown, "a symlink on the way (never followed)");
    return refuse(shown, errno_error("open").message());
  }
  UniqueFd fd(static_cast<int>(raw));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return refuse(shown, errno_error("stat").message());
  if (!S_ISREG(st.st_mode)) return refuse(shown, "not a regular file");
  if (st.st_uid != ::geteuid()) {
    return refuse(shown, "owned by uid " + std::to_string(st.st_uid) + ", not root");
  }
  if (static_cast<std::size_t>(st.st_size) > kMaxDockerConfigBytes) {
    return refuse(shown, std::to_string(st.st_size) + " bytes, more than the " +
                             std::to_string(kMaxDockerConfigBytes) + " allowed");
  }
  std::string text(kMaxDockerConfigBytes + 1, '\0');
  std::size_t got = 0;
  while (got < text.size()) {
    ssize_t n = retry_eintr([&] { return ::read(fd.get(), text.data() + got, text.size() - got); });
    if (n < 0) return refuse(shown, errno_error("read").message());
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  if (got > kMaxDockerConfigBytes) return refuse(shown, "grew beyond the size allowed");
  text.resize(got);
  return std::optional<std::string>(std::move(text));
}

Result<Labels> read_docker_labels(const std::string& data_root, std::string_view id) {
  auto text = read_docker_record(data_root, id, kDockerConfigFile);
  if (!text) return std::unexpected(text.error());
  std::string shown = data_root + "/containers/" + std::string(id) + "/" + kDockerConfigFile;
  if (!*text) return refuse(shown, "open: no such file (not a Docker container)");
  auto labels = parse_docker_labels(**text);
  if (!labels) return refuse(shown, labels.error().message());
  return labels;
}

}  // namespace arch
