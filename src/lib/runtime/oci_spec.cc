// OciSpec: config.json parsing with nlohmann::json, strict about the parts ARCH reads.
#include "runtime/oci_spec.h"

#include <nlohmann/json.hpp>

#include "base/file_util.h"

namespace arch {

bool ArchEnv::enabled() const {
  auto v = get("ARCH_ENABLE");
  return v == "1" || v == "true" || v == "TRUE" || v == "True";
}

std::string_view ArchEnv::get(std::string_view name) const {
  auto it = vars.find(name);
  return it == vars.end() ? std::string_view{} : std::string_view(it->second);
}

std::string_view ArchEnv::annotation(std::string_view name) const {
  auto it = annotations.find(name);
  return it == annotations.end() ? std::string_view{} : std::string_view(it->second);
}

namespace {

constexpr std::string_view kCriAnnotationPrefix = "io.kubernetes.cri.";

Result<void> parse_annotations(const nlohmann::json& spec, ArchEnv& env) {
  auto annotations = spec.find("annotations");
  if (annotations == spec.end() || annotations->is_null()) return {};
  if (!annotations->is_object()) return fail("config.json: annotations is not an object");
  for (const auto& [name, value] : annotations->items()) {
    if (!name.starts_with(kCriAnnotationPrefix)) continue;
    if (!value.is_string()) return fail("config.json: annotation " + name + " is not a string");
    env.annotations[name] = value.get<std::string>();
  }
  return {};
}

}  // namespace

Result<ArchEnv> parse_arch_env(std::string_view config_json) {
  nlohmann::json spec = nlohmann::json::parse(config_json, nullptr, /*allow_exceptions=*/false);
  if (spec.is_discarded()) return fail("config.json is not valid JSON");
  if (!spec.is_object()) return fail("config.json is not a JSON object");
  ArchEnv env;
  if (auto ok = parse_annotations(spec, env); !ok) return std::unexpected(ok.error());
  auto process = spec.find("process");
  if (process == spec.end() || process->is_null()) return env;
  if (!process->is_object()) return fail("config.json: process is not an object");
  auto list = process->find("env");
  if (list == process->end() || list->is_null()) return env;
  if (!list->is_array()) return fail("config.json: process.env is not an array");
  for (const auto& entry : *list) {
    if (!entry.is_string()) return fail("config.json: process.env holds a non-string entry");
    const auto& s = entry.get_ref<const std::string&>();
    if (!s.starts_with("ARCH_") && !s.starts_with("AWS_BATCH_JOB_ID=")) continue;
    auto eq = s.find('=');
    if (eq == std::string::npos) continue;
    // Later entries win, as they do for the process's own environment.
    env.vars[s.substr(0, eq)] = s.substr(eq + 1);
  }
  return env;
}

Result<std::string> read_root_path(const std::string& bundle) {
  std::string path = (bundle.empty() ? std::string(".") : bundle) + "/config.json";
  auto text = read_file(path, 64 << 20);
  if (!text) return std::unexpected(text.error());
  auto spec = nlohmann::json::parse(*text, nullptr, false);
  if (spec.is_discarded() || !spec.is_object()) return fail(path + ": not valid JSON");
  auto root = spec.find("root");
  if (root == spec.end() || !root->is_object() || !root->contains("path") ||
      !(*root)["path"].is_string()) {
    return fail(path + ": no root.path");
  }
  std::string rootfs = (*root)["path"].get<std::string>();
  if (rootfs.empty()) return fail(path + ": empty root.path");
  return rootfs.front() == '/' ? rootfs : bundle + "/" + rootfs;
}

Result<ArchEnv> read_arch_env(const std::string& bundle) {
  std::string path = (bundle.empty() ? std::string(".") : bundle) + "/config.json";
  auto text = read_file(path, 64 << 20);
  if (!text) return std::unexpected(text.error());
  auto env = parse_arch_env(*text);
  if (!env) return std::unexpected(env.error().wrap(path));
  return env;
}

Result<std::string> criu_config_from_spec(std::string_view config_json) {
  nlohmann::json spec = nlohmann::json::parse(config_json, nullptr, /*allow_exceptions=*/false);
  if (spec.is_discarded() || !spec.is_object()) return fail("config.json is not a JSON object");
  auto annotations = spec.find("annotations");
  if (annotations == spec.end() || !annotations->is_object()) return std::string();
  auto it = annotations->find(std::string(kCriuConfigAnnotation));
  if (it == annotations->end()) return std::string();
  // Anything but a string is refused as well: runc would not read it, but it is no
  // container's business either.
  return it->is_string() ? it->get<std::string>() : it->dump();
}

}  // namespace arch
