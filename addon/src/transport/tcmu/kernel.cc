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

bool exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\0')) s.pop_back();
  return s;
}

// Runs `modprobe -q <module>`; returns "" on success or what went wrong.
std::string modprobe(const std::string& module) {
  std::string arg0 = "modprobe", arg1 = "-q";
  std::string arg2 = module;
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

bool configfsMounted(const SysPaths& paths) {
  auto mounts = readSysfs("/proc/self/mounts");
  if (!mounts.ok()) return exists(paths.target());
  return mounts.value().find(" " + paths.configfs() + " configfs ") != std::string::npos || exists(paths.target());
}

// A kernel piece: the module that provides it, its config, and paths any of which proves it is there
// (built-in code has no /sys/module entry unless it has parameters, hence the alternatives).
struct Piece {
  const char* module;
  const char* config;
  std::vector<std::string> probes;
  bool present() const {
    for (const std::string& p : probes)
      if (exists(p)) return true;
    return false;
  }
};

std::string joinErr(const std::string& a, const std::string& b) { return a.empty() ? b : a + "; " + b; }

Status mkdirIfMissing(const std::string& p) {
  if (::mkdir(p.c_str(), 0755) == 0 || errno == EEXIST) return Status::Ok();
  return SysError("mkdir " + p);
}

std::string corePath(const SysPaths& paths, const BackstoreSpec& spec) {
  return paths.core() + "/user_" + std::to_string(spec.hba) + "/" + spec.name;
}

std::string loopbackWwn(const BackstoreSpec& spec) {
  if (!spec.loopbackWwn.empty()) return spec.loopbackWwn;
  // Derive 16 decimal digits from hba and name, stable for the same pair.
  uint64_t h = 1469598103934665603ull;
  for (char c : std::to_string(spec.hba) + "/" + spec.name) h = (h ^ uint8_t(c)) * 1099511628211ull;
  char buf[32];
  std::snprintf(buf, sizeof buf, "naa.5%015llu", static_cast<unsigned long long>(h % 1000000000000000ull));
  return buf;
}

std::vector<std::string> listDir(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') out.push_back(e->d_name);
    ::closedir(d);
  }
  return out;
}

// /dev/<name> for a sysfs device with a "dev" file (major:minor); created if udev has not yet.
Result<std::string> devNode(const SysPaths& paths, const std::string& sysDir, const std::string& name, bool block) {
  std::string node = paths.dev(name);
  if (exists(node)) return node;
  auto mm = readSysfs(sysDir + "/dev");
  if (!mm.ok()) return mm.status();
  unsigned maj = 0, min = 0;
  if (std::sscanf(mm.value().c_str(), "%u:%u", &maj, &min) != 2) return Corrupt(sysDir + "/dev: " + mm.value());
  if (::mknod(node.c_str(), (block ? S_IFBLK : S_IFCHR) | 0600, makedev(maj, min)) != 0 && errno != EEXIST)
    return SysError("mknod " + node);
  return node;
}

}  // namespace

Result<std::string> readSysfs(const std::string& path) {
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

Status writeSysfs(const std::string& path, const std::string& value) {
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

TcmuSupport checkTcmuSupport(bool loadModules, const SysPaths& paths) {
  const Piece pieces[] = {
      {"target_core_mod", "CONFIG_TARGET_CORE", {paths.sys("module/target_core_mod"), paths.core()}},
      {"target_core_user", "CONFIG_TCM_USER2", {paths.sys("module/target_core_user")}},
      {"tcm_loop", "CONFIG_LOOPBACK_TARGET", {paths.sys("module/tcm_loop"), paths.loopback()}},
      {"uio", "CONFIG_UIO", {paths.sys("class/uio"), paths.sys("module/uio")}},
      {"sd_mod", "CONFIG_BLK_DEV_SD", {paths.sys("bus/scsi/drivers/sd"), paths.sys("module/sd_mod")}},
  };
  TcmuSupport out;
  std::string missing, tried;
  for (const Piece& p : pieces) {
    if (p.present()) continue;
    if (loadModules) {
      std::string err = modprobe(p.module);
      if (!err.empty()) tried = joinErr(tried, err);
    }
    if (!p.present()) missing += std::string(missing.empty() ? "" : ", ") + p.module + " (" + p.config + ")";
  }
  if (!missing.empty()) {
    out.reason = "kernel lacks " + missing + (tried.empty() ? "" : ": " + tried);
    return out;
  }
  if (!exists(paths.configfs())) {
    out.reason = "kernel lacks configfs (CONFIG_CONFIGFS_FS): " + paths.configfs() + " is missing";
    return out;
  }
  if (!configfsMounted(paths)) {
    if (loadModules && ::mount("configfs", paths.configfs().c_str(), "configfs", 0, nullptr) != 0) {
      out.reason = "configfs is not mounted at " + paths.configfs() + " and mounting it failed: " + std::strerror(errno);
      return out;
    }
    if (!loadModules) {
      out.reason = "configfs is not mounted at " + paths.configfs();
      return out;
    }
  }
  if (!exists(paths.core())) {
    out.reason = "configfs has no target/core (" + paths.core() + "): target_core_mod is not registered";
    return out;
  }
  out.ok = true;
  return out;
}

std::string aciLoopbackWwn(uint64_t snapshotId) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "naa.199%013llu", static_cast<unsigned long long>(snapshotId % 10000000000000ull));
  return buf;
}

std::string uioName(const BackstoreSpec& spec) {
  std::string n = "tcm-user/" + std::to_string(spec.hba) + "/" + spec.name;
  if (!spec.cfgString.empty()) n += "/" + spec.cfgString;
  return n;
}

Status createBackstore(const SysPaths& paths, const BackstoreSpec& spec) {
  if (spec.name.empty() || spec.name.find('/') != std::string::npos) return InvalidArg("tcmu: bad device name '" + spec.name + "'");
  if (spec.cfgString.size() > 255) return InvalidArg("tcmu: dev_config longer than 255 bytes");
  if (spec.cfgString.find_first_of(",\n") != std::string::npos)
    return InvalidArg("tcmu: dev_config must not contain ',' or newline: " + spec.cfgString);
  const std::string hba = paths.core() + "/user_" + std::to_string(spec.hba);
  const std::string dev = corePath(paths, spec);
  OBD_RETURN_IF_ERROR(mkdirIfMissing(hba));
  if (::mkdir(dev.c_str(), 0755) != 0) return SysError("mkdir " + dev);
  std::string control = "dev_config=" + spec.cfgString + ",dev_size=" + std::to_string(spec.sizeBytes) +
                        ",hw_block_size=" + std::to_string(spec.blockSize) + ",nl_reply_supported=-1";
  if (spec.maxDataAreaMb) control += ",max_data_area_mb=" + std::to_string(spec.maxDataAreaMb);
  Status st = writeSysfs(dev + "/control", control);
  // The kernel blocks enable only while a netlink reply is expected; nl_reply_supported=-1 says none is.
  for (int i = 0; st.ok() && i < 100; i++) {
    st = writeSysfs(dev + "/enable", "1");
    if (st.code() != EAGAIN) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (st.ok() && spec.cmdTimeoutSec) st = writeSysfs(dev + "/attrib/cmd_time_out", std::to_string(spec.cmdTimeoutSec));
  if (!st.ok()) {
    ::rmdir(dev.c_str());
    return st.wrap("tcmu: create backstore " + dev);
  }
  return Status::Ok();
}

Status removeBackstore(const SysPaths& paths, const BackstoreSpec& spec) {
  const std::string dev = corePath(paths, spec);
  if (::rmdir(dev.c_str()) != 0 && errno != ENOENT) return SysError("rmdir " + dev);
  return Status::Ok();
}

std::string readUnitSerial(const SysPaths& paths, const BackstoreSpec& spec) {
  auto s = readSysfs(corePath(paths, spec) + "/wwn/vpd_unit_serial");
  if (!s.ok()) return spec.name;
  const std::string& v = s.value();
  auto at = v.find("Number: ");
  return at == std::string::npos ? v : v.substr(at + 8);
}

Result<UioDevice> findUioDevice(const SysPaths& paths, const BackstoreSpec& spec, int timeoutMs) {
  const std::string want = uioName(spec);
  const std::string cls = paths.sys("class/uio");
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
  for (;;) {
    if (DIR* d = ::opendir(cls.c_str())) {
      std::string found;
      while (dirent* e = ::readdir(d)) {
        if (std::strncmp(e->d_name, "uio", 3) != 0) continue;
        auto name = readSysfs(cls + "/" + e->d_name + "/name");
        if (name.ok() && name.value() == want) found = e->d_name;
      }
      ::closedir(d);
      if (!found.empty()) {
        const std::string dir = cls + "/" + found;
        auto size = readSysfs(dir + "/maps/map0/size");
        if (!size.ok()) return size.status();
        UioDevice u;
        u.mapSize = std::strtoull(size.value().c_str(), nullptr, 0);  // "0x..." hex
        if (u.mapSize == 0) return Corrupt(dir + "/maps/map0/size: " + size.value());
        auto node = devNode(paths, dir, found, false);
        if (!node.ok()) return node.status();
        u.devPath = node.value();
        return u;
      }
    }
    if (std::chrono::steady_clock::now() > deadline)
      return Status(ENOENT, "tcmu: no UIO device named '" + want + "' under " + cls);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

Result<std::string> exportLoopbackLun(const SysPaths& paths, const BackstoreSpec& spec, int timeoutMs) {
  const std::string existing = findLoopbackTarget(paths, spec);
  const std::string wwn = existing.empty() ? loopbackWwn(spec) : existing;
  const std::string naa = paths.loopback() + "/" + wwn;
  const std::string tpg = naa + "/tpgt_1";
  if (existing.empty()) {
    for (const std::string& d : {paths.loopback(), naa, tpg, tpg + "/lun", tpg + "/lun/lun_0"})
      OBD_RETURN_IF_ERROR(mkdirIfMissing(d));
    auto nexus = readSysfs(tpg + "/nexus");
    if (!nexus.ok() || nexus.value().empty() || nexus.value() == "(null)")
      OBD_RETURN_IF_ERROR(writeSysfs(tpg + "/nexus", wwn));
    const std::string link = tpg + "/lun/lun_0/" + spec.name;
    if (::symlink(corePath(paths, spec).c_str(), link.c_str()) != 0 && errno != EEXIST)
      return SysError("symlink " + link);
  }
  auto address = readSysfs(tpg + "/address");
  if (!address.ok()) return address.status();
  const std::string blockDir = paths.sys("class/scsi_device/" + address.value() + ":0/device/block");
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
  for (;;) {
    if (DIR* d = ::opendir(blockDir.c_str())) {
      std::string disk;
      while (dirent* e = ::readdir(d))
        if (e->d_name[0] != '.') disk = e->d_name;
      ::closedir(d);
      if (!disk.empty()) return devNode(paths, paths.sys("block/" + disk), disk, true);
    }
    if (std::chrono::steady_clock::now() > deadline)
      return Status(ETIMEDOUT, "tcmu: no disk appeared under " + blockDir + " (tcm_loop " + wwn + ")");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

Status removeLoopbackLun(const SysPaths& paths, const BackstoreSpec& spec) {
  std::string wwn = findLoopbackTarget(paths, spec);
  if (wwn.empty()) wwn = loopbackWwn(spec);
  const std::string naa = paths.loopback() + "/" + wwn;
  const std::string tpg = naa + "/tpgt_1";
  if (!exists(naa)) return Status::Ok();
  Status first;
  auto note = [&first](const std::string& what) {
    if (errno != ENOENT && first.ok()) first = SysError(what);
  };
  const std::string link = tpg + "/lun/lun_0/" + spec.name;
  if (::unlink(link.c_str()) != 0) note("unlink " + link);
  for (const std::string& d : {tpg + "/lun/lun_0", tpg, naa})
    if (::rmdir(d.c_str()) != 0) note("rmdir " + d);
  return first;
}

std::vector<std::string> listBackstores(const SysPaths& paths, uint32_t hba) {
  return listDir(paths.core() + "/user_" + std::to_string(hba));
}

bool backstoreExists(const SysPaths& paths, const BackstoreSpec& spec) { return exists(corePath(paths, spec)); }

std::string findLoopbackTarget(const SysPaths& paths, const BackstoreSpec& spec) {
  const std::string want = "user_" + std::to_string(spec.hba) + "/" + spec.name;
  for (const std::string& naa : listDir(paths.loopback())) {
    const std::string link = paths.loopback() + "/" + naa + "/tpgt_1/lun/lun_0/" + spec.name;
    char buf[4096];
    ssize_t n = ::readlink(link.c_str(), buf, sizeof buf - 1);
    if (n <= 0) continue;
    std::string target(buf, size_t(n));
    if (target.size() >= want.size() && target.compare(target.size() - want.size(), want.size(), want) == 0) return naa;
  }
  return "";
}

}  // namespace obd::tcmu
