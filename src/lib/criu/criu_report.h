// CriuReport: what ARCH can say about the node's CRIU, cheaply and honestly: its path and
// version, the functional trial setup ran (scripts/lib.sh criu_trial_record: a real dump and
// restore per socket kind, recorded in a root-owned file), and `criu check --feature` probes.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "config/node_config.h"

namespace arch {

/// The trial record setup wrote, as JSON with "trusted": false and "why" when the file is
/// missing, unreadable, not root-owned, writable by group or others, or for another CRIU
/// binary or kernel than the one in use ("stale": true, then).
nlohmann::json read_criu_trial(const std::string& path, const std::string& criu,
                               const std::string& kernel);

/// {"path", "version", "trial": read_criu_trial(...), "features": {name: {"supported",
/// "reason", "probe"}}}. The probes run once per process (`criu check --feature`).
nlohmann::json criu_report(const NodeConfig& config);

/// The report as text lines for archctl ("criu:    /opt/arch/criu/bin/criu (4.2.1)" ...).
std::string criu_report_text(const nlohmann::json& report);

}  // namespace arch
