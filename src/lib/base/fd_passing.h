// Passing one file descriptor over a unix socket (SCM_RIGHTS with one byte of data), as
// CRIU's image streamer protocol and ARCH's page server hand-over do.
#pragma once

#include "base/error.h"
#include "base/unique_fd.h"

namespace arch {

/// Sends `fd` over `sock` with one byte of data.
Result<void> send_fd(int sock, int fd);
/// The descriptor that came over `sock` (received close-on-exec); an invalid UniqueFd when
/// the peer closed the socket; an error when a message came without exactly one fd.
Result<UniqueFd> receive_fd(int sock);

}  // namespace arch
