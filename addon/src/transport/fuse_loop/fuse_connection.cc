#include "transport/fuse_loop/fuse_connection.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>

#include "transport/fuse_loop/fuse_protocol.h"

namespace obd {

namespace {
constexpr int32_t kNotifyResend = 7;  // enum fuse_notify_code (7.40); Debian's <linux/fuse.h> predates it
}

Result<UniqueFd> mountFuse(const std::string& dir, const std::string& source, const std::string& subtype) {
  UniqueFd fd(::open("/dev/fuse", O_RDWR | O_CLOEXEC));
  if (!fd.valid()) return SysError("/dev/fuse: open (is the fuse module loaded?)");
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) return SysError(dir + ": stat");
  char opts[128];
  std::snprintf(opts, sizeof opts, "fd=%d,rootmode=%o,user_id=0,group_id=0", fd.get(), st.st_mode & S_IFMT);
  if (::mount(source.c_str(), dir.c_str(), ("fuse." + subtype).c_str(), MS_NOSUID | MS_NODEV, opts) != 0)
    return SysError(dir + ": FUSE mount (are we root?)");
  return Result<UniqueFd>(std::move(fd));
}

Status notifyResend(int fuseFd) {
  struct {
    uint32_t len;
    int32_t error;
    uint64_t unique;
  } out{16, kNotifyResend, 0};  // a bare fuse_out_header: unique 0 marks a notification, error its code
  for (;;) {
    if (::write(fuseFd, &out, sizeof out) == static_cast<ssize_t>(sizeof out)) return Status::Ok();
    if (errno != EINTR) return SysError("FUSE_NOTIFY_RESEND");
  }
}

Status notifyInvalInode(int fuseFd, uint64_t ino) {
  struct {
    fuse_out_header h;
    fuse_notify_inval_inode_out arg;
  } out{};
  out.h.len = sizeof out;
  out.h.error = FUSE_NOTIFY_INVAL_INODE;
  out.arg.ino = ino;
  out.arg.off = 0;
  out.arg.len = -1;  // to the end of the file
  for (;;) {
    if (::write(fuseFd, &out, sizeof out) == static_cast<ssize_t>(sizeof out)) return Status::Ok();
    if (errno != EINTR) return SysError("FUSE_NOTIFY_INVAL_INODE");
  }
}

}  // namespace obd
