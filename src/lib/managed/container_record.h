// ContainerRecord construction: the registry record arch-runc writes for an ARCH-enabled
// container at create, from its runc command line, bundle, ARCH_* variables and the node config.
#pragma once

#include <optional>
#include <string>

#include "base/error.h"
#include "config/node_config.h"
#include "managed/container_registry.h"
#include "managed/store_layout.h"
#include "runtime/oci_spec.h"
#include "runtime/runc_command_line.h"

namespace arch {

/// The registry record for an ARCH-enabled container being created: namespace and owner
/// derived (derive_owner), key resolved (resolve_job_key), store and shared work dir chosen
/// by its ARCH_* variables among the node's allowed roots (store_place_for: kind kPermission when it
/// names none); ids validated.
/// `workdir`, when given, receives shared mode's work directory (std::nullopt without one).
Result<ContainerRecord> make_container_record(const RuncCommandLine& cl, const std::string& bundle,
                                              const ArchEnv& env, const NodeConfig& config,
                                              std::optional<SharedWorkdir>* workdir = nullptr);

}  // namespace arch
