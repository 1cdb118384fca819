// `tcmu_sim_test --serve <file> <size-MiB> [--read-only]`: serves a sparse file as a real TCMU device
// (needs target_core_user + tcm_loop). Prints "unsupported: <reason>" and exits 77 when the kernel
// lacks TCMU; otherwise "device <path>", then serves until stdin closes, tears down, prints "closed".
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "io/file.h"
#include "transport/tcmu/tcmu_device.h"
#include "util/unique_fd.h"

using namespace obd;

namespace {

class FileDisk : public BlockDevice {
 public:
  FileDisk(UniqueFd fd, uint64_t size, bool ro) : fd_(std::move(fd)), size_(size), ro_(ro) {}
  uint64_t size() const override { return size_; }
  bool readOnly() const override { return ro_; }
  void readAsync(void* buf, size_t n, uint64_t off, IoCallback cb) override {
    ssize_t r = ::pread(fd_.get(), buf, n, off_t(off));
    if (r >= 0 && size_t(r) < n) std::memset(static_cast<char*>(buf) + r, 0, n - size_t(r));
    cb(r < 0 ? SysError("pread") : Status::Ok());
  }
  Status write(const void* buf, size_t n, uint64_t off) override {
    if (ro_) return Status(EROFS, "read-only");
    return ::pwrite(fd_.get(), buf, n, off_t(off)) == ssize_t(n) ? Status::Ok() : SysError("pwrite");
  }
  Status discard(uint64_t off, uint64_t n) override {
    return ::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off_t(off), off_t(n)) == 0
               ? Status::Ok() : SysError("punch hole");
  }
  Status flush() override { return ::fdatasync(fd_.get()) == 0 ? Status::Ok() : SysError("fdatasync"); }

 private:
  UniqueFd fd_;
  uint64_t size_;
  bool ro_;
};

}  // namespace

int serveMain(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s --serve <file> <size-MiB> [--read-only]\n", argv[0]);
    return 2;
  }
  const bool ro = argc > 4 && std::strcmp(argv[4], "--read-only") == 0;
  tcmu::TcmuSupport support = tcmu::checkTcmuSupport(true);
  if (!support.ok) {
    std::printf("unsupported: %s\n", support.reason.c_str());
    return 77;
  }
  const uint64_t size = std::strtoull(argv[3], nullptr, 10) << 20;
  UniqueFd fd(::open(argv[2], O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd.valid() || ::ftruncate(fd.get(), off_t(size)) != 0) {
    std::perror(argv[2]);
    return 1;
  }
  tcmu::TcmuDeviceOptions opts;
  opts.backstore.name = "obdtest_" + std::to_string(::getpid());
  opts.backstore.cfgString = std::string("obd/") + argv[2];
  auto dev = tcmu::TcmuDevice::create(opts, std::make_shared<FileDisk>(std::move(fd), size, ro));
  if (!dev.ok()) {
    std::printf("error: %s\n", dev.status().message().c_str());
    return 1;
  }
  // SIGTERM/SIGINT end the wait below like EOF does, so the device is still torn down.
  struct sigaction sa = {};
  sa.sa_handler = [](int) { ::close(0); };
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  std::printf("device %s\n", dev.value()->devicePath().c_str());
  std::fflush(stdout);
  char buf[64];
  while (::read(0, buf, sizeof buf) > 0) {
  }
  auto stats = dev.value()->stats();
  Status st = dev.value()->close();
  std::printf("commands %llu\n", static_cast<unsigned long long>(stats.ring.commands));
  if (!st.ok()) {
    std::printf("error: close: %s\n", st.message().c_str());
    return 1;
  }
  std::printf("closed\n");
  return 0;
}
