// The kernel side of a TCMU device, reached through sysfs/configfs (the kernel's target_core_user and tcm_loop interfaces):
// support detection, the configfs backstore (core/user_<hba>/<name>), the tcm_loop LUN that turns it
// into /dev/sdX, and UIO device discovery. All paths are relative to a root so tests can point them
// at a fake tree; production uses "/".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "util/status.h"

namespace obd::tcmu {

// The file operations the kernel side needs on sysfs, configfs and /dev. Production uses realSysFs();
// tests substitute a model of configfs (its rmdir removes attribute files, enable registers a UIO
// device, …) to check the create/teardown sequences without a TCMU-capable kernel.
class SysFs {
 public:
  virtual ~SysFs() = default;
  virtual bool exists(const std::string& path) = 0;
  virtual Status mkdir(const std::string& path) = 0;  // EEXIST reported as an error
  virtual Status rmdir(const std::string& path) = 0;
  virtual Status unlink(const std::string& path) = 0;
  virtual Status symlink(const std::string& target, const std::string& link) = 0;
  virtual Result<std::string> readlink(const std::string& path) = 0;
  virtual Result<std::string> read(const std::string& path) = 0;  // trailing newlines/NULs trimmed
  virtual Status write(const std::string& path, const std::string& value) = 0;
  virtual std::vector<std::string> list(const std::string& dir) = 0;  // names, no "." entries
  virtual Status mknod(const std::string& path, bool block, unsigned major, unsigned minor) = 0;
  virtual Status mountConfigfs(const std::string& at) = 0;
  virtual bool configfsMounted(const std::string& at) = 0;
  virtual std::string modprobe(const std::string& module) = 0;  // "" on success, else what failed
};

SysFs& realSysFs();  // stateless

struct SysPaths {
  std::string root = "/";  // prefix for /sys and /dev
  SysFs* fs = &realSysFs();
  std::string configfs() const { return root + "sys/kernel/config"; }
  std::string target() const { return configfs() + "/target"; }
  std::string core() const { return target() + "/core"; }
  std::string loopback() const { return target() + "/loopback"; }
  std::string sys(const std::string& rel) const { return root + "sys/" + rel; }
  std::string dev(const std::string& rel) const { return root + "dev/" + rel; }
};

struct TcmuSupport {
  bool ok = false;
  std::string reason;  // when !ok: which module / kernel config is missing and what was tried
};

// Checks configfs, target_core_mod, target_core_user, tcm_loop, uio and sd. With loadModules, first
// tries `modprobe` for missing modules and mounts configfs if it is not mounted.
TcmuSupport checkTcmuSupport(bool loadModules, const SysPaths& paths = {});

// accelerated-container-image's HBA (core/user_<hba>) when no tenant is configured.
constexpr uint32_t kAciDefaultHba = 999999999;

// One backstore: core/user_<hba>/<name> plus its tcm_loop export.
struct BackstoreSpec {
  uint32_t hba = kAciDefaultHba;
  std::string name;          // e.g. dev_<snapshot id>
  std::string cfgString;     // dev_config: "<handler>/<handler specific>", ≤ 255 chars
  uint64_t sizeBytes = 0;
  uint32_t blockSize = 512;
  uint32_t maxDataAreaMb = 0;   // 0: kernel default
  uint32_t cmdTimeoutSec = 0;   // 0: leave the kernel default (I/O fails in bounded time if we die)
  std::string loopbackWwn;      // naa.<16 digits>; empty: derived from hba/name
};

// "naa.199" + id zero-padded to 13 digits, as ACI names its loopback targets; with a tenant HBA the
// three digits after "naa." are 100 + hba % 100 instead of 199.
std::string aciLoopbackWwn(uint64_t snapshotId, uint32_t hba = kAciDefaultHba);

// Names of the UIO device the kernel registers for a backstore.
std::string uioName(const BackstoreSpec& spec);

// Creates and enables the backstore. On failure removes what it made.
Status createBackstore(const SysPaths& paths, const BackstoreSpec& spec);
Status removeBackstore(const SysPaths& paths, const BackstoreSpec& spec);
// The unit serial the kernel generated (wwn/vpd_unit_serial, text after "Number: ").
std::string readUnitSerial(const SysPaths& paths, const BackstoreSpec& spec);

struct UioDevice {
  std::string devPath;  // /dev/uioN (created with mknod if udev did not)
  uint64_t mapSize = 0;
};
// Waits up to timeoutMs for the UIO device whose name is uioName(spec).
Result<UioDevice> findUioDevice(const SysPaths& paths, const BackstoreSpec& spec, int timeoutMs);

// Exports the backstore as LUN 0 of a tcm_loop target (reusing an existing export of it) and waits for
// its disk; returns /dev/sdX.
Result<std::string> exportLoopbackLun(const SysPaths& paths, const BackstoreSpec& spec, int timeoutMs);
// Removes the export found by findLoopbackTarget (or the one spec names); absent is fine.
Status removeLoopbackLun(const SysPaths& paths, const BackstoreSpec& spec);

// Backstores under core/user_<hba> (what a previous deviced may have left), by device name.
std::vector<std::string> listBackstores(const SysPaths& paths, uint32_t hba);
bool backstoreExists(const SysPaths& paths, const BackstoreSpec& spec);
// The tcm_loop target (naa.…) whose LUN 0 links to this backstore, or "" if none.
std::string findLoopbackTarget(const SysPaths& paths, const BackstoreSpec& spec);
// Removes a device nobody serves any more (found by listBackstores after a crash): its tcm_loop LUN
// first, then the backstore. Absent pieces are fine.
Status removeStaleDevice(const SysPaths& paths, const BackstoreSpec& spec);


}  // namespace obd::tcmu
