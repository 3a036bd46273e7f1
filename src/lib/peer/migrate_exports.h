// MigrateExports: the source's page exports of live migrations (peer/migrate.h): which pages
// images of which committed generation one destination node may read, what it has read, and
// when post-copy is over. Kept in memory for pages.read and, once archd names its state dir,
// persisted there, so that an archd restarted during post-copy (an upgrade, a crash) serves
// the pages again and still cleans up once they have all moved:
//
//   <state dir>/migrate-exports/<export id>.json    the record (0600, replaced atomically)
//   <state dir>/migrate-exports/<export id>.served  "<pages image> <chunk>\n" per chunk the
//                                                   first time it is sent (appended after it)
//
// Both are read back as input, never trusted: a record is loaded only from a regular,
// root-only (our uid, mode 0600) file of at most kMaxExportRecordBytes, of a known format
// version, whose generation is <store>/<owner>/<key>/ckpt-* with `store` under one of the
// node's allowed roots and every directory from that root down to the generation reached
// without a symlink and root-only; its pages images must be plain names "pages-N.img".
// Anything else is ignored with a log line and serves nothing; a record whose generation is
// gone (removed by hand) is deleted.
//
// Post-copy is over (judge_post_copy) when every chunk has been sent once and no page server
// that read from the export is still connected (a page server keeps only a few chunks and
// may ask for one again while it runs). For an export reloaded after a restart the
// connections the restart cut say nothing, so it also takes a page server that read from it
// since the reload and hung up, or the idle limit of silence (a living page server that still
// needs a chunk asks again within its retry window, well under that limit). Silence past the
// idle limit with chunks never sent: incomplete, the generation is kept and still served.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"
#include "config/node_config.h"
#include "peer/group_peers.h"

namespace arch {

/// An export id: 32 lower-case hex digits.
bool is_export_id(const std::string& s);

/// The largest export record read back.
inline constexpr std::size_t kMaxExportRecordBytes = 1 << 20;
/// The most pages images one export may name.
inline constexpr std::size_t kMaxExportFiles = 4096;

/// What the source keeps of one export: enough to serve it and to clean up after it.
struct PageExportRecord {
  std::string id;          ///< 32 lower-case hex digits (the files' name).
  std::string peer;        ///< The only node that may read it.
  std::string checkpoint;  ///< The committed generation: <store>/<owner>/<key>/ckpt-*.
  std::map<std::string, uint64_t> files;  ///< Pages image name (in images/) → size.
  // The migrated container, whose generation and containerd record go once every page moved.
  std::string ns, container_id, key, owner;
  std::string store;       ///< Its store base (checkpoints in <store>/<owner>/<key>).
  std::string store_root;  ///< The allowed root `store` lies under.
  /// "containerd" or "docker": which engine's record of the container goes afterwards.
  std::string engine = "containerd";
  /// Chunks of kPagesChunkSize over every file.
  [[nodiscard]] uint64_t chunks_total() const;
};

/// The record as its file holds it (format version 1).
std::string export_record_json(const PageExportRecord& r);
/// A record file's text, checked as described above (everything but the file system).
Result<PageExportRecord> parse_export_record(std::string_view text, const NodeConfig& config);

/// What a source node serves of one export (for the post-copy wait, tests and reports).
struct PageExportProgress {
  uint64_t chunks_total = 0, chunks_served = 0, bytes_served = 0, requests = 0;
  double idle_ms = 0;                ///< Since the last request (or the registration/reload).
  std::size_t open_connections = 0;  ///< Connections that read from it, still open.
  bool reloaded = false;             ///< Loaded from its file by a restarted archd.
  bool read_since_load = false;      ///< A page server read from it since that reload.
  bool stopping = false;             ///< archd is stopping: nothing can be judged any more.
};

/// Where an export's post-copy stands.
enum class PostCopy {
  kRunning,     ///< Pages still moving (or may still be asked for).
  kComplete,    ///< Every page moved: the source's generation and container may go.
  kIncomplete,  ///< Idle past the limit with chunks never sent: kept and still served.
  kStopped,     ///< archd is stopping: the next archd takes the export over.
};

/// The judgement described above, with the idle limit in milliseconds.
PostCopy judge_post_copy(const PageExportProgress& p, double idle_limit_ms);
/// The idle limit: max(30 s, 3 × [peers] timeout), in milliseconds.
double post_copy_idle_limit_ms(const NodeConfig& config);

/// The registry (thread-safe). The process has one (page_exports()); tests make their own.
class PageExports {
 public:
  PageExports();
  ~PageExports();
  PageExports(const PageExports&) = delete;
  PageExports& operator=(const PageExports&) = delete;

  /// From now on exports are persisted under <state_dir>/migrate-exports (created 0700;
  /// it must be ours and not writable by others). Until then, in memory only.
  Result<void> persist_in(const std::string& state_dir);
  /// Registers `r` (persisting it first when persisting).
  Result<void> add(PageExportRecord r);
  /// Forgets the export: it serves nothing more, and its files are deleted.
  void remove(const std::string& id);
  [[nodiscard]] std::optional<PageExportRecord> record(const std::string& id);
  [[nodiscard]] std::optional<PageExportProgress> progress(const std::string& id);
  /// The ids of the exports loaded from files (reloaded after a restart), still registered.
  [[nodiscard]] std::vector<std::string> reloaded();

  /// The path a pages.read from `peer` may read, or why not: an export registered for it,
  /// a pages image of it, 1..kMaxBulkFrame bytes within the file. The same refusal for an
  /// unknown export and another node's: nothing about other exports leaks.
  Result<std::string> check(const std::string& id, const std::string& peer, const std::string& file,
                            uint64_t offset, uint64_t length);
  /// `length` bytes at `offset` of `file` were sent over `conn`.
  void served(const std::string& id, const std::string& file, uint64_t offset, uint64_t length,
              const void* conn);
  /// The connection `conn` ended (ignored while stopping: archd's own stop cut it).
  void closed(const void* conn);

  /// Loads every export file of the state dir given to persist_in() (call that first),
  /// skipping ones already registered; bad ones are ignored with a line to `log`. Returns
  /// how many were loaded.
  std::size_t load(const NodeConfig& config, const PeerLogger& log);
  /// archd is stopping: every judgement from now on is kStopped.
  void stop();

 private:
  struct Entry;
  Result<void> persist(const PageExportRecord& r);
  std::unique_ptr<Entry> load_one(int dirfd, const std::string& id, const NodeConfig& config,
                                  const PeerLogger& log);
  std::mutex mutex_;
  std::string dir_;  // "" : memory only
  std::map<std::string, std::unique_ptr<Entry>> exports_;
  bool stopping_ = false;
};

/// Polls `id` every 20 ms (calling `on_progress` each time) until its judgement is not
/// kRunning; an export no longer registered is kIncomplete.
PostCopy wait_post_copy(PageExports& exports, const std::string& id, double idle_limit_ms,
                        const std::function<void(const PageExportProgress&)>& on_progress);

/// The process's registry (the peer listener, the migrations and archd's watcher share it).
PageExports& page_exports();

}  // namespace arch
