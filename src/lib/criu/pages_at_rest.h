// PagesAtRest: how a container checkpoint whose pages came through ARCH's page receiver
// (criu/page_receiver.h) records them in its sealed manifest, and how a restore reads them.
//
// Streamed (stored plain): images/pages-N.img is an ordinary listed file with its chunk
// digests (computed as the pages passed), restored like any checkpoint.
// Encrypted: images/pages-N.img.arch is listed with its stored size and SHA-256, the
// manifest's "encryption" names the checkpoint's stream id (store/image_stream.h: the key
// of each image derives from the node key, the stream id and the image name), and
// extra.pages_at_rest records each plaintext pages image: {"mode": "encrypted",
// "images": {"pages-N.img": {"size": bytes, "chunk_size": 1048576, "sha256": [per chunk]}}}.
// Such a checkpoint is restored only lazily through ARCH's page server: its pages are
// decrypted and authenticated chunk by chunk in memory (store/image_stream.h:
// ImageStreamReader) and checked against the sealed chunk digests before any byte is
// served; no decrypted copy is written (the chunks CRIU's restore reads itself go into the
// restore's private sparse images, as for every lazy restore: stacks, shared memory).
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/error.h"
#include "criu/lazy_page_server.h"
#include "criu/page_receiver.h"
#include "store/manifest.h"
#include "store/node_key.h"

namespace arch {

/// The manifest's extra.pages_at_rest of a dump received encrypted.
nlohmann::json pages_at_rest_record(const std::vector<ReceivedPagesImage>& pages);
/// The listed files (and, stored plain, chunk digests) of what the receiver wrote into
/// images/: merged into the manifest so the commit does not read them again.
void add_received_files(Manifest& m, const PageReceiverResult& received);

/// Whether the checkpoint's pages are encrypted at rest (extra.pages_at_rest).
bool has_encrypted_pages(const Manifest& m);

/// The manifest a lazy restore serves from (ServedPages::manifest): the encrypted pages
/// images listed as their plaintext pages-N.img with the sealed chunk digests. Fails when
/// the record does not match the listed files.
Result<Manifest> served_manifest(const Manifest& m);

/// ServedPages::page_source for an encrypted checkpoint at `checkpoint`: each pages image
/// read from images/<name>.arch through an ImageStreamReader. The file is opened on first
/// use in each process (the page server is forked and keeps only its own fds).
std::function<Result<PageChunkSource>(const std::string& name)> encrypted_page_source(
    const std::string& checkpoint, const Manifest& m, std::shared_ptr<const Keyring> keys);

}  // namespace arch
