// MigrateExports: the source's page exports, in memory and in archd's state dir. See
// migrate_exports.h for the files and the post-copy judgement.
#include "peer/migrate_exports.h"

#include <fcntl.h>
#include <fmt/core.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/beneath.h"
#include "base/clock.h"
#include "base/file_util.h"
#include "base/names.h"
#include "managed/store_layout.h"
#include "peer/peer_tls.h"
#include "store/manifest.h"

namespace arch {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

constexpr int kRecordVersion = 1;
constexpr const char* kDirName = "migrate-exports";
constexpr std::string_view kRecordSuffix = ".json";
constexpr std::string_view kJournalSuffix = ".served";
// The largest pages image a record may name (a sanity bound, far above any container's).
constexpr uint64_t kMaxPagesImage = uint64_t{1} << 44;

// Absolute, no empty, "." or ".." component, no trailing slash, no control character.
bool clean_absolute(std::string_view p) {
  if (p.empty() || p.front() != '/' || p.size() > 4096) return false;
  if (p == "/") return true;
  if (p.back() == '/') return false;
  if (std::any_of(p.begin(), p.end(), [](char c) { return c >= 0 && c < 0x20; })) return false;
  for (std::size_t at = 1; at <= p.size();) {
    auto slash = p.find('/', at);
    if (slash == std::string_view::npos) slash = p.size();
    auto part = p.substr(at, slash - at);
    if (part.empty() || part == "." || part == "..") return false;
    at = slash + 1;
  }
  return true;
}

// A value from a record, quoted and escaped for a log line.
std::string printable(std::string_view s) {
  return json(std::string(s.substr(0, 200))).dump(-1, ' ', false, json::error_handler_t::replace);
}

bool is_pages_name(const std::string& name) {
  return is_pages_image_path("images/" + name);
}

uint64_t chunks_of(uint64_t size) {
  return (size + kPagesChunkSize - 1) / kPagesChunkSize;
}

// A file of the exports directory read back: regular, ours, root-only, at most `max` bytes.
Result<std::string> read_private_at(int dirfd, const std::string& name, std::size_t max) {
  int raw = ::openat(dirfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (raw < 0) return fail_errno("open " + name);
  UniqueFd fd(raw);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return fail_errno("stat " + name);
  if (!S_ISREG(st.st_mode)) return fail(ErrorKind::kPermission, name + " is not a regular file");
  if (st.st_uid != ::geteuid() || (st.st_mode & 077) != 0) {
    return fail(ErrorKind::kPermission, fmt::format("{} is not ours alone (uid {}, mode {:04o})",
                                                    name, st.st_uid, st.st_mode & 07777));
  }
  if (static_cast<uint64_t>(st.st_size) > max) {
    return fail(ErrorKind::kInvalidInput,
                fmt::format("{} is larger than {} bytes ({})", name, max, st.st_size));
  }
  return read_all(fd.get(), max);
}

// The generation's directory, reached from its allowed root without a symlink, every
// directory root-only; each pages image a regular file of its recorded size.
Result<void> check_generation(const PageExportRecord& r) {
  auto root = open_trusted_root(r.store_root);
  if (!root) return std::unexpected(root.error());
  auto dir =
      open_trusted_path(root->get(), relative_to_root(r.checkpoint, r.store_root), r.store_root);
  if (!dir) return std::unexpected(dir.error());
  auto images = open_dir_beneath(dir->get(), "images", r.checkpoint + "/images");
  if (!images) return std::unexpected(images.error());
  for (const auto& [name, size] : r.files) {
    struct stat st {};
    if (::fstatat(images->get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      return fail_errno("stat images/" + name);
    }
    if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) != size) {
      return fail(ErrorKind::kInvalidInput,
                  "images/" + name + " is not a regular file of its recorded size");
    }
  }
  return {};
}

}  // namespace

bool is_export_id(const std::string& s) {
  return s.size() == 32 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

uint64_t PageExportRecord::chunks_total() const {
  uint64_t n = 0;
  for (const auto& [name, size] : files) n += chunks_of(size);
  return n;
}

std::string export_record_json(const PageExportRecord& r) {
  return json{{"version", kRecordVersion},
              {"id", r.id},
              {"peer", r.peer},
              {"checkpoint", r.checkpoint},
              {"files", r.files},
              {"namespace", r.ns},
              {"container", r.container_id},
              {"key", r.key},
              {"owner", r.owner},
              {"store", r.store},
              {"store_root", r.store_root},
              {"engine", r.engine}}
      .dump();
}

Result<PageExportRecord> parse_export_record(std::string_view text, const NodeConfig& config) {
  auto bad = [](const std::string& why) {
    return fail(ErrorKind::kInvalidInput, "export record: " + why);
  };
  if (text.size() > kMaxExportRecordBytes) return bad("too large");
  auto j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
  PageExportRecord r;
  try {
    int version = j.at("version").get<int>();
    if (version != kRecordVersion) return bad(fmt::format("unknown version {}", version));
    r.id = j.at("id").get<std::string>();
    r.peer = j.at("peer").get<std::string>();
    r.checkpoint = j.at("checkpoint").get<std::string>();
    r.ns = j.at("namespace").get<std::string>();
    r.container_id = j.at("container").get<std::string>();
    r.key = j.at("key").get<std::string>();
    r.owner = j.at("owner").get<std::string>();
    r.store = j.at("store").get<std::string>();
    r.store_root = j.at("store_root").get<std::string>();
    r.engine = j.value("engine", std::string("containerd"));
    if (r.engine != "containerd" && r.engine != "docker") return bad("unknown engine");
    const auto& files = j.at("files");
    if (!files.is_object() || files.empty() || files.size() > kMaxExportFiles) {
      return bad("files: want 1 to " + std::to_string(kMaxExportFiles) + " pages images");
    }
    for (const auto& [name, size] : files.items()) {
      if (!is_pages_name(name)) return bad("files: " + printable(name) + " is not a pages image");
      if (!size.is_number_unsigned() || size.get<uint64_t>() == 0 ||
          size.get<uint64_t>() > kMaxPagesImage) {
        return bad("files: bad size of " + name);
      }
      r.files[name] = size.get<uint64_t>();
    }
  } catch (const json::exception& e) {
    return bad(e.what());
  }
  if (!is_export_id(r.id)) return bad("malformed id");
  if (auto ok = validate_node_name(r.peer); !ok) return bad(ok.error().message());
  if (auto ok = validate_name("namespace", r.ns); !ok) return bad(ok.error().message());
  if (auto ok = validate_name("container id", r.container_id); !ok) {
    return bad(ok.error().message());
  }
  if (auto ok = validate_name("key", r.key); !ok) return bad(ok.error().message());
  if (auto ok = validate_owner(r.owner); !ok) return bad(ok.error().message());
  auto roots = allowed_roots(config);
  if (std::none_of(roots.begin(), roots.end(),
                   [&](const StoreRoot& root) { return root.path == r.store_root; })) {
    return bad("store root " + printable(r.store_root) + " is not an allowed root of this node");
  }
  if (!clean_absolute(r.store) || !path_is_under(r.store, r.store_root)) {
    return bad("store " + printable(r.store) + " is not under its root");
  }
  std::string key_dir = (r.store == "/" ? "" : r.store) + "/" + r.owner + "/" + r.key + "/";
  std::string generation =
      r.checkpoint.starts_with(key_dir) ? r.checkpoint.substr(key_dir.size()) : std::string();
  if (!clean_absolute(r.checkpoint) || !generation.starts_with("ckpt-") ||
      generation.find('/') != std::string::npos || !validate_name("generation", generation)) {
    return bad("checkpoint " + printable(r.checkpoint) +
               " is not a generation of the container's store");
  }
  return r;
}

double post_copy_idle_limit_ms(const NodeConfig& config) {
  return std::max(30.0, 3.0 * config.peers.timeout_seconds) * 1000;
}

PostCopy judge_post_copy(const PageExportProgress& p, double idle_limit_ms) {
  if (p.stopping) return PostCopy::kStopped;
  bool idle = p.idle_ms > idle_limit_ms;
  // Every chunk sent once and no page server still connected (one may ask for a chunk
  // again: it keeps only a few). After a reload, the connections the restart cut do not
  // count as hung up: a page server must have read since and gone, or stayed silent.
  if (p.chunks_served >= p.chunks_total && p.open_connections == 0 &&
      (!p.reloaded || p.read_since_load || idle)) {
    return PostCopy::kComplete;
  }
  return idle ? PostCopy::kIncomplete : PostCopy::kRunning;
}

// ------------------------------------------------------------------ the registry

struct PageExports::Entry {
  PageExportRecord rec;
  uint64_t chunks_total = 0;
  std::set<std::pair<std::string, uint64_t>> served;  // (file, chunk index)
  uint64_t bytes_served = 0, requests = 0;
  Clock::time_point last = Clock::now();
  std::set<const void*> open;  // connections that read from it and are still open
  bool reloaded = false, read_since_load = false;
  UniqueFd journal;  // <id>.served, appended; none when in memory only
};

PageExports::PageExports() = default;
PageExports::~PageExports() = default;

Result<void> PageExports::persist_in(const std::string& state_dir) {
  std::string dir = state_dir + "/" + kDirName;
  for (const auto& d : {state_dir, dir}) {
    if (::mkdir(d.c_str(), 0700) != 0 && errno != EEXIST) return fail_errno("mkdir " + d);
  }
  auto fd = open_file(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!fd) return std::unexpected(fd.error());
  if (auto ok = check_trusted_dir(fd->get(), dir); !ok) return std::unexpected(ok.error());
  std::lock_guard held(mutex_);
  dir_ = dir;
  return {};
}

Result<void> PageExports::add(PageExportRecord r) {
  auto e = std::make_unique<Entry>();
  e->chunks_total = r.chunks_total();
  std::lock_guard held(mutex_);
  if (!dir_.empty()) {
    auto written = write_file_atomic(dir_ + "/" + r.id + std::string(kRecordSuffix),
                                     export_record_json(r), 0600);
    if (!written) return std::unexpected(written.error().wrap("persist the page export"));
    auto journal = open_file(dir_ + "/" + r.id + std::string(kJournalSuffix),
                             O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_NOFOLLOW, 0600);
    if (!journal) return std::unexpected(journal.error().wrap("persist the page export"));
    e->journal = std::move(*journal);
  }
  e->rec = std::move(r);
  exports_[e->rec.id] = std::move(e);
  return {};
}

void PageExports::remove(const std::string& id) {
  std::lock_guard held(mutex_);
  exports_.erase(id);
  if (dir_.empty() || !is_export_id(id)) return;
  for (auto suffix : {kRecordSuffix, kJournalSuffix}) {
    (void)::unlink((dir_ + "/" + id + std::string(suffix)).c_str());
  }
}

std::optional<PageExportRecord> PageExports::record(const std::string& id) {
  std::lock_guard held(mutex_);
  auto it = exports_.find(id);
  if (it == exports_.end()) return std::nullopt;
  return it->second->rec;
}

std::optional<PageExportProgress> PageExports::progress(const std::string& id) {
  std::lock_guard held(mutex_);
  auto it = exports_.find(id);
  if (it == exports_.end()) return std::nullopt;
  const Entry& e = *it->second;
  PageExportProgress p;
  p.chunks_total = e.chunks_total;
  p.chunks_served = e.served.size();
  p.bytes_served = e.bytes_served;
  p.requests = e.requests;
  p.idle_ms = ms_since(e.last);
  p.open_connections = e.open.size();
  p.reloaded = e.reloaded;
  p.read_since_load = e.read_since_load;
  p.stopping = stopping_;
  return p;
}

std::vector<std::string> PageExports::reloaded() {
  std::lock_guard held(mutex_);
  std::vector<std::string> ids;
  for (const auto& [id, e] : exports_) {
    if (e->reloaded) ids.push_back(id);
  }
  return ids;
}

Result<std::string> PageExports::check(const std::string& id, const std::string& peer,
                                       const std::string& file, uint64_t offset, uint64_t length) {
  std::lock_guard held(mutex_);
  auto it = exports_.find(id);
  // The same answer for "unknown" and "not yours": nothing about other exports leaks.
  if (it == exports_.end() || it->second->rec.peer != peer) {
    return fail(ErrorKind::kPermission, "no such page export for node " + peer);
  }
  const auto& files = it->second->rec.files;
  auto f = files.find(file);
  if (f == files.end()) return fail(ErrorKind::kPermission, "no such pages image");
  if (length == 0 || length > kMaxBulkFrame || offset > f->second || length > f->second - offset) {
    return fail(ErrorKind::kInvalidInput, "outside the pages image");
  }
  return it->second->rec.checkpoint + "/images/" + file;
}

void PageExports::served(const std::string& id, const std::string& file, uint64_t offset,
                         uint64_t length, const void* conn) {
  std::lock_guard held(mutex_);
  auto it = exports_.find(id);
  if (it == exports_.end() || length == 0) return;
  Entry& e = *it->second;
  e.open.insert(conn);
  std::string lines;
  for (uint64_t c = offset / kPagesChunkSize; c <= (offset + length - 1) / kPagesChunkSize; ++c) {
    if (e.served.insert({file, c}).second) lines += fmt::format("{} {}\n", file, c);
  }
  // Best effort: a journal that cannot be written only makes a reload more cautious.
  if (!lines.empty() && e.journal) (void)write_all(e.journal.get(), lines);
  e.bytes_served += length;
  e.requests += 1;
  e.last = Clock::now();
  if (e.reloaded) e.read_since_load = true;
}

void PageExports::closed(const void* conn) {
  std::lock_guard held(mutex_);
  if (stopping_) return;  // archd's own stop cut it: it says nothing about the page server
  for (auto& [id, e] : exports_) e->open.erase(conn);
}

void PageExports::stop() {
  std::lock_guard held(mutex_);
  stopping_ = true;
}

std::size_t PageExports::load(const NodeConfig& config, const PeerLogger& log) {
  std::string dir;
  {
    std::lock_guard held(mutex_);
    dir = dir_;
  }
  if (dir.empty()) return 0;
  auto warn = [&](const std::string& m) {
    if (log) log(LogLevel::kWarn, "migrate: page exports: " + m);
  };
  auto dirfd = open_file(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!dirfd) return warn(dirfd.error().message()), 0;
  if (auto ok = check_trusted_dir(dirfd->get(), dir); !ok) return warn(ok.error().message()), 0;
  auto names = list_directory(dirfd->get());
  if (!names) return warn(names.error().message()), 0;
  std::size_t loaded = 0;
  for (const auto& name : *names) {
    std::string stem = name.substr(0, name.rfind('.'));
    bool record = name.ends_with(kRecordSuffix) && is_export_id(stem);
    bool journal = name.ends_with(kJournalSuffix) && is_export_id(stem);
    if (journal) {
      // Read with its record; one without a record is left over: it goes.
      if (!std::binary_search(names->begin(), names->end(), stem + std::string(kRecordSuffix))) {
        (void)::unlinkat(dirfd->get(), name.c_str(), 0);
      }
      continue;
    }
    if (name.find(".tmp.") != std::string::npos) {
      (void)::unlinkat(dirfd->get(), name.c_str(), 0);  // an atomic write cut short
      continue;
    }
    if (!record) {
      warn(printable(name) + " ignored: not an export record");
      continue;
    }
    {
      std::lock_guard held(mutex_);
      if (exports_.contains(stem)) continue;
    }
    auto e = load_one(dirfd->get(), stem, config, log);
    if (!e) continue;
    if (log) {
      log(LogLevel::kInfo,
          fmt::format("migrate: page export {} of {}/{} for node {} served again ({} of {} "
                      "chunks sent before)",
                      stem, e->rec.ns, e->rec.container_id, e->rec.peer, e->served.size(),
                      e->chunks_total));
    }
    std::lock_guard held(mutex_);
    exports_[stem] = std::move(e);
    ++loaded;
  }
  return loaded;
}

std::unique_ptr<PageExports::Entry> PageExports::load_one(int dirfd, const std::string& id,
                                                          const NodeConfig& config,
                                                          const PeerLogger& log) {
  std::string name = id + std::string(kRecordSuffix);
  std::string journal_name = id + std::string(kJournalSuffix);
  auto ignore = [&](const std::string& why) -> std::unique_ptr<Entry> {
    if (log) log(LogLevel::kWarn, "migrate: page export " + name + " ignored: " + why);
    return nullptr;
  };
  auto text = read_private_at(dirfd, name, kMaxExportRecordBytes);
  if (!text) return ignore(text.error().message());
  auto r = parse_export_record(*text, config);
  if (!r) return ignore(r.error().message());
  if (r->id != id) return ignore("it names export " + r->id);
  if (auto ok = check_generation(*r); !ok) {
    if (ok.error().code() != ENOENT) return ignore(ok.error().message());
    // The generation was removed (by hand): nothing left to serve or clean up.
    (void)::unlinkat(dirfd, name.c_str(), 0);
    (void)::unlinkat(dirfd, journal_name.c_str(), 0);
    return ignore("its generation " + r->checkpoint + " is gone (record deleted)");
  }
  auto e = std::make_unique<Entry>();
  e->chunks_total = r->chunks_total();
  e->reloaded = true;
  e->rec = std::move(*r);
  // The chunks sent before: each line "<pages image> <chunk>" of a chunk of the record.
  auto lines = read_private_at(dirfd, journal_name, e->chunks_total * 64 + 4096);
  if (!lines && lines.error().code() != ENOENT) {
    if (log) {
      log(LogLevel::kWarn, "migrate: page export " + id + ": chunks sent before unknown (" +
                               lines.error().message() + ")");
    }
    (void)::unlinkat(dirfd, journal_name.c_str(), 0);
  }
  for (std::size_t at = 0; lines && at < lines->size();) {
    auto nl = lines->find('\n', at);
    if (nl == std::string::npos) break;  // a line cut short
    std::string_view line = std::string_view(*lines).substr(at, nl - at);
    at = nl + 1;
    auto space = line.find(' ');
    if (space == std::string_view::npos) continue;
    auto f = e->rec.files.find(std::string(line.substr(0, space)));
    auto digits = line.substr(space + 1);
    if (f == e->rec.files.end() || digits.empty() || digits.size() > 12 ||
        digits.find_first_not_of("0123456789") != std::string_view::npos) {
      continue;
    }
    uint64_t chunk = std::stoull(std::string(digits));
    if (chunk < chunks_of(f->second)) e->served.insert({f->first, chunk});
  }
  int raw = ::openat(dirfd, journal_name.c_str(),
                     O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (raw >= 0) e->journal = UniqueFd(raw);
  return e;
}

PostCopy wait_post_copy(PageExports& exports, const std::string& id, double idle_limit_ms,
                        const std::function<void(const PageExportProgress&)>& on_progress) {
  for (;;) {
    auto p = exports.progress(id);
    if (!p) return PostCopy::kIncomplete;
    if (on_progress) on_progress(*p);
    auto state = judge_post_copy(*p, idle_limit_ms);
    if (state != PostCopy::kRunning) return state;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

PageExports& page_exports() {
  static PageExports exports;
  return exports;
}

}  // namespace arch
