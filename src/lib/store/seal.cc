// Seal: HMAC-SHA256 (OpenSSL) over the canonical manifest; constant-time comparison.
#include "store/seal.h"

#include <fmt/core.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cerrno>
#include <nlohmann/json.hpp>

#include "base/hex.h"

namespace arch {
namespace {

constexpr std::size_t kMacBytes = 32;

// The exact bytes the MAC covers: domain, key id, and the document without "seal".
std::string mac_input(nlohmann::json doc, std::string_view key_id) {
  doc.erase("seal");
  std::string input = "arch-manifest-seal-v1";
  input += '\0';
  input += key_id;
  input += '\0';
  input += doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return input;
}

Result<std::string> hmac_hex(const NodeKey& key, const std::string& input) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), key.secret.data(), static_cast<int>(key.secret.size()),
           reinterpret_cast<const unsigned char*>(input.data()), input.size(), md,
           &len) == nullptr ||
      len != kMacBytes) {
    return fail("seal: HMAC-SHA256 failed");
  }
  return to_hex(md, len);
}

std::unexpected<Error> refuse(std::string why) {
  return std::unexpected(Error("seal: " + why + ": not restored", EBADMSG));
}

}  // namespace

Result<std::string> seal_manifest(Manifest m, const NodeKey& key) {
  m.format_version = kManifestFormatVersion;
  m.seal = {};
  // Through text and back: the MAC covers what a reader will parse, not the in-memory form.
  auto doc = nlohmann::json::parse(
      nlohmann::json(m).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  auto mac = hmac_hex(key, mac_input(doc, key.id));
  if (!mac) return std::unexpected(mac.error());
  m.seal = {kSealAlgorithm, key.id, *mac};
  return serialize_manifest(m);
}

Result<Manifest> open_sealed_manifest(std::string_view text, const Keyring& keys) {
  auto doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) return refuse("manifest is not a JSON object");
  auto version = doc.find("format_version");
  if (version == doc.end() || !version->is_number_integer()) {
    return refuse("manifest has no format version");
  }
  if (version->get<int64_t>() < 2) {
    return refuse(fmt::format("unsealed checkpoint (manifest format {}, written before sealing)",
                              version->get<int64_t>()));
  }
  auto seal = doc.find("seal");
  if (seal == doc.end() || !seal->is_object()) return refuse("unsealed checkpoint (no seal)");
  auto field = [&](const char* name) -> std::string {
    auto it = seal->find(name);
    return it != seal->end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  std::string alg = field("alg"), key_id = field("key_id"), mac = field("mac");
  if (alg != kSealAlgorithm) return refuse(fmt::format("unknown seal algorithm \"{}\"", alg));
  if (mac.size() != 2 * kMacBytes) return refuse("malformed MAC");
  const NodeKey* key = keys.find(key_id);
  if (key == nullptr) {
    return refuse(fmt::format(
        "sealed with key \"{}\", which this node does not hold (another node's key, or removed)",
        key_id));
  }
  auto want = hmac_hex(*key, mac_input(doc, key_id));
  if (!want) return std::unexpected(want.error());
  if (CRYPTO_memcmp(want->data(), mac.data(), want->size()) != 0) {
    return refuse(
        fmt::format("MAC does not match (manifest altered after it was sealed with {})", key_id));
  }
  auto m = parse_manifest_json(doc);
  if (!m) return std::unexpected(Error(m.error().message(), EBADMSG));
  return m;
}

}  // namespace arch
