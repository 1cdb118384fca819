// obd-fd-holder: keeps deviced's /dev/fuse and loop descriptors open while deviced restarts or
// crashes, so the kernel never sees their last close (which would abort the FUSE connection and
// autoclear the loop device). deviced starts it (or finds it running) and talks to it over a
// SOCK_SEQPACKET unix socket, one message per request, descriptors as SCM_RIGHTS:
//   "PUT <name>" + fds  keep these (replacing what <name> held)   → "OK"
//   "DEL <name>"        close what <name> holds                   → "OK"
//   "GET"               one "FD <name>" + fds per entry, then "END"
// It holds no other state, does no I/O on what it holds, and exits once it holds nothing and no
// client is connected, removing its socket: detaching every device leaves nothing behind.
//
// Usage: obd-fd-holder <socket path>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "util/fd_passing.h"

namespace {

using obd::UniqueFd;

constexpr int kIdleExitMs = 10000;  // a holder nobody ever connected to gives up after this

struct Holder {
  std::map<std::string, std::vector<UniqueFd>> entries;
  std::vector<UniqueFd> clients;
  bool hadClient = false;
};

void reply(int sock, const std::string& text) { (void)obd::sendWithFds(sock, text, {}); }

// Returns false when the client is gone.
bool serveOne(Holder& h, int sock) {
  auto m = obd::recvWithFds(sock, 0);
  if (!m.ok()) return m.status().code() == ETIMEDOUT;
  const std::string& t = m.value().text;
  if (t.rfind("PUT ", 0) == 0 && t.size() > 4) {
    h.entries[t.substr(4)] = std::move(m.value().fds);
    reply(sock, "OK");
  } else if (t.rfind("DEL ", 0) == 0) {
    h.entries.erase(t.substr(4));
    reply(sock, "OK");
  } else if (t == "GET") {
    for (const auto& [name, fds] : h.entries) {
      std::vector<int> raw;
      for (const auto& f : fds) raw.push_back(f.get());
      if (!obd::sendWithFds(sock, "FD " + name, raw).ok()) return false;
    }
    reply(sock, "END");
  } else {
    reply(sock, "ERR unknown request");
  }
  return true;
}

bool stillOurs(const std::string& path, const struct stat& own) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && st.st_ino == own.st_ino && st.st_dev == own.st_dev;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: obd-fd-holder <socket path>\n");
    return 2;
  }
  const std::string path = argv[1];
  ::signal(SIGPIPE, SIG_IGN);
  ::signal(SIGHUP, SIG_IGN);
  ::signal(SIGINT, SIG_IGN);  // a ^C meant for a foreground deviced must not drop the connections
  std::ofstream("/proc/self/oom_score_adj") << "-1000";  // best effort: losing it loses every device
  (void)!::chdir("/");
  ::umask(0177);
  ::unlink(path.c_str());  // deviced starts us only when nothing answers on it
  auto listener = obd::listenSeqpacket(path);
  if (!listener.ok()) {
    std::fprintf(stderr, "obd-fd-holder: %s\n", listener.status().message().c_str());
    return 1;
  }
  struct stat own;
  ::stat(path.c_str(), &own);
  Holder h;
  for (;;) {
    std::vector<pollfd> fds{{listener.value().get(), POLLIN, 0}};
    for (const auto& c : h.clients) fds.push_back({c.get(), POLLIN, 0});
    int r = ::poll(fds.data(), fds.size(), h.hadClient ? -1 : kIdleExitMs);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;  // nobody came
    if (fds[0].revents & POLLIN) {
      UniqueFd c(::accept4(listener.value().get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (c.valid()) {
        h.clients.push_back(std::move(c));
        h.hadClient = true;
      }
    }
    for (size_t i = fds.size() - 1; i >= 1; i--) {
      if (!fds[i].revents) continue;
      if (!serveOne(h, fds[i].fd)) h.clients.erase(h.clients.begin() + static_cast<long>(i - 1));
    }
    if (h.entries.empty() && h.clients.empty()) break;
  }
  if (stillOurs(path, own)) ::unlink(path.c_str());
  return 0;
}
