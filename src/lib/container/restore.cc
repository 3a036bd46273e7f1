// Restore: sealed and verified checkpoint → spec binding → rootfs diff → runc restore →
// credentials of the restored tasks, with the failure policy's bookkeeping (move aside with
// reason, rootfs put back).
#include "container/restore.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <linux/magic.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <chrono>
#include <optional>

#include "base/clock.h"
#include "base/file_util.h"
#include "base/host.h"
#include "container/container_network.h"
#include "container/group_checkpoint.h"
#include "container/migrated_pages.h"
#include "container/restore_barrier.h"
#include "container/rootfs_diff.h"
#include "container/tcp_policy.h"
#include "container/workdir_capture.h"
#include "criu/file_locks.h"
#include "criu/lazy_pages.h"
#include "criu/pages_at_rest.h"
#include "managed/activity_log.h"
#include "managed/shared_mode.h"
#include "managed/store_layout.h"
#include "runtime/oci_spec.h"
#include "runtime/runc_client.h"
#include "runtime/spec_digest.h"
#include "store/checkpoint_store.h"

namespace arch {
std::vector<std::string> restore_flags_from_create(const RuncCommandLine& create,
                                                   const std::string& bundle) {
  std::vector<std::string> flags = {"--bundle", bundle};
  if (auto pid = create.flag("pid-file"))
    flags.insert(flags.end(), {"--pid-file", std::string(*pid)});
  if (auto sock = create.flag("console-socket")) {
    flags.insert(flags.end(), {"--console-socket", std::string(*sock)});
  }
  if (create.flag_set("no-pivot")) flags.push_back("--no-pivot");
  return flags;
}

// The manifest's counts of its rootfs diff (extra.rootfs_diff.bytes / .entries, written
// at capture) within the node's caps; a manifest without them gets the caps alone.
ExpansionLimits rootfs_diff_limits(const Manifest& m, const NodeConfig& config) {
  ExpansionLimits node{config.limits.max_rootfs_bytes, config.limits.max_entries};
  ExpansionLimits recorded;
  auto diff = m.extra.is_object() ? m.extra.find("rootfs_diff") : m.extra.end();
  if (m.extra.is_object() && diff != m.extra.end() && diff->is_object()) {
    auto number = [&](const char* key, uint64_t& out) {
      auto it = diff->find(key);
      if (it != diff->end() && it->is_number_unsigned()) out = it->get<uint64_t>();
    };
    number("bytes", recorded.bytes);
    number("entries", recorded.entries);
  }
  return node.min(recorded);
}

Result<void> tenant_criu_config(const std::string& bundle) {
  auto text = read_file(bundle + "/config.json");
  if (!text) return std::unexpected(text.error().wrap("read the spec"));
  auto own = criu_config_from_spec(*text);
  if (!own) return std::unexpected(own.error().wrap(bundle + "/config.json"));
  if (own->empty()) return {};
  return fail(ErrorKind::kPermission,
              fmt::format("the container's spec sets the annotation {} ({}): a container may "
                          "not choose CRIU's options; remove the annotation",
                          kCriuConfigAnnotation, own->substr(0, 200)));
}

namespace {

// Every task of the restored container against what its spec grants: CRIU restores
// credentials from the images, so a checkpoint must not bring back more than the spec gives.
Result<void> check_restored_credentials(const RuncClient& runc, const ContainerRecord& rec) {
  auto text = read_file(rec.bundle + "/config.json");
  if (!text) return std::unexpected(text.error().wrap("read the spec"));
  auto spec = spec_credentials(*text);
  if (!spec) return std::unexpected(spec.error());
  auto pids = runc.pids(rec.id);
  if (!pids) return std::unexpected(pids.error());
  std::vector<std::string> excess;
  for (int pid : *pids) {
    std::string task_dir = "/proc/" + std::to_string(pid) + "/task";
    auto dir = open_file(task_dir, O_RDONLY | O_DIRECTORY);
    if (!dir) continue;  // exited meanwhile
    auto tids = list_directory(dir->get());
    if (!tids) continue;
    for (const auto& tid : *tids) {
      auto status = read_file(task_dir + "/" + tid + "/status", 1 << 16);
      if (!status) continue;
      for (const auto& e : credential_excess(*status, *spec)) {
        excess.push_back(fmt::format("task {}: {}", tid, e));
      }
    }
  }
  if (excess.empty()) return {};
  std::string why = "restored tasks hold more than the spec grants:";
  for (std::size_t i = 0; i < excess.size() && i < 8; ++i) why += " " + excess[i] + ";";
  return fail(why);
}

// The network a restore gives the container: the namespace fd runc hands on to CRIU (when
// ARCH makes or opens it), the CRIU config lines, the runc flags, and the record the
// check after the restore compares against (none for a checkpoint from before it).
struct RestoreNetwork {
  std::optional<NetworkRecord> record;
  UniqueFd netns;
  std::vector<std::string> criu_lines;
  std::vector<std::string> flags;
  std::string note;
};

std::vector<TcpEndpoint> dumped_connections(const Manifest& m) {
  std::vector<TcpEndpoint> out;
  if (!m.extra.is_object() || !m.extra.contains("tcp")) return out;
  const auto& tcp = m.extra["tcp"];
  if (!tcp.is_object() || !tcp.value("dumped", false)) return out;
  auto list = tcp.find("connections");
  if (list == tcp.end() || !list->is_array()) return out;
  for (const auto& c : *list) {
    if (c.is_object()) out.push_back({c.value("local", ""), c.value("remote", "")});
  }
  return out;
}

// The network namespace the new container's spec joins by path (a pod sandbox's), opened
// once before any generation is tried: a path that is not a network namespace is the new
// container's fault, so the checkpoint is kept, not moved aside. The fd is what the
// restore uses (never the path again: it could be swapped). Empty fd: the spec names none.
struct JoinedNetns {
  std::string path;
  UniqueFd fd;
};

Result<JoinedNetns> open_joined_network_namespace(const std::string& bundle) {
  auto spec = spec_network_namespace(bundle);
  if (!spec) return std::unexpected(spec.error());
  JoinedNetns out;
  if (spec->path.empty()) return out;
  // The spec's path (also /proc/<pid>/ns/net, a link): never blocks on a FIFO, and must be
  // a network namespace file before root enters it.
  auto fd = open_file(spec->path, O_RDONLY | O_NONBLOCK);
  if (!fd) return std::unexpected(fd.error().wrap("open the new network namespace"));
  struct statfs fs {};
  if (::fstatfs(fd->get(), &fs) != 0 || fs.f_type != NSFS_MAGIC ||
      ::ioctl(fd->get(), NS_GET_NSTYPE) != CLONE_NEWNET) {
    return fail(ErrorKind::kPermission,
                "the spec's network namespace " + spec->path + " is not a network namespace file");
  }
  out.path = spec->path;
  out.fd = std::move(*fd);
  return out;
}

Result<RestoreNetwork> prepare_network(const Manifest& m, const JoinedNetns& joined,
                                       TcpPolicy policy) {
  RestoreNetwork out;
  if (!m.extra.is_object() || !m.extra.contains("network")) return out;  // older checkpoint
  auto record = network_record_from_json(m.extra["network"]);
  if (!record) return std::unexpected(record.error());
  std::vector<std::string> addresses;
  if (record->mode != "host") {
    if (joined.fd) {
      // The new container joins a namespace (a pod sandbox): the processes go there.
      auto have = namespace_addresses(joined.fd.get());
      if (!have) return std::unexpected(have.error());
      addresses = std::move(*have);
      // runc hands the spec's namespace to CRIU itself under its own key.
      if (record->criu_key != kRuncNetnsKey) {
        int dup = ::fcntl(joined.fd.get(), F_DUPFD_CLOEXEC, 0);
        if (dup < 0) return fail_errno("dup the new network namespace");
        out.netns = UniqueFd(dup);
      }
      out.note = "network: joined " + joined.path;
    } else {
      auto fd = make_network_namespace(*record);
      if (!fd) return std::unexpected(fd.error().wrap("remake the network namespace"));
      auto have = namespace_addresses(fd->get());
      if (!have) return std::unexpected(have.error());
      addresses = std::move(*have);
      out.netns = std::move(*fd);
      out.note = "network: own namespace remade";
    }
    if (out.netns) {
      out.criu_lines.push_back(
          fmt::format("inherit-fd fd[{}]:{}", kInheritedNetnsFd, record->criu_key));
    }
  }
  auto conns = dumped_connections(m);
  if (!conns.empty()) {
    auto decision = decide_tcp(policy == TcpPolicy::kFail ? TcpPolicy::kAuto : policy, conns,
                               m.node == host_name(), addresses);
    if (decision.restore) {
      out.flags.push_back("--tcp-established");
      // The lock the dump left on the connections is lifted by the same method (CRIU's
      // default is iptables; only this fixed line is ever written).
      const auto& tcp = m.extra["tcp"];
      if (tcp.is_object() && tcp.value("lock", "") == "nftables") {
        out.criu_lines.push_back("network-lock nftables");
      }
    } else {
      out.criu_lines.push_back("tcp-close");  // runc 1.1 has no --tcp-close
    }
    out.note +=
        fmt::format("{}{} TCP connection(s) {}: {}", out.note.empty() ? "" : "; ", conns.size(),
                    decision.restore ? "restored" : "closed", decision.reason);
  }
  out.record = std::move(*record);
  return out;
}

// The CRIU config file of a restore (in its work dir, kept with its log); empty: none.
Result<std::string> write_restore_criu_config(const std::string& work,
                                              const std::vector<std::string>& lines) {
  if (lines.empty()) return std::string();
  std::string text;
  for (const auto& l : lines) text += l + "\n";
  std::string path = work + "/arch-criu-restore.conf";
  auto fd = open_file(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (!fd) return std::unexpected(fd.error());
  if (auto ok = write_all(fd->get(), text); !ok) return std::unexpected(ok.error());
  return path;
}

// After the restore: every interface that was up at the checkpoint is up again.
Result<void> check_restored_network(const RuncClient& runc, const ContainerRecord& rec,
                                    const NetworkRecord& record) {
  auto state = runc.state(rec.id);
  if (!state) return std::unexpected(state.error());
  auto missing = missing_interfaces(record, state->pid);
  if (!missing) return std::unexpected(missing.error().wrap("check the restored network"));
  if (missing->empty()) return {};
  std::string names;
  for (const auto& n : *missing) names += (names.empty() ? "" : ", ") + n;
  return fail(
      "the restored network namespace lacks interfaces that were up at the "
      "checkpoint: " +
      names);
}

// Every file lock recorded at the dump (the manifest's extra.file_locks) must be held again
// by the restored tasks: CRIU restores locks in its file-locks mode, and one it failed to
// take would leave the program believing it holds a lock it does not.
Result<void> check_restored_locks(const RuncClient& runc, const ContainerRecord& rec,
                                  const Manifest& m) {
  auto it = m.extra.is_object() ? m.extra.find("file_locks") : m.extra.end();
  if (!m.extra.is_object() || it == m.extra.end()) return {};  // older checkpoint
  auto recorded = locks_from_json(*it);
  if (!recorded) return std::unexpected(recorded.error().wrap("manifest"));
  if (recorded->empty()) return {};
  auto pids = runc.pids(rec.id);
  if (!pids) return std::unexpected(pids.error());
  auto missing = missing_locks(*recorded, locks_held_by(*pids));
  if (missing.empty()) return {};
  std::string why = fmt::format(
      "{} of {} file locks held at the checkpoint are not held by "
      "the restored tasks:",
      missing.size(), recorded->size());
  for (std::size_t i = 0; i < missing.size() && i < 8; ++i) why += " " + describe(missing[i]) + ";";
  return fail(why);
}

// One attempt: this checkpoint's rootfs diff into the new rootfs, then runc restore.
// `touched_rootfs` says whether the rootfs may have changed (so it must be put back).
// `pages_deferred`: the pages images were checked by size only (VerifyScope::kDeferChunked):
// a lazy restore serves them through ARCH's page server, chunk by chunk verified.
Result<RestoreMode> restore_from(const CommittedCheckpoint& ckpt, const RuncCommandLine& create,
                                 const ContainerRecord& rec, const NodeConfig& config,
                                 const std::string& runc_path, const std::string& rootfs,
                                 TcpPolicy tcp_policy, const JoinedNetns& joined,
                                 std::string* network_note, bool* touched_rootfs,
                                 bool pages_deferred = false, RestoreBarrier* barrier = nullptr,
                                 const std::optional<MigrationOrigin>& origin = std::nullopt) {
  if (origin && !pages_deferred) {
    return fail("a migrated checkpoint without chunk digests for its pages cannot be restored");
  }
  auto tar = open_file(ckpt.path + "/rootfs-diff.tar", O_RDONLY);
  if (!tar) return std::unexpected(tar.error());
  *touched_rootfs = true;
  if (auto applied =
          apply_rootfs_diff(tar->get(), rootfs, rootfs_diff_limits(ckpt.manifest, config));
      !applied) {
    return std::unexpected(applied.error().wrap("apply rootfs diff"));
  }
  std::string work = rec.bundle + "/arch-restore";
  if (::mkdir(work.c_str(), 0700) != 0 && errno != EEXIST) return fail_errno("mkdir " + work);
  RuncClient runc(runc_path, rec.runc_root, config.criu);
  auto net = prepare_network(ckpt.manifest, joined, tcp_policy);
  if (!net) return std::unexpected(net.error());
  if (barrier != nullptr) {
    net->criu_lines.push_back(RestoreBarrier::criu_line());
    if (std::find(net->flags.begin(), net->flags.end(), "--tcp-established") != net->flags.end()) {
      std::vector<std::pair<std::string, std::string>> conns;
      for (const auto& c : dumped_connections(ckpt.manifest)) conns.emplace_back(c.local, c.remote);
      barrier->hold(conns);
    }
  }
  auto criu_conf = write_restore_criu_config(work, net->criu_lines);
  if (!criu_conf) return std::unexpected(criu_conf.error());
  runc.set_restore_criu(*criu_conf, net->netns ? net->netns.get() : -1,
                        net->netns ? kInheritedNetnsFd : -1);
  *network_note = net->note;
  auto flags = restore_flags_from_create(create, rec.bundle);
  flags.insert(flags.end(), net->flags.begin(), net->flags.end());
  flags.push_back("--file-locks");  // the dump took them (checked below)
  ServedPages served;
  // Pages encrypted at rest (criu/pages_at_rest.h): only ARCH's page server reads them,
  // decrypted and verified chunk by chunk in memory, whatever [restore] lazy_pages says.
  bool encrypted = has_encrypted_pages(ckpt.manifest);
  if (origin && encrypted) return fail("migrating pages encrypted at rest is not supported yet");
  if (pages_deferred || encrypted) {
    served.checkpoint = ckpt.path;
    served.manifest = &ckpt.manifest;
    served.on_refusal = [state_dir = config.state_dir, keep = config.keep, rec,
                         path = ckpt.path](const std::string& why) {
      // The generation goes aside (kept for investigation), else the orchestrator's next
      // start of the container would restore it again and be killed on the same chunk. A
      // restore still under way holds the key's lock and moves it aside itself when it fails.
      std::string fate;
      CheckpointStore store(rec.store, keep, rec.store_root);
      auto lock = store.lock(rec.owner, rec.key, std::chrono::seconds(5));
      if (!lock) {
        fate = "the checkpoint was not moved aside (" + lock.error().message() + ")";
      } else if (auto moved = store.move_aside(path, why, *lock); !moved) {
        fate = moved.error().code() == ENOENT
                   ? "the checkpoint was already moved aside"
                   : "the checkpoint could not be moved aside (" + moved.error().message() + ")";
      } else {
        fate = "the checkpoint " + path + " was moved aside";
      }
      (void)append_activity(state_dir, {.what = "restore",
                                        .source = "create",
                                        .outcome = "failed",
                                        .ns = rec.ns,
                                        .id = rec.id,
                                        .key = rec.key,
                                        .detail = why + "; " + fate});
    };
    served.verify_pages = [&ckpt] { return verify_manifest(ckpt.path, ckpt.manifest); };
    if (origin) {
      // A migrated checkpoint (container/migrated_pages.h): its pages are on the source
      // node, fetched chunk by chunk; there is no plain restore to fall back to.
      const auto& dialer = remote_pages_dialer();
      if (!dialer) return fail("a migrated checkpoint's pages need arch-runc-helper's dialer");
      served.page_source = [config, o = *origin, dialer](const std::string& name) {
        return dialer(config, o, name);
      };
      served.verify_pages = [o = *origin] {
        return fail("its pages are on node " + o.node + " (post-copy only)");
      };
    }
  }
  std::optional<Manifest> plain_view;
  if (encrypted) {
    auto view = served_manifest(ckpt.manifest);
    if (!view) return std::unexpected(view.error());
    plain_view.emplace(std::move(*view));
    served.manifest = &*plain_view;
    served.page_source =
        encrypted_page_source(ckpt.path, ckpt.manifest, shared_node_keyring(config));
    served.verify_pages = []() -> Result<void> {
      return fail(
          "its pages are encrypted at rest: only a lazy restore through ARCH's page "
          "server can read them");
    };
    pages_deferred = true;
  }
  auto restored = restore_maybe_lazily(
      runc, config.criu, rec.id, ckpt.path + "/images", work, flags, std::string(create.log),
      origin.has_value() || encrypted || lazy_restore_wanted(config, rec.bundle),
      pages_deferred ? &served : nullptr);
  if (barrier != nullptr) {
    // Restored and stopped: every member's tasks continue together (restore_barrier.h).
    if (restored) {
      auto pids = runc.pids(rec.id);
      auto released = barrier->release(pids ? *pids : std::vector<int>{},
                                       config.restore_group_member_failure_stops);
      std::string note = released.note;
      if (!pids) note += "; its processes could not be listed: " + pids.error().message();
      net->note += (net->note.empty() ? "" : "; ") + note;
      *network_note = net->note;
      if (!released.failed_member.empty() && config.restore_group_member_failure_stops) {
        restored = fail(fmt::format(
            "member {} of the group failed to restore: this member's restored tasks are "
            "killed before they ran, so that the whole group restarts together ([restore] "
            "group_member_failure = stop)",
            released.failed_member));
      }
    } else {
      barrier->failed();
    }
  }
  if (restored) {
    if (auto creds = check_restored_credentials(runc, rec); !creds) {
      restored = std::unexpected(creds.error().wrap("refused after restore (tasks killed)"));
    } else if (auto locks = check_restored_locks(runc, rec, ckpt.manifest); !locks) {
      restored = std::unexpected(locks.error().wrap("refused after restore (tasks killed)"));
    }
  }
  if (restored && net->record) {
    if (auto up = check_restored_network(runc, rec, *net->record); !up) {
      restored = std::unexpected(up.error().wrap("refused after restore (tasks killed)"));
    }
  }
  if (!restored) {
    // runc may have left a half-made container behind (or a restored one whose
    // credentials are refused: delete --force kills its tasks); the next attempt (or the
    // fresh create) needs the id.
    std::vector<std::string> del = {runc_path, "--root",  rec.runc_root,
                                    "delete",  "--force", rec.id};
    (void)run_process(del);
    return std::unexpected(restored.error());
  }
  return restored;
}

// Shared mode's work directory as it was at this checkpoint (workdir_capture.h), through
// its root-only bind; before the checkpoint's other files are touched. A failure fails this
// generation like any other restore failure. Returns the note ("" when nothing was done).
Result<std::string> put_back_workdir_for(const CommittedCheckpoint& ckpt,
                                         const ContainerRecord& rec, const NodeConfig& config) {
  auto it = ckpt.manifest.extra.is_object() ? ckpt.manifest.extra.find("workdir")
                                            : ckpt.manifest.extra.end();
  if (rec.workdir.empty() || !ckpt.manifest.extra.is_object() || it == ckpt.manifest.extra.end() ||
      !it->is_object() || !it->value("captured", false)) {
    return std::string();
  }
  auto tar = open_file(ckpt.path + "/" + kWorkdirFile, O_RDONLY | O_NOFOLLOW);
  if (!tar) return std::unexpected(tar.error().wrap("the work directory's capture"));
  return put_back_workdir(workdir_mount_path(config.state_dir, rec.runc_root, rec.id), *it,
                          tar->get(), {config.limits.max_rootfs_bytes, config.limits.max_entries});
}

// Whether the newest committed generation of the key is a migrated one (its seal checked,
// its files not).
bool newest_is_migrated(const CheckpointStore& store, const ContainerRecord& rec) {
  auto names = store.committed_names(rec.owner, rec.key);
  if (!names || names->empty()) return false;
  auto m = store.read_verified(rec.owner, rec.key, names->front(), /*check_files=*/false);
  if (!m) return false;
  auto origin = migration_origin(*m);
  return origin && origin->has_value();
}

// At most this many generations are tried for one create (each failure moves one aside).
constexpr int kMaxRestoreAttempts = 8;

// The group a restore must go through: the container's ARCH_GROUP, else the group its newest
// sealed generation names (a member's generation is never restored on its own). "": none.
Result<std::string> restore_group(const CheckpointStore& store, const ContainerRecord& rec) {
  auto group = container_group(rec);
  if (!group || !group->empty()) return group;
  auto names = store.committed_names(rec.owner, rec.key);
  if (!names || names->empty()) return std::string();
  auto m = store.read_verified(rec.owner, rec.key, names->front(), /*check_files=*/false);
  return m ? manifest_group(*m) : std::string();
}

// A member whose established connections must be restored (ARCH_TCP=restore) in the node's
// own network (host mode): "" when every connection's local address is on this node, else
// why not. CRIU would fail to bind them, and the failed restore would move the group's
// generation aside; refused before, the checkpoint is kept (restore it where it was, or
// with ARCH_TCP=auto its connections are closed).
std::string tcp_addresses_missing_here(const Manifest& m, TcpPolicy policy) {
  if (policy != TcpPolicy::kRestore || !m.extra.is_object() || !m.extra.contains("network")) {
    return {};
  }
  auto record = network_record_from_json(m.extra["network"]);
  if (!record || record->mode != "host") return {};
  auto conns = dumped_connections(m);
  if (conns.empty()) return {};
  auto self = open_file("/proc/self/ns/net", O_RDONLY);
  if (!self) return {};
  auto have = namespace_addresses(self->get());
  if (!have) return {};
  for (const auto& c : conns) {
    std::string ip = c.local_ip();
    if (ip.starts_with("::ffff:")) ip = ip.substr(7);
    if (is_loopback_ip(ip) || std::find(have->begin(), have->end(), ip) != have->end() ||
        std::find(have->begin(), have->end(), c.local_ip()) != have->end()) {
      continue;
    }
    return fmt::format(
        "its TCP connection {} -> {} cannot be restored on this node: address {} "
        "is not here (ARCH_TCP=restore; restore the member on the node it was "
        "checkpointed on ({}), or set ARCH_TCP=auto to close its connections)",
        c.local, c.remote, ip, m.node);
  }
  return {};
}

// Whether the record's members were checkpointed on more than one node.
bool record_spans_nodes(const GroupRecord& record) {
  for (const auto& m : record.members) {
    if (m.node != record.members.front().node) return true;
  }
  return false;
}

// A group member: only from the newest complete generation of its group, once every member
// of it is being created; one attempt (its peers restore from that same generation).
Result<RestoreOutcome> restore_group_member(const CheckpointStore& store, const KeyLock& lock,
                                            const std::string& group, const RuncCommandLine& create,
                                            const ContainerRecord& rec, const NodeConfig& config,
                                            const std::string& runc_path, const SpecDigest& spec,
                                            TcpPolicy tcp_policy, const JoinedNetns& joined,
                                            const std::string& rootfs, bool* rootfs_clean,
                                            std::chrono::steady_clock::time_point start) {
  std::vector<std::string> skipped;
  auto choice = choose_group_generation(store, rec, group, &skipped);
  if (!choice) return std::unexpected(choice.error().wrap("no usable checkpoint"));
  const auto& ckpt = choice->checkpoint;
  if (ckpt.manifest.spec.digest != spec.digest) {
    return fail("the new container's spec differs from the checkpoint's (checkpoint " + ckpt.path +
                " kept, not restored)");
  }
  if (auto why = tcp_addresses_missing_here(ckpt.manifest, tcp_policy); !why.empty()) {
    return fail(why + " (checkpoint kept, not restored)");
  }
  // A pod group's members are created by the kubelet one after another (each create and
  // start returns before the next create): the first cannot wait for the second. They
  // restore from the same generation, each as the kubelet reaches it.
  if (is_pod_group(group)) {
    // ... but only while the pod is being re-created, never one member restarted alone.
    if (auto why =
            pod_member_restore_refusal(config, choice->record, rec.key,
                                       std::chrono::seconds(config.restore_group_wait_seconds));
        !why.empty()) {
      return fail(why + " (checkpoint kept, not restored)");
    }
  } else if (record_spans_nodes(choice->record)) {
    // Across nodes: every member, on whichever node it is re-created (the shared store's
    // markers, restore_barrier.h), so members may come back swapped or all on one node.
    auto waited = RestoreBarrier::wait_for_creation(
        choice->record, rec.key, std::chrono::seconds(config.restore_group_wait_seconds));
    if (!waited) return std::unexpected(waited.error().wrap("checkpoint kept, not restored"));
  } else {
    auto waited = wait_for_group_members(
        config, members_on_node(choice->record, peer_node_name(config), rec.key), rec.key,
        std::chrono::seconds(config.restore_group_wait_seconds));
    if (!waited) return std::unexpected(waited.error().wrap("checkpoint kept, not restored"));
  }
  if (auto upper = overlay_upperdir(rootfs); !upper) {
    return std::unexpected(upper.error().wrap("find the new container's writable layer"));
  }
  // A group on several nodes: every member's tasks resumed together (restore_barrier.h).
  std::optional<RestoreBarrier> barrier;
  if (!is_pod_group(group) && record_spans_nodes(choice->record)) {
    barrier.emplace(choice->record, rec.key,
                    std::chrono::seconds(config.restore_group_wait_seconds));
  }
  bool touched_rootfs = false;
  std::string network_note;
  auto done = restore_from(ckpt, create, rec, config, runc_path, rootfs, tcp_policy, joined,
                           &network_note, &touched_rootfs, false, barrier ? &*barrier : nullptr);
  if (!done) {
    if (barrier) barrier->failed();  // the others are released at once
    // This generation is unusable for the group from now on: the member's generation and the
    // group record are moved aside (members already restored from it keep running).
    (void)store.move_aside(ckpt.path, done.error().message(), lock);
    if (auto glock = store.lock(rec.owner, group_store_key(group), std::chrono::seconds(10))) {
      (void)store.move_aside(choice->record.path,
                             "member " + rec.key + " failed to restore: " + done.error().message(),
                             *glock);
    }
    Error out = done.error().wrap("restore from " + ckpt.path + " (group generation " +
                                  choice->record.generation + ", moved aside)");
    // Members already running from that generation stay as they are: say so, loudly.
    if (auto peers = restored_from_group_generation(config, choice->record, rec.key);
        !peers.empty()) {
      std::string names;
      for (const auto& p : peers) names += (names.empty() ? "" : ", ") + p.ns + "/" + p.id;
      out = Error(out.kind(),
                  out.message() + fmt::format("; group {} is now inconsistent: {} already run "
                                              "from this generation (re-create the whole "
                                              "group to restore it consistently)",
                                              group, names));
    }
    if (touched_rootfs) {
      if (auto reset = reset_overlay(rootfs); !reset) {
        if (rootfs_clean != nullptr) *rootfs_clean = false;
        return std::unexpected(
            out.wrap("and the new rootfs could not be put back (" + reset.error().message() + ")"));
      }
    }
    return std::unexpected(out);
  }
  if (auto marked = ContainerRegistry(config.state_dir).mark_restored(rec.runc_root, rec.id);
      !marked) {
    return std::unexpected(marked.error().wrap("restored, but recording it failed"));
  }
  RestoreOutcome out;
  out.checkpoint = ckpt.path;
  out.lazy = done->lazy;
  out.lazy_failure = done->lazy_failure;
  out.network = network_note;
  if (!network_note.empty()) out.network += "; ";
  out.network += fmt::format("group {} generation {} ({} members)", group,
                             choice->record.generation, choice->record.members.size());
  out.skipped = std::move(skipped);
  for (const auto& f : ckpt.manifest.files) out.bytes += f.size;
  out.ms = ms_since(start);
  return out;
}

}  // namespace

Result<RestoreOutcome> restore_container(const RuncCommandLine& create, const ContainerRecord& rec,
                                         const NodeConfig& config, const std::string& runc_path,
                                         bool* rootfs_clean) {
  if (rootfs_clean != nullptr) *rootfs_clean = true;
  auto start = std::chrono::steady_clock::now();
  // No key, no restore: nothing unsealed is trusted (and nothing is moved aside for it).
  auto keys = load_node_keyring(config);
  if (!keys) return std::unexpected(keys.error().wrap("cannot check checkpoint seals"));
  CheckpointStore store(rec.store, config.keep, rec.store_root,
                        std::make_shared<const Keyring>(std::move(*keys)));
  auto lock = store.lock(rec.owner, rec.key, std::chrono::seconds(60));
  if (!lock) return std::unexpected(lock.error().wrap("lock " + rec.owner + "/" + rec.key));
  (void)store.cleanup_stale(*lock);

  // The new container's spec, to compare with the one each checkpoint was taken under.
  auto spec = bundle_spec_digest(rec.bundle);
  if (!spec) return std::unexpected(spec.error().wrap("spec digest of the new container"));
  // Not the checkpoint's fault either: nothing is moved aside.
  if (auto own = tenant_criu_config(rec.bundle); !own) return std::unexpected(own.error());

  // The container's TCP policy, strictly one of its names: a malformed ARCH_TCP is the
  // new container's fault, not the checkpoint's (kept, not restored).
  auto env = read_arch_env(rec.bundle);
  if (!env) return std::unexpected(env.error());
  auto tcp_policy = container_tcp_policy(config.checkpoint.tcp, env->get("ARCH_TCP"));
  if (!tcp_policy) return std::unexpected(tcp_policy.error().wrap("checkpoint kept, not restored"));
  // The namespace it joins, if any: one that is not a network namespace, likewise.
  auto joined = open_joined_network_namespace(rec.bundle);
  if (!joined) return std::unexpected(joined.error().wrap("checkpoint kept, not restored"));

  auto root_path = read_root_path(rec.bundle);
  std::string rootfs = root_path ? *root_path : rec.bundle + "/rootfs";
  // A group member (ARCH_GROUP, or a generation that names a group): group_checkpoint.h.
  auto group = restore_group(store, rec);
  if (!group) return std::unexpected(group.error().wrap("checkpoint kept, not restored"));
  if (!group->empty()) {
    return restore_group_member(store, *lock, *group, create, rec, config, runc_path, *spec,
                                *tcp_policy, *joined, rootfs, rootfs_clean, start);
  }
  // Newest verified generation first; one that fails to restore is moved aside with the
  // reason, the rootfs is put back, and the generation before it is tried.
  std::vector<std::string> failed;
  // A lazy restore checks the pages images chunk by chunk as it serves them (when the
  // checkpoint has their chunk digests); everything else is hashed before the restore.
  // ARCH_LAZY_VERIFY=first: the pages too are hashed before the restore (as before
  // per-chunk verification; for comparison), never a weaker check.
  bool lazy = lazy_restore_wanted(config, rec.bundle) && env->get("ARCH_LAZY_VERIFY") != "first";
  for (int attempt = 0; attempt < kMaxRestoreAttempts; ++attempt) {
    // A migrated generation's pages are on its source node (sparse here): checked by size
    // only, then served chunk by chunk from the source (container/migrated_pages.h).
    bool migrated_newest = newest_is_migrated(store, rec);
    auto ckpt = store.latest_verified(
        rec.owner, rec.key, *lock,
        lazy || migrated_newest ? VerifyScope::kDeferChunked : VerifyScope::kAllFiles);
    if (!ckpt) {
      // ENOENT means "none left that verifies"; the reasons are in the text.
      std::string why =
          ckpt.error().code() == ENOENT ? ckpt.error().text() : ckpt.error().message();
      for (const auto& f : failed) why += "; " + f;
      return fail("no usable checkpoint: " + why);
    }
    // A spec that grants other privileges is not the checkpoint's fault: it stays.
    if (ckpt->manifest.spec.digest != spec->digest) {
      auto fields = differing_spec_fields(ckpt->manifest.spec.fields, spec->fields);
      std::string names;
      for (const auto& f : fields) names += (names.empty() ? "" : ", ") + f;
      return fail("the new container's spec differs from the checkpoint's in " +
                  (names.empty() ? std::string("its digest") : names) + " (checkpoint " +
                  ckpt->path + " kept, not restored)");
    }
    if (auto upper = overlay_upperdir(rootfs); !upper) {
      Error e = upper.error().wrap("find the new container's writable layer");
      (void)store.move_aside(ckpt->path, e.message(), *lock);
      return std::unexpected(e.wrap("restore from " + ckpt->path + " (moved aside)"));
    }
    bool touched_rootfs = false;
    std::string network_note;
    auto origin = migration_origin(ckpt->manifest);
    Result<std::string> workdir_note = std::unexpected(Error("not tried"));
    if (!origin) {
      workdir_note = std::unexpected(origin.error());
    } else if (!*origin && !lazy && migrated_newest) {
      // Checked by size only for a migrated generation that is no longer the one chosen.
      if (auto ok = verify_manifest(ckpt->path, ckpt->manifest); !ok) {
        workdir_note = std::unexpected(ok.error());
      } else {
        workdir_note = put_back_workdir_for(*ckpt, rec, config);
      }
    } else {
      workdir_note = put_back_workdir_for(*ckpt, rec, config);
    }
    Result<RestoreMode> done = std::unexpected(Error("not tried"));
    if (workdir_note) {
      bool deferred = (lazy || origin->has_value()) && has_chunked_pages(ckpt->manifest);
      done = restore_from(*ckpt, create, rec, config, runc_path, rootfs, *tcp_policy, *joined,
                          &network_note, &touched_rootfs, deferred, nullptr, *origin);
    } else {
      done = std::unexpected(workdir_note.error());
    }
    if (done) {
      if (auto marked = ContainerRegistry(config.state_dir).mark_restored(rec.runc_root, rec.id);
          !marked) {
        return std::unexpected(marked.error().wrap("restored, but recording it failed"));
      }
      RestoreOutcome out;
      out.checkpoint = ckpt->path;
      out.lazy = done->lazy;
      out.lazy_served = done->served;
      out.lazy_failure = done->lazy_failure;
      out.network = network_note;
      out.workdir = *workdir_note;
      out.skipped = std::move(failed);
      for (const auto& s : ckpt->skipped) out.skipped.push_back(s);
      for (const auto& f : ckpt->manifest.files) out.bytes += f.size;
      out.ms = ms_since(start);
      return out;
    }
    (void)store.move_aside(ckpt->path, done.error().message(), *lock);
    Error out = done.error().wrap("restore from " + ckpt->path + " (moved aside)");
    if (touched_rootfs) {
      if (auto reset = reset_overlay(rootfs); !reset) {
        if (rootfs_clean != nullptr) *rootfs_clean = false;
        return std::unexpected(
            out.wrap("and the new rootfs could not be put back (" + reset.error().message() + ")"));
      }
    }
    failed.push_back(out.message());
  }
  std::string why = "gave up after " + std::to_string(kMaxRestoreAttempts) + " generations";
  for (const auto& f : failed) why += "; " + f;
  return fail(why);
}

}  // namespace arch
