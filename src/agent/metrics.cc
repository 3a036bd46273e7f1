// Metrics: rendering of the exposition format. Every family gets HELP and TYPE once, then
// its samples; label values here are fixed words, so no escaping is needed.
#include "metrics.h"

#include <fmt/core.h>

#include <algorithm>
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

// `labels`: "" or `source="x",` (with the trailing comma) put before le.
void histogram(std::string& out, const char* name, const std::string& labels, const Histogram& h) {
  uint64_t cumulative = 0;
  for (std::size_t i = 0; i < h.bounds.size(); ++i) {
    cumulative += i < h.counts.size() ? h.counts[i] : 0;
    sample(out,
           fmt::format("{}_bucket{{{}le=\"{}\"}}", name, labels, format_sample_value(h.bounds[i])),
           static_cast<double>(cumulative));
  }
  sample(out, fmt::format("{}_bucket{{{}le=\"+Inf\"}}", name, labels),
         static_cast<double>(h.count));
  std::string plain = labels.empty() ? "" : "{" + labels.substr(0, labels.size() - 1) + "}";
  sample(out, fmt::format("{}_sum{}", name, plain), h.sum);
  sample(out, fmt::format("{}_count{}", name, plain), static_cast<double>(h.count));
}

uint64_t notices_of(const Counters& c, const std::string& kind) {
  auto it = c.notices.find(kind);
  return it == c.notices.end() ? 0 : it->second;
}

// The families of one operation ("checkpoint"/"restore"), one series per known source
// (plus any other source counted, e.g. from an older state).
void operations(std::string& out, const char* what, const std::vector<std::string>& known,
                const std::map<std::string, OperationCounters>& by_source) {
  std::vector<std::string> sources = known;
  for (const auto& [source, _] : by_source) {
    if (std::find(sources.begin(), sources.end(), source) == sources.end())
      sources.push_back(source);
  }
  auto of = [&](const std::string& source) {
    auto it = by_source.find(source);
    return it == by_source.end() ? OperationCounters{} : it->second;
  };
  auto d = [](uint64_t v) { return static_cast<double>(v); };
  std::string total = fmt::format("arch_{}s_total", what);
  family(out, total.c_str(), "counter",
         fmt::format("{}s on this node, by who made them (source) and outcome.", what).c_str());
  for (const auto& src : sources) {
    auto c = of(src);
    sample(out, fmt::format("{}{{source=\"{}\",outcome=\"ok\"}}", total, src), d(c.ok));
    sample(out, fmt::format("{}{{source=\"{}\",outcome=\"failed\"}}", total, src), d(c.failed));
  }
  std::string seconds = fmt::format("arch_{}_duration_seconds", what);
  family(out, seconds.c_str(), "histogram",
         fmt::format("Duration of the {}s, by source.", what).c_str());
  for (const auto& src : sources) {
    histogram(out, seconds.c_str(), fmt::format("source=\"{}\",", src), of(src).seconds);
  }
  std::string bytes = fmt::format("arch_{}_bytes_total", what);
  family(out, bytes.c_str(), "counter",
         fmt::format("Bytes {} by the successful {}s, by source.",
                     std::string_view(what) == "checkpoint" ? "committed" : "read", what)
             .c_str());
  for (const auto& src : sources) {
    sample(out, fmt::format("{}{{source=\"{}\"}}", bytes, src), d(of(src).bytes));
  }
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

void OperationCounters::count(bool success, double seconds_taken, uint64_t bytes_moved) {
  if (success) {
    ++ok;
    bytes += bytes_moved;
  } else {
    ++failed;
  }
  seconds.observe(seconds_taken);
}

std::string escape_label_value(std::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string render_metrics(const MetricsSnapshot& s) {
  const Counters& c = s.counters;
  auto d = [](uint64_t v) { return static_cast<double>(v); };
  std::string out;
  operations(out, "checkpoint", kCheckpointSources, c.checkpoints);
  family(out, "arch_checkpoints_skipped_total", "counter",
         "Containers a drain skipped: not started before its deadline (or cancelled).");
  sample(out, "arch_checkpoints_skipped_total", d(c.checkpoints_skipped));
  operations(out, "restore", kRestoreSources, c.restores);
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
  family(out, "arch_newest_checkpoint_age_seconds", "gauge",
         "Age of each key's newest committed checkpoint in the node's stores (at most "
         "[agent] metrics_max_keys keys: this node's containers first, then the oldest).");
  for (const auto& k : s.key_ages) {
    sample(out,
           fmt::format("arch_newest_checkpoint_age_seconds{{owner=\"{}\",key=\"{}\"}}",
                       escape_label_value(k.owner), escape_label_value(k.key)),
           k.seconds);
  }
  family(out, "arch_checkpoint_keys", "gauge",
         "Keys with a committed checkpoint in the node's stores (exported or not).");
  sample(out, "arch_checkpoint_keys", d(s.keys));
  family(out, "arch_notice_watcher_enabled", "gauge",
         "1 when the reclaim-notice watcher runs ([agent] imds_endpoint set), else 0.");
  sample(out, "arch_notice_watcher_enabled", s.watcher.enabled ? 1 : 0);
  family(out, "arch_notice_watcher_last_success_timestamp_seconds", "gauge",
         "When the reclaim-notice watcher last polled successfully (0: not yet).");
  sample(out, "arch_notice_watcher_last_success_timestamp_seconds",
         static_cast<double>(s.watcher.last_success));
  family(out, "arch_notice_watcher_consecutive_errors", "gauge",
         "Failed polls of the reclaim-notice watcher since its last good one.");
  sample(out, "arch_notice_watcher_consecutive_errors", d(s.watcher.consecutive_errors));
  family(out, "arch_activity_invalid_records_total", "counter",
         "Lines of the node's activity log that were not records (skipped).");
  sample(out, "arch_activity_invalid_records_total", d(c.activity_invalid));
  return out;
}

}  // namespace arch::agent
