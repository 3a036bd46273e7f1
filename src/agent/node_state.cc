// NodeState: JSON mapping of archd's persistent state. Readers take missing fields as
// their defaults, so an older file (or one written by an older archd) loads.
#include "node_state.h"

#include "base/enum_names.h"
#include "base/file_util.h"
#include "private_dir.h"

namespace arch::agent {
namespace {

using nlohmann::json;

constexpr EnumNames<DrainKind, 3> kDrainKinds{{{{DrainKind::kManual, "manual"},
                                                {DrainKind::kNotice, "notice"},
                                                {DrainKind::kRebalance, "rebalance"}}}};

json histogram_json(const Histogram& h) {
  return {{"bounds", h.bounds}, {"counts", h.counts}, {"sum", h.sum}, {"count", h.count}};
}

Histogram histogram_from(const json& j) {
  Histogram h;
  if (!j.is_object()) return h;
  auto bounds = j.value("bounds", std::vector<double>{});
  auto counts = j.value("counts", std::vector<uint64_t>{});
  // Buckets written with other bounds cannot be mapped: keep only sum and count.
  if (bounds == h.bounds && counts.size() == h.counts.size()) h.counts = counts;
  h.sum = j.value("sum", 0.0);
  h.count = j.value("count", uint64_t{0});
  return h;
}

json counters_json(const Counters& c) {
  return {{"checkpoints_ok", c.checkpoints_ok},
          {"checkpoints_skipped", c.checkpoints_skipped},
          {"checkpoints_failed", c.checkpoints_failed},
          {"checkpoint_bytes", c.checkpoint_bytes},
          {"restores_ok", c.restores_ok},
          {"restores_failed", c.restores_failed},
          {"notices", c.notices},
          {"checkpoint_seconds", histogram_json(c.checkpoint_seconds)},
          {"restore_seconds", histogram_json(c.restore_seconds)},
          {"restore_bytes", c.restore_bytes}};
}

Counters counters_from(const json& j) {
  Counters c;
  if (!j.is_object()) return c;
  c.checkpoints_ok = j.value("checkpoints_ok", uint64_t{0});
  c.checkpoints_skipped = j.value("checkpoints_skipped", uint64_t{0});
  c.checkpoints_failed = j.value("checkpoints_failed", uint64_t{0});
  c.checkpoint_bytes = j.value("checkpoint_bytes", uint64_t{0});
  c.restores_ok = j.value("restores_ok", uint64_t{0});
  c.restores_failed = j.value("restores_failed", uint64_t{0});
  c.notices = j.value("notices", std::map<std::string, uint64_t>{});
  c.checkpoint_seconds = histogram_from(j.value("checkpoint_seconds", json::object()));
  c.restore_seconds = histogram_from(j.value("restore_seconds", json::object()));
  c.restore_bytes = j.value("restore_bytes", uint64_t{0});
  return c;
}

DrainRecord drain_from(const json& j) {
  DrainRecord d;
  d.id = j.value("id", int64_t{0});
  d.kind = parse_drain_kind(j.value("kind", "manual")).value_or(DrainKind::kManual);
  d.reason = j.value("reason", "");
  d.requested = j.value("requested", 0L);
  d.deadline_seconds = j.value("deadline_seconds", 0.0);
  d.state = j.value("state", "interrupted");
  d.finished = j.value("finished", 0L);
  d.resumed_from = j.value("resumed_from", int64_t{0});
  d.total = j.value("total", std::size_t{0});
  d.done = j.value("done", std::size_t{0});
  d.report = j.value("report", json::object());
  return d;
}

}  // namespace

std::string_view to_string(DrainKind kind) {
  return kDrainKinds.name(kind, "manual");
}

Result<DrainKind> parse_drain_kind(std::string_view text) {
  if (auto kind = kDrainKinds.parse(text)) return *kind;
  return fail(ErrorKind::kInvalidInput, "unknown drain kind '" + std::string(text) + "'");
}

DrainRecord* NodeState::find_drain(int64_t id) {
  for (auto& d : drains) {
    if (d.id == id) return &d;
  }
  return nullptr;
}

DrainRecord& NodeState::add_drain(DrainRecord drain) {
  drains.push_back(std::move(drain));
  while (drains.size() > kMaxDrains) drains.erase(drains.begin());
  return drains.back();
}

json drain_json(const DrainRecord& d) {
  return {{"id", d.id},
          {"kind", to_string(d.kind)},
          {"reason", d.reason},
          {"requested", d.requested},
          {"deadline_seconds", d.deadline_seconds},
          {"state", d.state},
          {"finished", d.finished},
          {"resumed_from", d.resumed_from},
          {"total", d.total},
          {"done", d.done},
          {"report", d.report}};
}

json state_json(const NodeState& s) {
  json drains = json::array();
  for (const auto& d : s.drains) drains.push_back(drain_json(d));
  json notice = nullptr;
  if (s.last_notice) {
    notice = {{"kind", s.last_notice->kind},
              {"action", s.last_notice->action},
              {"time", s.last_notice->time_text},
              {"seen", s.last_notice->seen}};
  }
  return {{"version", kStateFormatVersion},         {"draining", s.draining},
          {"drain_kind", to_string(s.drain_kind)},  {"drain_reason", s.drain_reason},
          {"draining_since", s.draining_since},     {"last_notice", notice},
          {"next_drain_id", s.next_drain_id},       {"drains", drains},
          {"counters", counters_json(s.counters)},  {"seen_restores", s.seen_restores},
          {"seen_quarantined", s.seen_quarantined}, {"stores", s.stores}};
}

Result<NodeState> parse_node_state(std::string_view text) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return fail("state: not a JSON object");
  try {
    int version = j.value("version", 0);
    if (version > kStateFormatVersion) {
      return fail("state: format version " + std::to_string(version) + " is newer than " +
                  std::to_string(kStateFormatVersion) + " (written by a newer archd)");
    }
    NodeState s;
    s.draining = j.value("draining", false);
    s.drain_kind = parse_drain_kind(j.value("drain_kind", "manual")).value_or(DrainKind::kManual);
    s.drain_reason = j.value("drain_reason", "");
    s.draining_since = j.value("draining_since", 0L);
    if (auto n = j.find("last_notice"); n != j.end() && n->is_object()) {
      s.last_notice = NoticeRecord{n->value("kind", ""), n->value("action", ""),
                                   n->value("time", ""), n->value("seen", 0L)};
    }
    s.next_drain_id = j.value("next_drain_id", int64_t{1});
    for (const auto& d : j.value("drains", json::array())) s.add_drain(drain_from(d));
    s.counters = counters_from(j.value("counters", json::object()));
    s.seen_restores = j.value("seen_restores", std::vector<std::string>{});
    s.seen_quarantined = j.value("seen_quarantined", std::vector<std::string>{});
    s.stores = j.value("stores", std::vector<std::string>{});
    return s;
  } catch (const json::exception& e) {
    return fail(std::string("state: ") + e.what());
  }
}

Result<NodeState> load_node_state(const std::string& path) {
  auto text = read_file(path);
  if (!text) {
    if (text.error().code() == ENOENT) return NodeState{};
    return std::unexpected(text.error().wrap("read " + path));
  }
  auto state = parse_node_state(*text);
  if (!state) return std::unexpected(state.error().wrap(path));
  return state;
}

Result<void> save_node_state(const std::string& path, const NodeState& state) {
  std::string dir = dirname_of(path);
  if (auto made = make_private_dirs(dir); !made) return made;
  auto written = write_file_atomic(path, state_json(state).dump(2) + "\n", 0600);
  if (!written) return std::unexpected(written.error().wrap("write " + path));
  return {};
}

}  // namespace arch::agent
