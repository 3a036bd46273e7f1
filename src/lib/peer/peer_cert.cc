// PeerCert: the derived peer CA, node certificates, and the node identity files. See
// peer_cert.h for the derivation and the layout.
#include "peer/peer_cert.h"

#include <fcntl.h>
#include <fmt/core.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/file_lock.h"
#include "base/file_util.h"
#include "base/hex.h"

namespace arch {
namespace {

constexpr std::string_view kCaInfo = "arch-peer-ca v1";
constexpr const char* kKeyFile = "node.key";
constexpr const char* kCertFile = "node.crt";
constexpr std::time_t kCaNotBefore = 946684800;  // 2000-01-01T00:00:00Z
constexpr const char* kCaNotAfter = "99991231235959Z";

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;

// The last OpenSSL error as text (and the queue cleared).
std::string ssl_error() {
  unsigned long e = ERR_get_error();
  std::string out = e == 0 ? "unknown OpenSSL error" : ERR_error_string(e, nullptr);
  ERR_clear_error();
  return out;
}

std::unexpected<Error> fail_ssl(const std::string& what) {
  return fail(what + ": " + ssl_error());
}

Result<std::string> hkdf_sha256(std::string_view secret, std::string_view info, std::size_t n) {
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(
      EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr), EVP_PKEY_CTX_free);
  std::string out(n, '\0');
  std::size_t len = n;
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) <= 0 ||
      EVP_PKEY_CTX_set_hkdf_md(ctx.get(), EVP_sha256()) <= 0 ||
      EVP_PKEY_CTX_set1_hkdf_key(ctx.get(), reinterpret_cast<const unsigned char*>(secret.data()),
                                 static_cast<int>(secret.size())) <= 0 ||
      EVP_PKEY_CTX_add1_hkdf_info(ctx.get(), reinterpret_cast<const unsigned char*>(info.data()),
                                  static_cast<int>(info.size())) <= 0 ||
      EVP_PKEY_derive(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &len) <= 0 ||
      len != n) {
    return fail_ssl("HKDF");
  }
  return out;
}

Result<void> add_ext(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (ext == nullptr) return fail_ssl(fmt::format("certificate extension {}", value));
  int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  if (ok != 1) return fail_ssl("add certificate extension");
  return {};
}

Result<void> set_name(X509_NAME* name, std::string_view cn) {
  if (X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>("ARCH"), -1, -1, 0) != 1 ||
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>(std::string(cn).c_str()),
                                 -1, -1, 0) != 1) {
    return fail_ssl("certificate name");
  }
  return {};
}

std::string asn1_time_text(const ASN1_TIME* t) {
  struct tm tm {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return "?";
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

// The directory exists (made 0700 when missing), is ours and closed to group and others.
Result<void> check_private_dir(const std::string& dir, bool create) {
  if (create && ::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return fail_errno("mkdir " + dir);
  }
  auto fd = open_file(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!fd) return std::unexpected(fd.error());
  struct stat st {};
  if (::fstat(fd->get(), &st) != 0) return fail_errno("stat " + dir);
  if (st.st_uid != ::geteuid() || (st.st_mode & 077) != 0) {
    return fail(ErrorKind::kPermission,
                fmt::format("{}: owned by uid {} with mode {:o}: must be this user's and 0700 "
                            "(it holds the node's TLS key): not used",
                            dir, st.st_uid, st.st_mode & 07777));
  }
  return {};
}

Result<std::string> read_private_file(const std::string& path) {
  auto fd = open_file(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
  if (!fd) return std::unexpected(fd.error());
  struct stat st {};
  if (::fstat(fd->get(), &st) != 0) return fail_errno("stat " + path);
  if (!S_ISREG(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & 077) != 0) {
    return fail(ErrorKind::kPermission, path + ": not a regular 0600 file of this user: not used");
  }
  return read_all(fd->get(), 64 * 1024);
}

Result<EvpPkeyPtr> parse_key_pem(const std::string& text) {
  BioPtr bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
  EvpPkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) return fail_ssl("read the node's TLS key");
  if (EVP_PKEY_id(key.get()) != EVP_PKEY_ED25519) return fail("the node's TLS key is not Ed25519");
  return key;
}

Result<X509Ptr> parse_cert_pem(const std::string& text) {
  BioPtr bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) return fail_ssl("read the node's certificate");
  return cert;
}

// The CAs of every node key held, and the active key's (which issues).
struct Cas {
  std::vector<PeerCa> all;
  std::size_t active = 0;
};

Result<Cas> node_cas(const NodeConfig& config) {
  auto ring = load_node_keyring(config);
  if (!ring) return std::unexpected(ring.error().wrap("peer CA"));
  Cas out;
  for (const auto& k : ring->keys()) {
    auto ca = derive_peer_ca(k);
    if (!ca) return std::unexpected(ca.error());
    if (ring->active() != nullptr && ring->active()->id == k.id) out.active = out.all.size();
    out.all.push_back(std::move(*ca));
  }
  return out;
}

}  // namespace

Result<PeerCa> derive_peer_ca(const NodeKey& node_key) {
  auto seed = hkdf_sha256(node_key.secret, kCaInfo, 32);
  if (!seed) return std::unexpected(seed.error());
  PeerCa ca;
  ca.key_id = node_key.id;
  ca.key.reset(EVP_PKEY_new_raw_private_key(
      EVP_PKEY_ED25519, nullptr, reinterpret_cast<const unsigned char*>(seed->data()), 32));
  OPENSSL_cleanse(seed->data(), seed->size());
  if (!ca.key) return fail_ssl("peer CA key");
  ca.cert.reset(X509_new());
  X509* c = ca.cert.get();
  if (!c || X509_set_version(c, 2) != 1 || ASN1_INTEGER_set(X509_get_serialNumber(c), 1) != 1 ||
      ASN1_TIME_set(X509_getm_notBefore(c), kCaNotBefore) == nullptr ||
      ASN1_TIME_set_string(X509_getm_notAfter(c), kCaNotAfter) != 1 ||
      X509_set_pubkey(c, ca.key.get()) != 1) {
    return fail_ssl("peer CA certificate");
  }
  if (auto ok = set_name(X509_get_subject_name(c), "arch peer CA " + node_key.id); !ok) {
    return std::unexpected(ok.error());
  }
  if (X509_set_issuer_name(c, X509_get_subject_name(c)) != 1) return fail_ssl("peer CA issuer");
  for (auto [nid, value] : {std::pair{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
                            std::pair{NID_key_usage, "critical,keyCertSign,cRLSign"},
                            std::pair{NID_subject_key_identifier, "hash"}}) {
    if (auto ok = add_ext(c, c, nid, value); !ok) return std::unexpected(ok.error());
  }
  if (X509_sign(c, ca.key.get(), nullptr) <= 0) return fail_ssl("sign the peer CA");
  return ca;
}

Result<EvpPkeyPtr> generate_peer_key() {
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(
      EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nullptr), EVP_PKEY_CTX_free);
  EVP_PKEY* key = nullptr;
  if (!ctx || EVP_PKEY_keygen_init(ctx.get()) <= 0 || EVP_PKEY_keygen(ctx.get(), &key) <= 0) {
    return fail_ssl("generate the node's TLS key");
  }
  return EvpPkeyPtr(key);
}

Result<X509Ptr> issue_peer_certificate(const PeerCa& ca, EVP_PKEY* node_key, std::string_view name,
                                       std::time_t not_before, std::time_t not_after) {
  if (auto ok = validate_node_name(name); !ok) return std::unexpected(ok.error());
  X509Ptr cert(X509_new());
  X509* c = cert.get();
  unsigned char serial[16];
  if (RAND_bytes(serial, sizeof serial) != 1) return fail_ssl("certificate serial");
  serial[0] &= 0x7f;  // positive
  std::unique_ptr<BIGNUM, decltype(&BN_free)> bn(BN_bin2bn(serial, sizeof serial, nullptr),
                                                 BN_free);
  if (!c || !bn || X509_set_version(c, 2) != 1 ||
      BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(c)) == nullptr ||
      ASN1_TIME_set(X509_getm_notBefore(c), not_before) == nullptr ||
      ASN1_TIME_set(X509_getm_notAfter(c), not_after) == nullptr ||
      X509_set_pubkey(c, node_key) != 1 ||
      X509_set_issuer_name(c, X509_get_subject_name(ca.cert.get())) != 1) {
    return fail_ssl("node certificate");
  }
  if (auto ok = set_name(X509_get_subject_name(c), name); !ok) return std::unexpected(ok.error());
  std::string san = "DNS:" + std::string(name);
  for (auto [nid, value] : {std::pair{NID_basic_constraints, "critical,CA:FALSE"},
                            std::pair{NID_key_usage, "critical,digitalSignature"},
                            std::pair{NID_ext_key_usage, "serverAuth,clientAuth"},
                            std::pair{NID_subject_alt_name, san.c_str()},
                            std::pair{NID_authority_key_identifier, "keyid:always"}}) {
    if (auto ok = add_ext(c, ca.cert.get(), nid, value); !ok) return std::unexpected(ok.error());
  }
  if (X509_sign(c, ca.key.get(), nullptr) <= 0) return fail_ssl("sign the node certificate");
  return cert;
}

std::string peer_certificate_name(X509* cert) {
  if (cert == nullptr) return {};
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  std::string out;
  if (names != nullptr) {
    for (int i = 0; i < sk_GENERAL_NAME_num(names) && out.empty(); ++i) {
      const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
      if (n->type != GEN_DNS) continue;
      const ASN1_IA5STRING* s = n->d.dNSName;
      out.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                 static_cast<std::size_t>(ASN1_STRING_length(s)));
    }
    GENERAL_NAMES_free(names);
  }
  return out;
}

PeerCertInfo describe_peer_certificate(X509* cert) {
  PeerCertInfo info;
  info.name = peer_certificate_name(cert);
  char buf[256] = {0};
  X509_NAME* issuer = X509_get_issuer_name(cert);
  if (X509_NAME_get_text_by_NID(issuer, NID_commonName, buf, sizeof buf) > 0) info.issuer = buf;
  info.not_after = asn1_time_text(X509_get0_notAfter(cert));
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (X509_digest(cert, EVP_sha256(), md, &len) == 1) info.fingerprint = to_hex(md, len);
  return info;
}

Result<std::string> certificate_pem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) return fail_ssl("certificate PEM");
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

Result<std::string> private_key_pem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    return fail_ssl("key PEM");
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

Result<PeerIdentity> load_peer_identity(const NodeConfig& config) {
  const std::string& dir = config.peers.dir;
  if (auto ok = check_private_dir(dir, false); !ok) {
    return std::unexpected(ok.error().wrap("peer identity (`archctl peer cert` makes it)"));
  }
  auto key_text = read_private_file(dir + "/" + kKeyFile);
  if (!key_text) return std::unexpected(key_text.error());
  auto cert_text = read_private_file(dir + "/" + kCertFile);
  if (!cert_text) return std::unexpected(cert_text.error());
  PeerIdentity id;
  auto key = parse_key_pem(*key_text);
  if (!key) return std::unexpected(key.error());
  auto cert = parse_cert_pem(*cert_text);
  if (!cert) return std::unexpected(cert.error());
  if (X509_check_private_key(cert->get(), key->get()) != 1) {
    return fail(dir + ": node.crt is not for node.key (`archctl peer cert --renew`)");
  }
  auto cas = node_cas(config);
  if (!cas) return std::unexpected(cas.error());
  id.name = peer_certificate_name(cert->get());
  id.key = std::move(*key);
  id.cert = std::move(*cert);
  for (auto& ca : cas->all) id.trusted.push_back(std::move(ca.cert));
  return id;
}

Result<PeerIdentity> ensure_peer_identity(const NodeConfig& config, bool renew,
                                          PeerCertInfo* info) {
  std::string name = peer_node_name(config);
  if (auto ok = validate_node_name(name); !ok) {
    return std::unexpected(ok.error().wrap("this node's name (set [peers] node_name)"));
  }
  auto cas = node_cas(config);
  if (!cas) return std::unexpected(cas.error());
  const PeerCa& issuer = cas->all[cas->active];
  std::time_t now = std::time(nullptr);
  std::string why;
  auto current = load_peer_identity(config);
  if (renew) {
    why = "renewal asked for";
  } else if (!current) {
    why = "none usable (" + current.error().message() + ")";
  } else if (current->name != name) {
    why = "it was for " + current->name + ", this node is " + name;
  } else if (X509_check_issued(issuer.cert.get(), current->cert.get()) != X509_V_OK ||
             X509_verify(current->cert.get(), issuer.key.get()) != 1) {
    why = "not issued by the active node key's CA";
  } else {
    std::time_t refresh = now + static_cast<std::time_t>(config.peers.cert_days) * 86400 / 10;
    if (X509_cmp_time(X509_get0_notAfter(current->cert.get()), &refresh) < 0) {
      why = "it expires soon";
    }
  }
  if (why.empty()) {
    if (info != nullptr) *info = describe_peer_certificate(current->cert.get());
    return current;
  }
  if (auto ok = check_private_dir(config.peers.dir, true); !ok) return std::unexpected(ok.error());
  // One writer at a time (archd and archctl may both find it missing): the key and the
  // certificate written by the same one.
  auto lock = FileLock::acquire(config.peers.dir + "/.lock", std::chrono::seconds(10));
  if (!lock) return std::unexpected(lock.error().wrap("lock " + config.peers.dir));
  if (!renew) {
    if (auto again = load_peer_identity(config);
        again && again->name == name &&
        X509_check_issued(issuer.cert.get(), again->cert.get()) == X509_V_OK && !current) {
      if (info != nullptr) *info = describe_peer_certificate(again->cert.get());
      return again;  // the other writer just made it
    }
  }
  EvpPkeyPtr key;
  if (current && !renew) {
    key = std::move(current->key);
  } else {
    auto fresh = generate_peer_key();
    if (!fresh) return std::unexpected(fresh.error());
    key = std::move(*fresh);
  }
  auto cert =
      issue_peer_certificate(issuer, key.get(), name, now - 300,
                             now + static_cast<std::time_t>(config.peers.cert_days) * 86400);
  if (!cert) return std::unexpected(cert.error());
  auto key_pem = private_key_pem(key.get());
  auto cert_pem = certificate_pem(cert->get());
  if (!key_pem || !cert_pem) return fail("encode the node identity");
  const std::string& dir = config.peers.dir;
  if (auto ok = write_file_atomic(dir + "/" + kKeyFile, *key_pem, 0600); !ok) {
    return std::unexpected(ok.error());
  }
  OPENSSL_cleanse(key_pem->data(), key_pem->size());
  if (auto ok = write_file_atomic(dir + "/" + kCertFile, *cert_pem, 0600); !ok) {
    return std::unexpected(ok.error());
  }
  auto loaded = load_peer_identity(config);
  if (loaded && info != nullptr) {
    *info = describe_peer_certificate(loaded->cert.get());
    info->issued = true;
    info->why = why;
  }
  return loaded;
}

}  // namespace arch
