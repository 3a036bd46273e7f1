// SpecDigest: a digest of the security-relevant parts of an OCI spec, field by field, so a
// checkpoint can be bound to the privileges its container had and a restore into a spec
// that grants other privileges is refused, naming the fields that differ; and the check of
// restored tasks' credentials (/proc/<pid>/status) against a spec.
//
// Fields (each canonical JSON: sets sorted and deduplicated, absent = its default):
//   process.user.uid, process.user.gid, process.user.additionalGids,
//   process.capabilities.{bounding,effective,inheritable,permitted,ambient},
//   process.noNewPrivileges, process.apparmorProfile, process.selinuxLabel, process.rlimits,
//   linux.seccomp, linux.devices, linux.resources.devices, linux.namespaces (types only),
//   linux.uidMappings, linux.gidMappings, linux.maskedPaths, linux.readonlyPaths,
//   linux.mountLabel, root.readonly, mounts (destination, type and options; not sources).
// Left out on purpose: per-instance values (mount sources such as a pod volume's host path,
// namespace paths such as the pod's netns, cgroupsPath, hostname, env, args, root.path).
// The digest is SHA-256 over "arch-spec-digest-v1\n" and the canonical JSON of the map
// field name -> SHA-256 of the field's canonical JSON.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"

namespace arch {

/// A spec's digest and its per-field digests.
struct SpecDigest {
  std::string digest;                         ///< Lower-case hex SHA-256.
  std::map<std::string, std::string> fields;  ///< Field name -> lower-case hex SHA-256.
};

/// The digest of config.json text. Errors when it is not a JSON object or a field has the
/// wrong type.
Result<SpecDigest> spec_digest(std::string_view config_json);
/// spec_digest() of `<bundle>/config.json`.
Result<SpecDigest> bundle_spec_digest(const std::string& bundle);

/// The fields whose digests differ (or that only one side has), sorted.
std::vector<std::string> differing_spec_fields(const std::map<std::string, std::string>& a,
                                               const std::map<std::string, std::string>& b);

/// What a spec allows a container's tasks to hold (from config.json).
struct SpecCredentials {
  uint64_t bounding = 0;  ///< process.capabilities.bounding as a mask.
  uint64_t granted = 0;   ///< The union of all five capability sets.
  uint64_t ambient = 0;
  /// When set, every uid (real, effective, saved, fs) must be this (host view, through the
  /// user namespace's mapping). Unset when the spec lets the uid change (CAP_SETUID, or
  /// setuid binaries without noNewPrivileges).
  std::optional<uint32_t> uid, gid;
  bool seccomp = false;            ///< A seccomp filter is required (linux.seccomp set).
  bool no_new_privileges = false;  ///< NoNewPrivs must be 1.
};

/// Parses the credentials a spec grants.
Result<SpecCredentials> spec_credentials(std::string_view config_json);

/// Checks one task's /proc/<pid>/status text against the spec: an empty result means no
/// excess, else one line per excess ("CapEff has CAP_SYS_ADMIN", "Seccomp 0, spec requires
/// a filter", ...).
std::vector<std::string> credential_excess(std::string_view status, const SpecCredentials& spec);

/// The capability's bit (CAP_CHOWN = 0 ...), or -1 for an unknown name.
int capability_bit(std::string_view name);

}  // namespace arch
