#include "transport/tcmu/kernel.h"

#include <dirent.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "util/unique_fd.h"

extern char** environ;

namespace obd::tcmu {

namespace {

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\0')) s.pop_back();
  return s;
}

class RealSysFs : public SysFs {
 public:
  bool exists(const std::string& p) override {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0;
  }
  Status mkdir(const std::string& p) override {
    return ::mkdir(p.c_str(), 0755) == 0 ? Status::Ok() : SysError("mkdir " + p);
  }
  Status rmdir(const std::string& p) override {
    return ::rmdir(p.c_str()) == 0 ? Status::Ok() : SysError("rmdir " + p);
  }
  Status unlink(const std::string& p) override {
    return ::unlink(p.c_str()) == 0 ? Status::Ok() : SysError("unlink " + p);
  }
  Status symlink(const std::string& target, const std::string& link) override {
    return ::symlink(target.c_str(), link.c_str()) == 0 ? Status::Ok() : SysError("symlink " + link);
  }
  Result<std::string> readlink(const std::string& p) override {
    char buf[4096];
    ssize_t n = ::readlink(p.c_str(), buf, sizeof buf - 1);
    if (n < 0) return SysError("readlink " + p);
    return std::string(buf, size_t(n));
  }
  Result<std::string> read(const std::string& path) override {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return SysError("open " + path);
    std::string out;
    char buf[4096];
    for (;;) {
      ssize_t n = ::read(fd.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return SysError("read " + path);
      if (n == 0) break;
      out.append(buf, size_t(n));
    }
    return trim(out);
  }
  Status write(const std::string& path, const std::string& value) override {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd.valid()) return SysError("open " + path);
    ssize_t n;
    do {
      n = ::write(fd.get(), value.data(), value.size());
    } while (n < 0 && errno == EINTR);
    if (n < 0) return SysError("write '" + value + "' to " + path);
    if (size_t(n) != value.size()) return IoError("short write to " + path);
    return Status::Ok();
  }
  std::vector<std::string> list(const std::string& dir) override {
    std::vector<std::string> out;
    if (DIR* d = ::opendir(dir.c_str())) {
      while (dirent* e = ::readdir(d))
        if (e->d_name[0] != '.') out.push_back(e->d_name);
      ::closedir(d);
    }
    return out;
  }
  Status mknod(const std::string& p, bool block, unsigned maj, unsigned min) override {
    if (::mknod(p.c_str(), (block ? S_IFBLK : S_IFCHR) | 0600, makedev(maj, min)) == 0 || errno == EEXIST)
      return Status::Ok();
    return SysError("mknod " + p);
  }
  Status mountConfigfs(const std::string& at) override {
    return ::mount("configfs", at.c_str(), "configfs", 0, nullptr) == 0 ? Status::Ok() : SysError("mount configfs on " + at);
  }
  bool configfsMounted(const std::string& at) override {
    auto mounts = read("/proc/self/mounts");
    return mounts.ok() && mounts.value().find(" " + at + " configfs ") != std::string::npos;
  }
  std::string modprobe(const std::string& module) override {
    std::string arg0 = "modprobe", arg1 = "-q", arg2 = module;
    char* argv[] = {arg0.data(), arg1.data(), arg2.data(), nullptr};
    pid_t pid;
    int rc = ::posix_spawnp(&pid, "modprobe", nullptr, nullptr, argv, environ);
    if (rc != 0) return std::string("cannot run modprobe: ") + std::strerror(rc);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return "";
    return "`modprobe " + module + "` failed (exit " + std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) + ")";
  }
};

// A kernel piece: the module that provides it, its config, and paths any of which proves it is there
// (built-in code has no /sys/module entry unless it has parameters, hence the alternatives).
struct Piece {
  const char* module;
  const char* config;
  std::vector<std::string> probes;
  bool present(SysFs& fs) const {
    for (const std::string& p : probes)
      if (fs.exists(p)) return true;
    return false;
  }
};

std::string joinErr(const std::string& a, const std::string& b) { return a.empty() ? b : a + "; " + b; }

Status mkdirIfMissing(SysFs& fs, const std::string& p) {
  Status st = fs.mkdir(p);
  return st.code() == EEXIST ? Status::Ok() : st;
}

std::string hbaPath(const SysPaths& paths, uint32_t hba) { return paths.core() + "/user_" + std::to_string(hba); }
std::string corePath(const SysPaths& paths, const BackstoreSpec& spec) {
  return hbaPath(paths, spec.hba) + "/" + spec.name;
}

std::string loopbackWwn(const BackstoreSpec& spec) {
  if (!spec.loopbackWwn.empty()) return spec.loopbackWwn;
  // 16 decimal digits derived from hba and name: stable for the same pair.
  uint64_t h = 1469598103934665603ull;
  for (char c : std::to_string(spec.hba) + "/" + spec.name) h = (h ^ uint8_t(c)) * 1099511628211ull;
  char buf[32];
  std::snprintf(buf, sizeof buf, "naa.5%015llu", static_cast<unsigned long long>(h % 1000000000000000ull));
  return buf;
}

// /dev/<name> for a sysfs device with a "dev" file (major:minor); created if udev has not yet.
Result<std::string> devNode(const SysPaths& paths, const std::string& sysDir, const std::string& name, bool block) {
  std::string node = paths.dev(name);
  if (paths.fs->exists(node)) return node;
  auto mm = paths.fs->read(sysDir + "/dev");
  if (!mm.ok()) return mm.status();
  unsigned maj = 0, min = 0;
  if (std::sscanf(mm.value().c_str(), "%u:%u", &maj, &min) != 2) return Corrupt(sysDir + "/dev: " + mm.value());
  OBD_RETURN_IF_ERROR(paths.fs->mknod(node, block, maj, min));
  return node;
}

template <typename Fn>
auto pollUntil(int timeoutMs, Fn fn) -> decltype(fn()) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
  for (;;) {
    auto r = fn();
    if (r.ok() || r.status().code() != EAGAIN || std::chrono::steady_clock::now() > deadline) return r;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace

SysFs& realSysFs() {
  static RealSysFs fs;
  return fs;
}

TcmuSupport checkTcmuSupport(bool loadModules, const SysPaths& paths) {
  SysFs& fs = *paths.fs;
  const Piece pieces[] = {
      {"target_core_mod", "CONFIG_TARGET_CORE", {paths.sys("module/target_core_mod"), paths.core()}},
      {"target_core_user", "CONFIG_TCM_USER2", {paths.sys("module/target_core_user")}},
      {"tcm_loop", "CONFIG_LOOPBACK_TARGET", {paths.sys("module/tcm_loop"), paths.loopback()}},
      {"uio", "CONFIG_UIO", {paths.sys("class/uio"), paths.sys("module/uio")}},
      {"sd_mod", "CONFIG_BLK_DEV_SD", {paths.sys("bus/scsi/drivers/sd"), paths.sys("module/sd_mod")}},
  };
  TcmuSupport out;
  std::string missing, tried;
  bool canModprobe = loadModules;
  for (const Piece& p : pieces) {
    if (p.present(fs)) continue;
    if (canModprobe) {
      std::string err = fs.modprobe(p.module);
      if (!err.empty()) tried = joinErr(tried, err);
      // Without a modprobe binary every further attempt fails the same way: say it once, after the
      // list of missing modules.
      if (err.rfind("cannot run modprobe", 0) == 0) canModprobe = false;
    }
    if (!p.present(fs)) missing += std::string(missing.empty() ? "" : ", ") + p.module + " (" + p.config + ")";
  }
  if (!missing.empty()) {
    out.reason = "kernel lacks " + missing + (tried.empty() ? "" : ": " + tried);
    return out;
  }
  if (!fs.exists(paths.configfs())) {
    out.reason = "kernel lacks configfs (CONFIG_CONFIGFS_FS): " + paths.configfs() + " is missing";
    return out;
  }
  if (!fs.exists(paths.target()) && !fs.configfsMounted(paths.configfs())) {
    Status st = loadModules ? fs.mountConfigfs(paths.configfs()) : Status(ENOENT, "not mounted");
    if (!st.ok()) {
      out.reason = "configfs is not mounted at " + paths.configfs() + " (" + st.message() + ")";
      return out;
    }
  }
  if (!fs.exists(paths.core())) {
    out.reason = "configfs has no target/core (" + paths.core() + "): target_core_mod is not registered";
    return out;
  }
  out.ok = true;
  return out;
}

std::string aciLoopbackWwn(uint64_t snapshotId, uint32_t hba) {
  const unsigned prefix = hba == kAciDefaultHba ? 199 : 100 + hba % 100;
  char buf[32];
  std::snprintf(buf, sizeof buf, "naa.%03u%013llu", prefix, static_cast<unsigned long long>(snapshotId % 10000000000000ull));
  return buf;
}

std::string uioName(const BackstoreSpec& spec) {
  std::string n = "tcm-user/" + std::to_string(spec.hba) + "/" + spec.name;
  if (!spec.cfgString.empty()) n += "/" + spec.cfgString;
  return n;
}

Status createBackstore(const SysPaths& paths, const BackstoreSpec& spec) {
  SysFs& fs = *paths.fs;
  if (spec.name.empty() || spec.name.find('/') != std::string::npos || spec.name[0] == '.')
    return InvalidArg("tcmu: bad device name '" + spec.name + "'");
  if (spec.cfgString.size() > 255) return InvalidArg("tcmu: dev_config longer than 255 bytes");
  if (spec.cfgString.find_first_of(",\n") != std::string::npos)
    return InvalidArg("tcmu: dev_config must not contain ',' or newline: " + spec.cfgString);
  const std::string dev = corePath(paths, spec);
  OBD_RETURN_IF_ERROR(mkdirIfMissing(fs, hbaPath(paths, spec.hba)));
  OBD_RETURN_IF_ERROR(fs.mkdir(dev));
  std::string control = "dev_config=" + spec.cfgString + ",dev_size=" + std::to_string(spec.sizeBytes) +
                        ",hw_block_size=" + std::to_string(spec.blockSize) + ",nl_reply_supported=-1";
  if (spec.maxDataAreaMb) control += ",max_data_area_mb=" + std::to_string(spec.maxDataAreaMb);
  Status st = fs.write(dev + "/control", control);
  // enable blocks only while a netlink reply is expected; nl_reply_supported=-1 says none will come.
  // EAGAIN (a netlink command of another device pending) is retried as ACI does.
  for (int i = 0; st.ok() && i < 100; i++) {
    st = fs.write(dev + "/enable", "1");
    if (st.code() != EAGAIN) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (st.ok() && spec.cmdTimeoutSec) st = fs.write(dev + "/attrib/cmd_time_out", std::to_string(spec.cmdTimeoutSec));
  if (!st.ok()) {
    fs.rmdir(dev);
    return st.wrap("tcmu: create backstore " + dev);
  }
  return Status::Ok();
}

Status removeBackstore(const SysPaths& paths, const BackstoreSpec& spec) {
  Status st = paths.fs->rmdir(corePath(paths, spec));
  return st.code() == ENOENT ? Status::Ok() : st;
}

bool backstoreExists(const SysPaths& paths, const BackstoreSpec& spec) { return paths.fs->exists(corePath(paths, spec)); }

std::vector<std::string> listBackstores(const SysPaths& paths, uint32_t hba) { return paths.fs->list(hbaPath(paths, hba)); }

std::string readUnitSerial(const SysPaths& paths, const BackstoreSpec& spec) {
  auto s = paths.fs->read(corePath(paths, spec) + "/wwn/vpd_unit_serial");
  if (!s.ok()) return spec.name;
  const std::string& v = s.value();
  auto at = v.find("Number: ");
  return at == std::string::npos ? v : v.substr(at + 8);
}

Result<UioDevice> findUioDevice(const SysPaths& paths, const BackstoreSpec& spec, int timeoutMs) {
  const std::string want = uioName(spec);
  const std::string cls = paths.sys("class/uio");
  return pollUntil(timeoutMs, [&]() -> Result<UioDevice> {
    for (const std::string& e : paths.fs->list(cls)) {
      if (e.compare(0, 3, "uio") != 0) continue;
      const std::string dir = cls + "/" + e;
      auto name = paths.fs->read(dir + "/name");
      if (!name.ok() || name.value() != want) continue;
      auto size = paths.fs->read(dir + "/maps/map0/size");
      if (!size.ok()) return size.status();
      UioDevice u;
      u.mapSize = std::strtoull(size.value().c_str(), nullptr, 0);  // "0x…"
      if (u.mapSize == 0) return Corrupt(dir + "/maps/map0/size: " + size.value());
      auto node = devNode(paths, dir, e, false);
      if (!node.ok()) return node.status();
      u.devPath = node.value();
      return u;
    }
    return Status(EAGAIN, "tcmu: no UIO device named '" + want + "' under " + cls);
  });
}

std::string findLoopbackTarget(const SysPaths& paths, const BackstoreSpec& spec) {
  const std::string want = "user_" + std::to_string(spec.hba) + "/" + spec.name;
  for (const std::string& naa : paths.fs->list(paths.loopback())) {
    auto target = paths.fs->readlink(paths.loopback() + "/" + naa + "/tpgt_1/lun/lun_0/" + spec.name);
    if (!target.ok()) continue;
    const std::string& t = target.value();
    if (t.size() >= want.size() && t.compare(t.size() - want.size(), want.size(), want) == 0) return naa;
  }
  return "";
}

Result<std::string> exportLoopbackLun(const SysPaths& paths, const BackstoreSpec& spec, int timeoutMs) {
  SysFs& fs = *paths.fs;
  const std::string existing = findLoopbackTarget(paths, spec);
  const std::string wwn = existing.empty() ? loopbackWwn(spec) : existing;
  const std::string tpg = paths.loopback() + "/" + wwn + "/tpgt_1";
  if (existing.empty()) {
    for (const std::string& d : {paths.loopback(), paths.loopback() + "/" + wwn, tpg, tpg + "/lun/lun_0"})
      OBD_RETURN_IF_ERROR(mkdirIfMissing(fs, d));
    auto nexus = fs.read(tpg + "/nexus");
    if (!nexus.ok() || nexus.value().empty() || nexus.value() == "(null)") OBD_RETURN_IF_ERROR(fs.write(tpg + "/nexus", wwn));
    Status st = fs.symlink(corePath(paths, spec), tpg + "/lun/lun_0/" + spec.name);
    if (!st.ok() && st.code() != EEXIST) return st;
  }
  auto address = fs.read(tpg + "/address");
  if (!address.ok()) return address.status();
  const std::string blockDir = paths.sys("class/scsi_device/" + address.value() + ":0/device/block");
  return pollUntil(timeoutMs, [&]() -> Result<std::string> {
    for (const std::string& disk : fs.list(blockDir)) return devNode(paths, paths.sys("block/" + disk), disk, true);
    return Status(EAGAIN, "tcmu: no disk appeared under " + blockDir + " (tcm_loop " + wwn + ")");
  });
}

Status removeLoopbackLun(const SysPaths& paths, const BackstoreSpec& spec) {
  SysFs& fs = *paths.fs;
  std::string wwn = findLoopbackTarget(paths, spec);
  if (wwn.empty()) wwn = loopbackWwn(spec);
  const std::string naa = paths.loopback() + "/" + wwn;
  const std::string tpg = naa + "/tpgt_1";
  if (!fs.exists(naa)) return Status::Ok();
  Status first;
  auto keep = [&first](Status st) {
    if (first.ok() && !st.ok() && st.code() != ENOENT) first = st;
  };
  keep(fs.unlink(tpg + "/lun/lun_0/" + spec.name));
  for (const std::string& d : {tpg + "/lun/lun_0", tpg, naa}) keep(fs.rmdir(d));
  return first;
}

Status removeStaleDevice(const SysPaths& paths, const BackstoreSpec& spec) {
  OBD_RETURN_IF_ERROR(removeLoopbackLun(paths, spec));
  return removeBackstore(paths, spec);
}

}  // namespace obd::tcmu
