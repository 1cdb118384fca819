// An in-memory model of the configfs/sysfs/dev pieces a TCMU device touches, behaving as the kernel
// does where it matters for our sequences: mkdir of a backstore or TPG creates its attribute files and
// default groups, rmdir removes them but refuses while user-made entries remain (ENOTEMPTY) or while a
// LUN still links to the backstore (EBUSY), enable=1 registers a UIO device, linking a LUN makes a SCSI
// disk appear and unlinking removes it. Every call is logged for sequence checks.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <string>
#include <vector>

#include "transport/tcmu/kernel.h"

namespace obd::tcmu::sim {

class FakeConfigfs : public SysFs {
 public:
  // root: a real directory (ends with '/'); only root/dev/uio0 is made on disk (a symlink to uioFile,
  // so the device can really be opened and mapped).
  FakeConfigfs(std::string root, std::string uioFile, uint64_t uioSize)
      : root_(std::move(root)), uioFile_(std::move(uioFile)), uioSize_(uioSize) {
    for (const char* d : {"sys", "sys/kernel", "sys/kernel/config", "sys/kernel/config/target",
                          "sys/kernel/config/target/core", "sys/module", "sys/module/target_core_mod",
                          "sys/module/target_core_user", "sys/module/tcm_loop", "sys/class", "sys/class/uio",
                          "sys/bus", "sys/bus/scsi", "sys/bus/scsi/drivers", "sys/bus/scsi/drivers/sd",
                          "sys/class/scsi_device", "sys/block", "dev"})
      nodes_[root_ + d] = {kDir, "", true};
    ::mkdir((root_ + "dev").c_str(), 0755);
  }

  std::vector<std::string> log;
  bool failEnable = false;
  bool diskNeverAppears = false;

  void removeNode(const std::string& p) { nodes_.erase(p); }
  std::vector<std::string> under(const std::string& dir) const {
    std::vector<std::string> out;
    for (auto it = nodes_.upper_bound(dir + "/"); it != nodes_.end() && it->first.compare(0, dir.size() + 1, dir + "/") == 0; ++it)
      out.push_back(it->first);
    return out;
  }
  std::string rel(const std::string& p) const { return p.compare(0, root_.size(), root_) == 0 ? p.substr(root_.size()) : p; }

  bool exists(const std::string& p) override { return nodes_.count(p) > 0; }

  Status mkdir(const std::string& p) override {
    log.push_back("mkdir " + rel(p));
    if (!isDir(parent(p))) return Status(ENOENT, "mkdir " + p + ": no parent");
    if (nodes_.count(p)) return Status(EEXIST, "mkdir " + p + ": exists");
    nodes_[p] = {kDir, "", false};
    const std::string core = root_ + "sys/kernel/config/target/core/";
    if (p.compare(0, core.size(), core) == 0 && depth(p.substr(core.size())) == 2) {  // user_N/<dev>
      file(p + "/control", "");
      file(p + "/enable", "0");
      dir(p + "/attrib");
      file(p + "/attrib/cmd_time_out", "30");
      dir(p + "/wwn");
      file(p + "/wwn/vpd_unit_serial", "T10 VPD Unit Serial Number: 6e6d2a40-1c2b-4f1e-9d3a-0123456789ab");
    }
    if (endsWith(p, "/tpgt_1")) {
      file(p + "/nexus", "");
      file(p + "/address", "9:0:1");
      dir(p + "/lun");
    }
    return Status::Ok();
  }

  Status rmdir(const std::string& p) override {
    log.push_back("rmdir " + rel(p));
    if (!nodes_.count(p)) return Status(ENOENT, "rmdir " + p);
    if (!isDir(p)) return Status(ENOTDIR, "rmdir " + p);
    for (const std::string& c : under(p))
      if (!nodes_[c].kernel) return Status(ENOTEMPTY, "rmdir " + p + ": " + rel(c) + " remains");
    for (auto& [path, n] : nodes_)
      if (n.kind == kLink && n.data == p) return Status(EBUSY, "rmdir " + p + ": linked from " + rel(path));
    for (const std::string& c : under(p)) nodes_.erase(c);
    nodes_.erase(p);
    if (p == enabledDev_) {  // the UIO device goes with the backstore
      for (const std::string& c : under(root_ + "sys/class/uio/uio0")) nodes_.erase(c);
      nodes_.erase(root_ + "sys/class/uio/uio0");
      nodes_.erase(root_ + "dev/uio0");
      ::unlink((root_ + "dev/uio0").c_str());
      enabledDev_.clear();
    }
    return Status::Ok();
  }

  Status unlink(const std::string& p) override {
    log.push_back("unlink " + rel(p));
    if (!nodes_.count(p)) return Status(ENOENT, "unlink " + p);
    if (nodes_[p].kind != kLink) return Status(EPERM, "unlink " + p + ": configfs only unlinks symlinks");
    nodes_.erase(p);
    for (const std::string& c : under(root_ + "sys/class/scsi_device/9:0:1:0")) nodes_.erase(c);
    nodes_.erase(root_ + "sys/class/scsi_device/9:0:1:0");
    nodes_.erase(root_ + "sys/block/sdq");
    nodes_.erase(root_ + "sys/block/sdq/dev");
    nodes_.erase(root_ + "dev/sdq");
    return Status::Ok();
  }

  Status symlink(const std::string& target, const std::string& link) override {
    log.push_back("symlink " + rel(link) + " -> " + rel(target));
    if (!isDir(parent(link))) return Status(ENOENT, "symlink " + link + ": no parent");
    if (!isDir(target)) return Status(ENOENT, "symlink " + link + ": no target " + target);
    if (nodes_.count(link)) return Status(EEXIST, "symlink " + link);
    nodes_[link] = {kLink, target, false};
    const std::string tpg = parent(parent(parent(link)));
    if (!diskNeverAppears && !nodes_[tpg + "/nexus"].data.empty()) {
      for (const char* d : {"sys/class/scsi_device/9:0:1:0", "sys/class/scsi_device/9:0:1:0/device",
                            "sys/class/scsi_device/9:0:1:0/device/block", "sys/class/scsi_device/9:0:1:0/device/block/sdq",
                            "sys/block/sdq"})
        dir(root_ + d);
      file(root_ + "sys/block/sdq/dev", "8:256");
    }
    return Status::Ok();
  }

  Result<std::string> readlink(const std::string& p) override {
    if (!nodes_.count(p) || nodes_[p].kind != kLink) return Status(EINVAL, "readlink " + p);
    return nodes_[p].data;
  }

  Result<std::string> read(const std::string& p) override {
    if (!nodes_.count(p)) return Status(ENOENT, "read " + p);
    if (nodes_[p].kind != kFile) return Status(EISDIR, "read " + p);
    return nodes_[p].data;
  }

  Status write(const std::string& p, const std::string& v) override {
    log.push_back("write " + rel(p) + " " + v);
    if (!nodes_.count(p) || nodes_[p].kind != kFile) return Status(ENOENT, "write " + p);
    if (endsWith(p, "/control")) {
      nodes_[p].data += (nodes_[p].data.empty() ? "" : ",") + v;
      return Status::Ok();
    }
    if (endsWith(p, "/enable") && v == "1") {
      if (failEnable) return Status(EINVAL, "write enable: injected failure");
      const std::string dev = parent(p);
      const std::string& control = nodes_[dev + "/control"].data;
      auto cfgAt = control.find("dev_config=");
      if (control.find("dev_size=") == std::string::npos || cfgAt == std::string::npos)
        return Status(EINVAL, "enable without dev_size/dev_config");
      std::string cfg = control.substr(cfgAt + 11, control.find(',', cfgAt) - cfgAt - 11);
      const std::string core = root_ + "sys/kernel/config/target/core/user_";
      std::string hbaDev = dev.substr(core.size());  // "<N>/<dev>"
      const std::string uio = root_ + "sys/class/uio/uio0";
      dir(uio);
      file(uio + "/name", "tcm-user/" + hbaDev + (cfg.empty() ? "" : "/" + cfg));
      dir(uio + "/maps");
      dir(uio + "/maps/map0");
      char hex[32];
      std::snprintf(hex, sizeof hex, "0x%llx", static_cast<unsigned long long>(uioSize_));
      file(uio + "/maps/map0/size", hex);
      file(uio + "/dev", "245:0");
      file(root_ + "dev/uio0", "");
      (void)!::symlink(uioFile_.c_str(), (root_ + "dev/uio0").c_str());
      enabledDev_ = dev;
    }
    nodes_[p].data = v;
    return Status::Ok();
  }

  std::vector<std::string> list(const std::string& d) override {
    std::vector<std::string> out;
    for (const std::string& c : under(d))
      if (parent(c) == d) out.push_back(c.substr(d.size() + 1));
    return out;
  }

  Status mknod(const std::string& p, bool block, unsigned, unsigned) override {
    log.push_back(std::string("mknod ") + rel(p) + (block ? " block" : " char"));
    file(p, "");
    return Status::Ok();
  }
  Status mountConfigfs(const std::string&) override { return Status::Ok(); }
  bool configfsMounted(const std::string&) override { return true; }
  std::string modprobe(const std::string& m) override {
    log.push_back("modprobe " + m);
    if (noModprobe) return "cannot run modprobe: No such file or directory";
    return "`modprobe " + m + "` failed (exit 1)";
  }
  bool noModprobe = false;  // a node without the modprobe binary

 private:
  enum Kind { kDir, kFile, kLink };
  struct Node {
    Kind kind;
    std::string data;
    bool kernel;  // made by the "kernel" (attribute or default group): removed with its parent
  };
  static std::string parent(const std::string& p) { return p.substr(0, p.find_last_of('/')); }
  static bool endsWith(const std::string& s, const std::string& x) {
    return s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0;
  }
  static int depth(const std::string& r) {
    int n = 1;
    for (char c : r) n += c == '/';
    return n;
  }
  bool isDir(const std::string& p) { return nodes_.count(p) && nodes_[p].kind == kDir; }
  void dir(const std::string& p) { nodes_[p] = {kDir, "", true}; }
  void file(const std::string& p, const std::string& v) { nodes_[p] = {kFile, v, true}; }

  std::string root_, uioFile_;
  uint64_t uioSize_;
  std::map<std::string, Node> nodes_;
  std::string enabledDev_;
};

}  // namespace obd::tcmu::sim
