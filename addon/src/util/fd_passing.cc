#include "util/fd_passing.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstddef>
#include <cstring>

namespace obd {

namespace {

Result<sockaddr_un> unixAddress(const std::string& path, socklen_t* len) {
  sockaddr_un a;
  std::memset(&a, 0, sizeof a);
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof a.sun_path) return InvalidArg("unix socket path \"" + path + "\": empty or too long");
  std::memcpy(a.sun_path, path.data(), path.size());
  if (path[0] == '@') a.sun_path[0] = '\0';  // abstract namespace (systemd may use it)
  *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + (path[0] == '@' ? 0 : 1));
  return a;
}

Result<UniqueFd> unixSocket(int type) {
  UniqueFd s(::socket(AF_UNIX, type | SOCK_CLOEXEC, 0));
  if (!s.valid()) return SysError("socket(AF_UNIX)");
  return Result<UniqueFd>(std::move(s));
}

}  // namespace

Status sendWithFds(int sock, const std::string& text, const std::vector<int>& fds) {
  if (fds.size() > kMaxPassedFds) return InvalidArg("too many descriptors in one message");
  if (text.size() > kMaxFdMessage) return InvalidArg("fd message too long");
  iovec iov{const_cast<char*>(text.data()), text.size()};
  char ctrl[CMSG_SPACE(sizeof(int) * kMaxPassedFds)];
  std::memset(ctrl, 0, sizeof ctrl);
  msghdr msg;
  std::memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (!fds.empty()) {
    msg.msg_control = ctrl;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  for (;;) {
    ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n >= 0) return Status::Ok();
    if (errno != EINTR) return SysError("sendmsg");
  }
}

Result<FdMessage> recvWithFds(int sock, int timeoutMs) {
  pollfd p{sock, POLLIN, 0};
  for (;;) {
    int r = ::poll(&p, 1, timeoutMs);
    if (r > 0) break;
    if (r == 0) return Status(ETIMEDOUT, "no message within " + std::to_string(timeoutMs) + " ms");
    if (errno != EINTR) return SysError("poll");
  }
  std::string buf(kMaxFdMessage, '\0');
  iovec iov{buf.data(), buf.size()};
  char ctrl[CMSG_SPACE(sizeof(int) * kMaxPassedFds)];
  msghdr msg;
  std::memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctrl;
  msg.msg_controllen = sizeof ctrl;
  ssize_t n;
  do n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) return SysError("recvmsg");
  FdMessage out;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; i++) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      out.fds.emplace_back(fd);
    }
  }
  if (n == 0 && out.fds.empty()) return Status(ECONNRESET, "peer closed the connection");
  if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) return Status(EMSGSIZE, "fd message truncated");
  buf.resize(static_cast<size_t>(n));
  out.text = std::move(buf);
  return Result<FdMessage>(std::move(out));
}

Result<UniqueFd> connectSeqpacket(const std::string& path) {
  socklen_t len;
  auto a = unixAddress(path, &len);
  if (!a.ok()) return a.status();
  auto s = unixSocket(SOCK_SEQPACKET);
  if (!s.ok()) return s.status();
  if (::connect(s.value().get(), reinterpret_cast<sockaddr*>(&a.value()), len) != 0) return SysError(path + ": connect");
  return s;
}

namespace {
Result<UniqueFd> listenUnix(const std::string& path, int type) {
  socklen_t len;
  auto a = unixAddress(path, &len);
  if (!a.ok()) return a.status();
  auto s = unixSocket(type);
  if (!s.ok()) return s.status();
  if (::bind(s.value().get(), reinterpret_cast<sockaddr*>(&a.value()), len) != 0) return SysError(path + ": bind");
  if (::listen(s.value().get(), 128) != 0) return SysError(path + ": listen");
  return s;
}
}  // namespace

Result<UniqueFd> listenSeqpacket(const std::string& path) { return listenUnix(path, SOCK_SEQPACKET); }

Result<UniqueFd> listenStream(const std::string& path) { return listenUnix(path, SOCK_STREAM); }

Result<UniqueFd> bindDatagram(const std::string& path) {
  socklen_t len;
  auto a = unixAddress(path, &len);
  if (!a.ok()) return a.status();
  auto s = unixSocket(SOCK_DGRAM);
  if (!s.ok()) return s.status();
  if (::bind(s.value().get(), reinterpret_cast<sockaddr*>(&a.value()), len) != 0) return SysError(path + ": bind");
  return s;
}

Status notifyDatagram(const std::string& socketPath, const std::string& text, const std::vector<int>& fds) {
  socklen_t len;
  auto a = unixAddress(socketPath, &len);
  if (!a.ok()) return a.status();
  auto s = unixSocket(SOCK_DGRAM);
  if (!s.ok()) return s.status();
  if (::connect(s.value().get(), reinterpret_cast<sockaddr*>(&a.value()), len) != 0)
    return SysError("NOTIFY_SOCKET " + socketPath + ": connect");
  return sendWithFds(s.value().get(), text, fds).wrap("NOTIFY_SOCKET " + socketPath);
}

}  // namespace obd
