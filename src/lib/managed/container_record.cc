// ContainerRecord construction for a create (see container_record.h).
#include "managed/container_record.h"

#include <ctime>

#include "base/names.h"
#include "managed/docker_labels.h"
#include "managed/job_identity.h"
#include "managed/owner.h"
#include "managed/shared_mode.h"

namespace arch {

Result<ContainerRecord> make_container_record(const RuncCommandLine& cl, const std::string& bundle,
                                              const ArchEnv& env, const NodeConfig& config,
                                              std::optional<SharedWorkdir>* workdir_out) {
  ContainerRecord rec;
  rec.id = std::string(cl.container_id());
  rec.runc_root = std::string(cl.effective_root());
  rec.ns = derive_namespace(bundle, rec.runc_root);
  rec.bundle = bundle;
  rec.log = std::string(cl.log);
  rec.created = static_cast<long>(::time(nullptr));
  auto on_stop = env.get("ARCH_CHECKPOINT_ON_STOP");
  rec.checkpoint_on_stop = on_stop == "1" || on_stop == "true";
  if (auto ok = validate_name("container id", rec.id); !ok) return std::unexpected(ok.error());
  if (auto ok = validate_name("namespace", rec.ns); !ok) return std::unexpected(ok.error());
  auto key = resolve_job_key(env, rec.id);
  if (!key) return std::unexpected(key.error());
  rec.key = key->key;
  rec.key_source = key->source;
  // ECS owners come from Docker's own record of the container, read only when the node
  // enables them (never because the container asks).
  std::optional<Labels> labels;
  if (config.owners_ecs && rec.ns == kDockerNamespace) {
    auto read = read_docker_labels(config.docker_data_root, rec.id);
    if (!read) return std::unexpected(read.error().wrap("owner"));
    labels = std::move(*read);
  }
  auto owner = derive_owner(rec.ns, env, labels ? &*labels : nullptr);
  if (!owner) return std::unexpected(owner.error());
  rec.owner = *owner;
  auto place = store_place_for(env, config);
  if (!place) return std::unexpected(place.error());
  if (auto ok = check_store_place(*place); !ok) return std::unexpected(ok.error());
  rec.store = place->base;
  rec.store_root = place->root;
  auto workdir = shared_workdir_for(*place, env, rec.owner, rec.key);
  if (!workdir) return std::unexpected(workdir.error());
  if (*workdir) {
    (*workdir)->mount = workdir_mount_path(config.state_dir, rec.runc_root, rec.id);
    rec.workdir = (*workdir)->host;
  }
  if (workdir_out != nullptr) *workdir_out = std::move(*workdir);
  return rec;
}

}  // namespace arch
