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

json operations_json(const std::map<std::string, OperationCounters>& by_source) {
  json out = json::object();
  for (const auto& [source, c] : by_source) {
    out[source] = {{"ok", c.ok},
                   {"failed", c.failed},
                   {"bytes", c.bytes},
                   {"seconds", histogram_json(c.seconds)}};
  }
  return out;
}

std::map<std::string, OperationCounters> operations_from(const json& j) {
  std::map<std::string, OperationCounters> out;
  if (!j.is_object()) return out;
  for (const auto& [source, v] : j.items()) {
    if (!v.is_object() || source.empty() || source.size() > 32) continue;
    OperationCounters c;
    c.ok = v.value("ok", uint64_t{0});
    c.failed = v.value("failed", uint64_t{0});
    c.bytes = v.value("bytes", uint64_t{0});
    c.seconds = histogram_from(v.value("seconds", json::object()));
    out[source] = c;
  }
  return out;
}

json counters_json(const Counters& c) {
  return {{"checkpoints", operations_json(c.checkpoints)},
          {"restores", operations_json(c.restores)},
          {"checkpoints_skipped", c.checkpoints_skipped},
          {"notices", c.notices},
          {"activity_invalid", c.activity_invalid}};
}

Counters counters_from(const json& j) {
  Counters c;
  if (!j.is_object()) return c;
  c.checkpoints = operations_from(j.value("checkpoints", json::object()));
  c.restores = operations_from(j.value("restores", json::object()));
  c.checkpoints_skipped = j.value("checkpoints_skipped", uint64_t{0});
  c.notices = j.value("notices", std::map<std::string, uint64_t>{});
  c.activity_invalid = j.value("activity_invalid", uint64_t{0});
  // Counters of an older archd (before `source`): its checkpoints were its drains', its
  // restores those arch-runc made on create.
  if (j.contains("checkpoints_ok") && !c.checkpoints.contains("drain")) {
    auto& d = c.checkpoints["drain"];
    d.ok = j.value("checkpoints_ok", uint64_t{0});
    d.failed = j.value("checkpoints_failed", uint64_t{0});
    d.bytes = j.value("checkpoint_bytes", uint64_t{0});
    d.seconds = histogram_from(j.value("checkpoint_seconds", json::object()));
  }
  if (j.contains("restores_ok") && !c.restores.contains("create")) {
    auto& r = c.restores["create"];
    r.ok = j.value("restores_ok", uint64_t{0});
    r.failed = j.value("restores_failed", uint64_t{0});
    r.bytes = j.value("restore_bytes", uint64_t{0});
    r.seconds = histogram_from(j.value("restore_seconds", json::object()));
  }
  return c;
}

// The cursor's head is raw bytes (perhaps not UTF-8): kept as hex.
std::string to_hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (char c : bytes) {
    auto b = static_cast<unsigned char>(c);
    out += kDigits[b >> 4];
    out += kDigits[b & 15];
  }
  return out;
}

std::string from_hex(std::string_view hex) {
  auto nibble = [](char c) -> int {
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= '0' && c <= '9') return c - '0';
    return -1;
  };
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    int hi = nibble(hex[i]), lo = nibble(hex[i + 1]);
    if (hi < 0 || lo < 0) return {};
    out += static_cast<char>(hi * 16 + lo);
  }
  return out;
}

json cursor_json(const ActivityCursor& c) {
  return {{"started", c.started},
          {"dev", c.dev},
          {"ino", c.ino},
          {"offset", c.offset},
          {"head", to_hex(c.head)}};
}

ActivityCursor cursor_from(const json& j) {
  ActivityCursor c;
  if (!j.is_object()) return c;
  c.started = j.value("started", false);
  c.dev = j.value("dev", uint64_t{0});
  c.ino = j.value("ino", uint64_t{0});
  c.offset = j.value("offset", uint64_t{0});
  c.head = from_hex(j.value("head", ""));
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
          {"seen_quarantined", s.seen_quarantined}, {"stores", s.stores},
          {"activity", cursor_json(s.activity)}};
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
    s.activity = cursor_from(j.value("activity", json::object()));
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
