// Passing file descriptors between processes over unix sockets (SCM_RIGHTS), for the fd store that
// keeps deviced's /dev/fuse and loop descriptors alive across its restarts: our holder process
// (SOCK_SEQPACKET, one request or reply per message) and systemd's notify socket (datagrams).
#pragma once

#include <string>
#include <vector>

#include "util/status.h"
#include "util/unique_fd.h"

namespace obd {

// At most this many descriptors travel in one message (a device needs two; clones add a few).
constexpr size_t kMaxPassedFds = 64;
constexpr size_t kMaxFdMessage = 4096;

struct FdMessage {
  std::string text;
  std::vector<UniqueFd> fds;  // received descriptors, close-on-exec
};

// One message: `text` as the payload, `fds` (borrowed, not closed) as SCM_RIGHTS.
Status sendWithFds(int sock, const std::string& text, const std::vector<int>& fds);
// Waits up to timeoutMs (-1: forever) for one message. ETIMEDOUT when none came; ECONNRESET at EOF.
Result<FdMessage> recvWithFds(int sock, int timeoutMs);

Result<UniqueFd> connectSeqpacket(const std::string& path);
Result<UniqueFd> listenSeqpacket(const std::string& path);
// A listening SOCK_STREAM socket: what a systemd .socket unit hands a socket-activated service.
Result<UniqueFd> listenStream(const std::string& path);
Result<UniqueFd> bindDatagram(const std::string& path);
// systemd's sd_notify: one datagram to $NOTIFY_SOCKET (a path, or "@name" in the abstract namespace).
Status notifyDatagram(const std::string& socketPath, const std::string& text, const std::vector<int>& fds);

}  // namespace obd
