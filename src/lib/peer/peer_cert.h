// PeerCert: the certificates of the channel between archd instances, all derived from the
// node key set-up (store/node_key.h), so that exactly the nodes holding the node key trust
// each other.
//
// Peer CA: its Ed25519 private key is HKDF-SHA256(node key secret, salt "", info
// "arch-peer-ca v1"), and its self-signed certificate is built deterministically (serial 1,
// subject "CN=arch peer CA <key id>, O=ARCH", valid 2000-01-01 to 9999-12-31, CA:TRUE), so
// every node that holds the key derives the same CA and no CA file is ever stored or
// copied. Every key of the keyring gives a CA that is trusted; the active key's CA issues.
// Node identity ([peers] dir, 0700, root-only): node.key, the node's own Ed25519 key (PKCS#8
// PEM, 0600, random, never leaves the node), and node.crt, its certificate from the active
// CA: subject CN and SAN DNS = the node name, CA:FALSE, serverAuth + clientAuth, valid from
// 5 minutes ago for [peers] cert_days.
#pragma once

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <ctime>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "config/node_config.h"
#include "store/node_key.h"

namespace arch {

struct EvpPkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct X509Free {
  void operator()(X509* p) const { X509_free(p); }
};
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, EvpPkeyFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;

/// The CA derived from one node key.
struct PeerCa {
  std::string key_id;  ///< The node key it comes from.
  EvpPkeyPtr key;
  X509Ptr cert;
};

/// Derives the peer CA of `key` (deterministic: the same key gives the same certificate).
Result<PeerCa> derive_peer_ca(const NodeKey& key);

/// A new random Ed25519 key for a node.
Result<EvpPkeyPtr> generate_peer_key();

/// A node certificate for `name` and `node_key`'s public half, signed by `ca`, valid from
/// `not_before` to `not_after` (UTC seconds).
Result<X509Ptr> issue_peer_certificate(const PeerCa& ca, EVP_PKEY* node_key, std::string_view name,
                                       std::time_t not_before, std::time_t not_after);

/// What TLS needs on one node: its own key and certificate, and the CAs it trusts.
struct PeerIdentity {
  std::string name;  ///< This node's name (its certificate's).
  EvpPkeyPtr key;
  X509Ptr cert;
  std::vector<X509Ptr> trusted;  ///< The CAs of every node key held.
};

/// What `archctl peer cert` and `peer list` show of a certificate.
struct PeerCertInfo {
  std::string name;         ///< Its DNS name.
  std::string issuer;       ///< The CA's subject ("arch peer CA <key id>").
  std::string not_after;    ///< "2027-12-06T20:00:00Z".
  std::string fingerprint;  ///< SHA-256 of the DER, hex.
  bool issued = false;      ///< ensure_peer_identity() wrote a new one.
  std::string why;          ///< Why it was (re)issued.
};
PeerCertInfo describe_peer_certificate(X509* cert);

/// The DNS name (SAN, else CN) a certificate is for; "" when it has none.
std::string peer_certificate_name(X509* cert);

/// Loads the node's identity from [peers] dir and the trusted CAs from the keyring. The
/// directory must be root's and closed to others, node.key 0600. ENOENT when there is no
/// certificate yet.
Result<PeerIdentity> load_peer_identity(const NodeConfig& config);

/// `archctl peer cert` (and archd at start): keeps the node's certificate when it is for
/// this node's name, from the active key's CA and valid for more than a tenth of cert_days;
/// otherwise (or with `renew`) issues a new one (a new key pair too when there is none, or
/// with `renew`), written atomically. Returns the identity and what was done.
Result<PeerIdentity> ensure_peer_identity(const NodeConfig& config, bool renew,
                                          PeerCertInfo* info = nullptr);

/// PEM of a certificate and of a private key (PKCS#8), for the files and the tests.
Result<std::string> certificate_pem(X509* cert);
Result<std::string> private_key_pem(EVP_PKEY* key);

}  // namespace arch
