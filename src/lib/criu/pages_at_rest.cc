// PagesAtRest: the manifest record of received pages images and the decrypting page source.
#include "criu/pages_at_rest.h"

#include <fcntl.h>
#include <fmt/core.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <mutex>

#include "base/file_util.h"
#include "store/image_stream.h"

namespace arch {

nlohmann::json pages_at_rest_record(const std::vector<ReceivedPagesImage>& pages) {
  nlohmann::json images = nlohmann::json::object();
  for (const auto& p : pages) {
    images[p.name] = {
        {"size", p.size}, {"chunk_size", kPagesChunkSize}, {"sha256", p.chunk_sha256}};
  }
  return {{"mode", "encrypted"}, {"images", std::move(images)}};
}

void add_received_files(Manifest& m, const PageReceiverResult& received) {
  for (const auto& p : received.pages) {
    std::string path = "images/" + p.stored;
    m.files.push_back({path, p.stored_size, p.stored_sha256});
    if (p.stored == p.name) m.chunks[path] = {kPagesChunkSize, p.chunk_sha256};
  }
}

bool has_encrypted_pages(const Manifest& m) {
  return m.extra.is_object() && m.extra.contains("pages_at_rest") &&
         m.extra["pages_at_rest"].is_object() &&
         m.extra["pages_at_rest"].value("mode", "") == "encrypted";
}

Result<Manifest> served_manifest(const Manifest& m) {
  if (!has_encrypted_pages(m)) return m;
  if (manifest_stream_id(m).empty())
    return fail("encrypted pages: the manifest names no stream id");
  const auto& images = m.extra["pages_at_rest"]["images"];
  if (!images.is_object()) return fail("encrypted pages: malformed record");
  Manifest out = m;
  out.files.clear();
  std::size_t matched = 0;
  for (const auto& f : m.files) {
    if (!f.path.starts_with("images/") || !f.path.ends_with(kImageStreamSuffix)) {
      out.files.push_back(f);
      continue;
    }
    std::string name = f.path.substr(7, f.path.size() - 7 - kImageStreamSuffix.size());
    std::string plain = "images/" + name;
    if (!is_pages_image_path(plain) || !images.contains(name))
      return fail("encrypted pages: " + f.path + " is not recorded");
    try {
      const auto& r = images[name];
      FileChunks c{r.at("chunk_size").get<uint64_t>(),
                   r.at("sha256").get<std::vector<std::string>>()};
      uint64_t size = r.at("size").get<uint64_t>();
      if (c.size != kPagesChunkSize || c.sha256.size() != (size + c.size - 1) / c.size)
        return fail("encrypted pages: " + name + ": chunk digests do not cover its size");
      // The stored file's own digest stays unused here: every chunk is authenticated.
      out.files.push_back({plain, size, f.sha256});
      out.chunks[plain] = std::move(c);
      ++matched;
    } catch (const nlohmann::json::exception& e) {
      return fail("encrypted pages: " + name + ": " + e.what());
    }
  }
  if (matched != images.size()) return fail("encrypted pages: a recorded image is not listed");
  std::sort(out.files.begin(), out.files.end(),
            [](const ManifestFile& a, const ManifestFile& b) { return a.path < b.path; });
  return out;
}

namespace {

// One encrypted pages image, opened lazily in whichever process reads it (the page server
// is forked after the first reads and closes every fd it was not given).
struct EncryptedPages {
  std::string path, stream_id, name;
  std::shared_ptr<const Keyring> keys;
  std::mutex mutex;
  // Per process: a reader inherited across the fork is never used nor destroyed there (its
  // fd number may already belong to something else; the forked server never returns).
  std::map<pid_t, ImageStreamReader> readers;

  Result<std::vector<char>> read(uint64_t offset, std::size_t len) {
    std::lock_guard held(mutex);
    pid_t self = ::getpid();
    auto it = readers.find(self);
    if (it == readers.end()) {
      auto fd = open_file(path, O_RDONLY | O_NOFOLLOW);
      if (!fd) return std::unexpected(fd.error());
      auto r = ImageStreamReader::open(std::move(*fd), *keys, stream_id, name);
      if (!r) return std::unexpected(r.error());
      it = readers.emplace(self, std::move(*r)).first;
    }
    return it->second.read(offset, len);
  }
};

}  // namespace

std::function<Result<PageChunkSource>(const std::string& name)> encrypted_page_source(
    const std::string& checkpoint, const Manifest& m, std::shared_ptr<const Keyring> keys) {
  std::string stream_id = manifest_stream_id(m);
  return [checkpoint, stream_id, keys](const std::string& name) -> Result<PageChunkSource> {
    if (!keys) return fail("encrypted pages: no node keys to read them");
    auto pages = std::make_shared<EncryptedPages>();
    pages->path = checkpoint + "/images/" + name + std::string(kImageStreamSuffix);
    pages->stream_id = stream_id;
    pages->name = name;
    pages->keys = keys;
    return PageChunkSource(
        [pages](uint64_t offset, std::size_t len) { return pages->read(offset, len); });
  };
}

}  // namespace arch
