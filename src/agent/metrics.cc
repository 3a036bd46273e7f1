// Metrics: rendering of the exposition format. Every family gets HELP and TYPE once, then
// its samples; label values here are fixed words, so no escaping is needed.
#include "metrics.h"

#include <fmt/core.h>

#include <cmath>

#include "version.h"

namespace arch::agent {
namespace {

void family(std::string& out, const char* name, const char* type, const char* help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

void sample(std::string& out, const std::string& name, double value) {
  out += fmt::format("{} {}\n", name, format_sample_value(value));
}

void histogram(std::string& out, const char* name, const Histogram& h) {
  uint64_t cumulative = 0;
  for (std::size_t i = 0; i < h.bounds.size(); ++i) {
    cumulative += i < h.counts.size() ? h.counts[i] : 0;
    sample(out, fmt::format("{}_bucket{{le=\"{}\"}}", name, format_sample_value(h.bounds[i])),
           static_cast<double>(cumulative));
  }
  sample(out, fmt::format("{}_bucket{{le=\"+Inf\"}}", name), static_cast<double>(h.count));
  sample(out, fmt::format("{}_sum", name), h.sum);
  sample(out, fmt::format("{}_count", name), static_cast<double>(h.count));
}

uint64_t notices_of(const Counters& c, const std::string& kind) {
  auto it = c.notices.find(kind);
  return it == c.notices.end() ? 0 : it->second;
}

}  // namespace

void Histogram::observe(double value) {
  std::size_t i = 0;
  while (i < bounds.size() && value > bounds[i]) ++i;
  if (counts.size() < bounds.size() + 1) counts.resize(bounds.size() + 1);
  ++counts[i];
  sum += value;
  ++count;
}

std::string format_sample_value(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (value == std::floor(value) && std::fabs(value) < 1e15) {
    return fmt::format("{}", static_cast<long long>(value));
  }
  return fmt::format("{}", value);
}

std::string render_metrics(const MetricsSnapshot& s) {
  const Counters& c = s.counters;
  auto d = [](uint64_t v) { return static_cast<double>(v); };
  std::string out;
  family(out, "arch_checkpoints_total", "counter",
         "Container checkpoints made by archd (drains and notices), by outcome.");
  sample(out, "arch_checkpoints_total{outcome=\"ok\"}", d(c.checkpoints_ok));
  sample(out, "arch_checkpoints_total{outcome=\"failed\"}", d(c.checkpoints_failed));
  family(out, "arch_checkpoints_skipped_total", "counter",
         "Containers a drain skipped: not started before its deadline (or cancelled).");
  sample(out, "arch_checkpoints_skipped_total", d(c.checkpoints_skipped));
  family(out, "arch_restores_total", "counter",
         "Restores seen by archd: ok as recorded by arch-runc in the registry, failed from "
         "checkpoints moved aside (failed-* directories).");
  sample(out, "arch_restores_total{outcome=\"ok\"}", d(c.restores_ok));
  sample(out, "arch_restores_total{outcome=\"failed\"}", d(c.restores_failed));
  family(out, "arch_checkpoint_duration_seconds", "histogram",
         "Duration of the checkpoints archd made, freeze to commit and end.");
  histogram(out, "arch_checkpoint_duration_seconds", c.checkpoint_seconds);
  family(out, "arch_checkpoint_bytes_total", "counter",
         "Bytes committed to checkpoint stores by the checkpoints archd made.");
  sample(out, "arch_checkpoint_bytes_total", d(c.checkpoint_bytes));
  family(out, "arch_restore_duration_seconds", "histogram",
         "Duration of the restores seen, from the engine's create to the processes running.");
  histogram(out, "arch_restore_duration_seconds", c.restore_seconds);
  family(out, "arch_restore_bytes_total", "counter",
         "Bytes of the checkpoints read by the restores seen.");
  sample(out, "arch_restore_bytes_total", d(c.restore_bytes));
  family(out, "arch_managed_containers", "gauge", "ARCH-enabled containers recorded on this node.");
  sample(out, "arch_managed_containers", d(s.managed_containers));
  family(out, "arch_notices_total", "counter",
         "Drain triggers seen: spot reclaim notices, rebalance recommendations, manual drains.");
  for (const char* kind : {"spot", "rebalance", "manual"}) {
    sample(out, fmt::format("arch_notices_total{{kind=\"{}\"}}", kind), d(notices_of(c, kind)));
  }
  family(out, "arch_quarantined_checkpoints", "gauge",
         "Checkpoints moved aside (failed-* directories) in the node's checkpoint stores.");
  sample(out, "arch_quarantined_checkpoints", d(s.quarantined_checkpoints));
  family(out, "arch_build_info", "gauge", "1, labelled with the version and commit archd runs.");
  sample(out, fmt::format("arch_build_info{{version=\"{}\",commit=\"{}\"}}", kVersion, kGitCommit),
         1);
  family(out, "arch_node_draining", "gauge", "1 while the node is draining, else 0.");
  sample(out, "arch_node_draining", s.draining ? 1 : 0);
  return out;
}

}  // namespace arch::agent
