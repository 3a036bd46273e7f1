// Seal: the HMAC-SHA256 that makes a manifest (and so the whole checkpoint) something only a
// holder of the node key can have written.
//
// The MAC covers the manifest's canonical JSON without its "seal" member: nlohmann's compact
// dump() of the parsed document (object keys sorted), so every field is bound, including
// format_version, namespace (the owner), key, node, container_id, the file list with each
// file's size and SHA-256, spec (the spec digest), extra and encryption, and fields this
// build does not know. The key id is bound too, as the MAC's input starts with
// "arch-manifest-seal-v1\0<key id>\0". Files are bound through their digests, which the
// store checks against the files after the seal.
#pragma once

#include <string>
#include <string_view>

#include "base/error.h"
#include "store/manifest.h"
#include "store/node_key.h"

namespace arch {

inline constexpr const char* kSealAlgorithm = "HMAC-SHA256";

/// Seals `m` (format version set to the current one) with `key`; returns the manifest
/// file's text.
Result<std::string> seal_manifest(Manifest m, const NodeKey& key);

/// Parses manifest text and checks its seal before anything in it is used. Refused (error
/// code EBADMSG): format 1 (unsealed), no or malformed seal, a key id `keys` does not hold
/// (a foreign node's or a removed key), a MAC that does not match (tampered).
Result<Manifest> open_sealed_manifest(std::string_view text, const Keyring& keys);

}  // namespace arch
