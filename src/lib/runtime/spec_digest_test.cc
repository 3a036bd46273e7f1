// Tests for the spec digest (each field counts, instance paths do not) and the credentials
// check of restored tasks.
#include "runtime/spec_digest.h"

#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>

namespace arch {
namespace {

using json = nlohmann::json;

json base_spec() {
  return json::parse(R"({
    "ociVersion": "1.0.2",
    "process": {
      "user": {"uid": 0, "gid": 0, "additionalGids": [10, 1]},
      "args": ["sh"], "env": ["PATH=/bin", "ARCH_ENABLE=1"], "cwd": "/",
      "capabilities": {
        "bounding": ["CAP_CHOWN", "CAP_KILL"], "effective": ["CAP_KILL", "CAP_CHOWN"],
        "permitted": ["CAP_CHOWN", "CAP_KILL"]},
      "noNewPrivileges": true,
      "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
    },
    "root": {"path": "rootfs", "readonly": false},
    "hostname": "c1",
    "mounts": [
      {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec"]},
      {"destination": "/data", "type": "bind", "source": "/var/lib/kubelet/pods/1/volumes/x",
       "options": ["rbind", "rw"]}
    ],
    "linux": {
      "namespaces": [{"type": "pid"}, {"type": "network", "path": "/var/run/netns/cni-1"},
                     {"type": "mount"}],
      "cgroupsPath": "/default/c1",
      "maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"],
      "seccomp": {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ALLOW"}]},
      "resources": {"devices": [{"allow": false, "access": "rwm"}]},
      "devices": []
    }
  })");
}

SpecDigest digest_of(const json& spec) {
  auto d = spec_digest(spec.dump());
  EXPECT_TRUE(d) << d.error().message();
  return d ? *d : SpecDigest{};
}

TEST(SpecDigest, EverySecurityFieldChangesTheDigestAndIsNamed) {
  const SpecDigest base = digest_of(base_spec());
  EXPECT_EQ(base.digest.size(), 64u);
  std::vector<std::pair<std::string, std::function<void(json&)>>> edits = {
      {"process.user.uid", [](json& s) { s["process"]["user"]["uid"] = 1000; }},
      {"process.user.gid", [](json& s) { s["process"]["user"]["gid"] = 1000; }},
      {"process.user.additionalGids",
       [](json& s) { s["process"]["user"]["additionalGids"].push_back(0); }},
      {"process.capabilities.bounding",
       [](json& s) { s["process"]["capabilities"]["bounding"].push_back("CAP_SYS_ADMIN"); }},
      {"process.capabilities.effective",
       [](json& s) { s["process"]["capabilities"]["effective"].push_back("CAP_SYS_ADMIN"); }},
      {"process.capabilities.permitted",
       [](json& s) { s["process"]["capabilities"]["permitted"] = json::array(); }},
      {"process.capabilities.inheritable",
       [](json& s) { s["process"]["capabilities"]["inheritable"] = {"CAP_KILL"}; }},
      {"process.capabilities.ambient",
       [](json& s) { s["process"]["capabilities"]["ambient"] = {"CAP_KILL"}; }},
      {"process.noNewPrivileges", [](json& s) { s["process"]["noNewPrivileges"] = false; }},
      {"process.apparmorProfile", [](json& s) { s["process"]["apparmorProfile"] = "unconfined"; }},
      {"process.selinuxLabel", [](json& s) { s["process"]["selinuxLabel"] = "system_u:x"; }},
      {"process.rlimits", [](json& s) { s["process"]["rlimits"][0]["hard"] = 65536; }},
      {"linux.seccomp", [](json& s) { s["linux"].erase("seccomp"); }},
      {"linux.devices",
       [](json& s) {
         s["linux"]["devices"].push_back(
             {{"path", "/dev/sda"}, {"type", "b"}, {"major", 8}, {"minor", 0}});
       }},
      {"linux.resources.devices",
       [](json& s) {
         s["linux"]["resources"]["devices"].push_back({{"allow", true}, {"access", "rwm"}});
       }},
      {"linux.namespaces", [](json& s) { s["linux"]["namespaces"].erase(0); }},
      {"linux.uidMappings",
       [](json& s) {
         s["linux"]["uidMappings"] = {{{"containerID", 0}, {"hostID", 100000}, {"size", 65536}}};
       }},
      {"linux.maskedPaths", [](json& s) { s["linux"]["maskedPaths"] = json::array(); }},
      {"linux.readonlyPaths", [](json& s) { s["linux"]["readonlyPaths"].push_back("/proc/bus"); }},
      {"linux.mountLabel", [](json& s) { s["linux"]["mountLabel"] = "system_u:object_r:x"; }},
      {"root.readonly", [](json& s) { s["root"]["readonly"] = true; }},
      {"mounts", [](json& s) { s["mounts"][1]["destination"] = "/etc"; }},
      {"mounts",
       [](json& s) {
         s["mounts"][1]["options"] = {"rbind", "ro"};
       }},
      {"mounts",
       [](json& s) {
         s["mounts"].push_back({{"destination", "/host"}, {"type", "bind"}, {"source", "/"}});
       }},
  };
  for (const auto& [field, edit] : edits) {
    SCOPED_TRACE(field);
    json spec = base_spec();
    edit(spec);
    SpecDigest d = digest_of(spec);
    EXPECT_NE(d.digest, base.digest);
    EXPECT_EQ(differing_spec_fields(base.fields, d.fields), std::vector<std::string>{field});
  }
}

TEST(SpecDigest, InstanceValuesAndOrderDoNotChangeIt) {
  const SpecDigest base = digest_of(base_spec());
  std::vector<std::function<void(json&)>> edits = {
      [](json& s) { s["mounts"][1]["source"] = "/var/lib/kubelet/pods/2/volumes/x"; },
      [](json& s) { s["linux"]["namespaces"][1]["path"] = "/var/run/netns/cni-2"; },
      [](json& s) { s["linux"]["cgroupsPath"] = "/default/c2"; },
      [](json& s) { s["hostname"] = "c2"; },
      [](json& s) { s["process"]["env"].push_back("ARCH_JOB_ID=x"); },
      [](json& s) {
        s["process"]["args"] = {"sleep", "1"};
      },
      [](json& s) { s["root"]["path"] = "/other/rootfs"; },
      [](json& s) {
        s["process"]["capabilities"]["bounding"] = {"CAP_KILL", "CAP_CHOWN"};
      },
      [](json& s) { std::swap(s["mounts"][0], s["mounts"][1]); },
      [](json& s) {
        s["process"]["user"]["additionalGids"] = {1, 10, 10};
      },
      [](json& s) {
        s["linux"]["uidMappings"] = {{{"containerID", 0}, {"hostID", 100000}, {"size", 65536}}};
      },
  };
  json mapped = base_spec();
  edits.back()(mapped);
  const SpecDigest with_mapping = digest_of(mapped);
  for (std::size_t i = 0; i + 1 < edits.size(); ++i) {
    SCOPED_TRACE(i);
    json spec = base_spec();
    edits[i](spec);
    EXPECT_EQ(digest_of(spec).digest, base.digest);
  }
  mapped["linux"]["uidMappings"][0]["hostID"] = 200000;  // another pod's host range
  EXPECT_EQ(digest_of(mapped).digest, with_mapping.digest);
}

TEST(SpecDigest, WrongTypesAreErrors) {
  for (auto edit : std::vector<std::function<void(json&)>>{
           [](json& s) { s["process"]["capabilities"]["bounding"] = "CAP_KILL"; },
           [](json& s) { s["process"]["user"]["uid"] = -1; },
           [](json& s) { s["root"]["readonly"] = "yes"; },
           [](json& s) {
             s["linux"]["namespaces"] = {{{"path", "/x"}}};
           }}) {
    json spec = base_spec();
    edit(spec);
    EXPECT_FALSE(spec_digest(spec.dump()));
  }
  EXPECT_FALSE(spec_digest("[]"));
  EXPECT_TRUE(spec_digest("{}"));
}

std::string status(const std::string& caps_eff, const std::string& uid = "0\t0\t0\t0",
                   const std::string& seccomp = "2", const std::string& nnp = "1") {
  return "Name:\tsh\nUid:\t" + uid + "\nGid:\t0\t0\t0\t0\nNoNewPrivs:\t" + nnp + "\nSeccomp:\t" +
         seccomp + "\nCapInh:\t0000000000000000\nCapPrm:\t" + caps_eff + "\nCapEff:\t" + caps_eff +
         "\nCapBnd:\t0000000000000021\nCapAmb:\t0000000000000000\n";
}

TEST(SpecCredentials, TasksWithinTheSpecPassAndAnyExcessIsNamed) {
  auto creds = spec_credentials(base_spec().dump());
  ASSERT_TRUE(creds) << creds.error().message();
  EXPECT_EQ(creds->bounding, (uint64_t{1} << 0) | (uint64_t{1} << 5));
  EXPECT_TRUE(creds->seccomp);
  EXPECT_TRUE(creds->no_new_privileges);
  EXPECT_EQ(creds->uid, 0u);  // no CAP_SETUID and noNewPrivileges: fixed
  EXPECT_TRUE(credential_excess(status("0000000000000021"), *creds).empty());
  EXPECT_TRUE(credential_excess(status("0000000000000000"), *creds).empty());

  auto sys_admin = credential_excess(status("0000000000200021"), *creds);
  ASSERT_FALSE(sys_admin.empty());
  EXPECT_NE(sys_admin[0].find("CAP_SYS_ADMIN"), std::string::npos) << sys_admin[0];
  auto no_filter = credential_excess(status("0000000000000021", "0\t0\t0\t0", "0"), *creds);
  ASSERT_EQ(no_filter.size(), 1u);
  EXPECT_NE(no_filter[0].find("Seccomp 0"), std::string::npos);
  auto nnp = credential_excess(status("0000000000000021", "0\t0\t0\t0", "2", "0"), *creds);
  ASSERT_EQ(nnp.size(), 1u);
  EXPECT_NE(nnp[0].find("NoNewPrivs"), std::string::npos);

  json user = base_spec();
  user["process"]["user"]["uid"] = 1000;
  auto as_user = spec_credentials(user.dump());
  ASSERT_TRUE(as_user);
  EXPECT_FALSE(credential_excess(status("0000000000000000"), *as_user).empty());
  EXPECT_TRUE(
      credential_excess(status("0000000000000000", "1000\t1000\t1000\t1000"), *as_user).empty());
  // Without noNewPrivileges a setuid binary may change the uid: not checked.
  user["process"]["noNewPrivileges"] = false;
  auto setuid_ok = spec_credentials(user.dump());
  ASSERT_TRUE(setuid_ok);
  EXPECT_FALSE(setuid_ok->uid.has_value());
  // Mapped through a user namespace.
  json mapped = base_spec();
  mapped["linux"]["uidMappings"] = {{{"containerID", 0}, {"hostID", 100000}, {"size", 65536}}};
  auto m = spec_credentials(mapped.dump());
  ASSERT_TRUE(m);
  EXPECT_EQ(m->uid, 100000u);
}

TEST(SpecCredentials, CapabilityNames) {
  EXPECT_EQ(capability_bit("CAP_CHOWN"), 0);
  EXPECT_EQ(capability_bit("CAP_SYS_ADMIN"), 21);
  EXPECT_EQ(capability_bit("CAP_CHECKPOINT_RESTORE"), 40);
  EXPECT_EQ(capability_bit("CAP_NOPE"), -1);
}

}  // namespace
}  // namespace arch
