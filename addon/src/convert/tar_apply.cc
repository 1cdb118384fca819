#include "convert/tar_apply.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <unordered_set>
#include <vector>

#include "util/unique_fd.h"

namespace obd::convert {
namespace {

constexpr const char* kWhiteoutPrefix = ".wh.";
constexpr const char* kOpaqueMarker = ".wh..wh..opq";
constexpr const char* kMetaPrefix = ".wh..wh.";  // aufs bookkeeping entries (.wh..wh.plnk, …): ignored

struct ArchiveReadDeleter {
  void operator()(archive* a) const { archive_read_free(a); }
};
struct ArchiveWriteDeleter {
  void operator()(archive* a) const { archive_write_free(a); }
};
using ReadArchive = std::unique_ptr<archive, ArchiveReadDeleter>;
using WriteArchive = std::unique_ptr<archive, ArchiveWriteDeleter>;

bool startsWith(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }

std::string parentOf(const std::string& p) {
  auto i = p.rfind('/');
  return i == std::string::npos ? std::string() : p.substr(0, i);
}
std::string baseOf(const std::string& p) {
  auto i = p.rfind('/');
  return i == std::string::npos ? p : p.substr(i + 1);
}
std::string joinPath(const std::string& dir, const std::string& name) { return dir.empty() ? name : dir + "/" + name; }
std::string onDisk(const std::string& rel) { return rel.empty() ? std::string(".") : rel; }

// Deletes `name` in directory `dirfd` and everything below it, never following symlinks.
Status removeAt(int dirfd, const std::string& name, const std::string& shown, uint64_t* removed, int depth = 0) {
  if (depth > 4096) return InvalidArg(shown + ": directory tree too deep to remove");
  struct stat st;
  if (fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return Status::Ok();
    return SysError("lstat " + shown);
  }
  if (S_ISDIR(st.st_mode)) {
    UniqueFd fd(openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (fd.get() < 0) return SysError("open " + shown);
    int dupfd = dup(fd.get());
    if (dupfd < 0) return SysError("dup");
    DIR* d = fdopendir(dupfd);
    if (!d) {
      close(dupfd);
      return SysError("opendir " + shown);
    }
    std::vector<std::string> children;
    while (dirent* de = readdir(d)) {
      std::string n = de->d_name;
      if (n != "." && n != "..") children.push_back(n);
    }
    closedir(d);
    for (const auto& c : children) OBD_RETURN_IF_ERROR(removeAt(fd.get(), c, shown + "/" + c, removed, depth + 1));
    if (unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) != 0) return SysError("rmdir " + shown);
  } else if (unlinkat(dirfd, name.c_str(), 0) != 0) {
    return SysError("unlink " + shown);
  }
  (*removed)++;
  return Status::Ok();
}

class Applier {
 public:
  Applier(const ApplyLimits& limits, ApplyStats* stats, TarMapping* mapping)
      : limits_(limits), stats_(stats), mapping_(mapping) {}

  Status run(int inputFd, bool plainTar) {
    ReadArchive in(archive_read_new());
    WriteArchive out(archive_write_disk_new());
    if (!in || !out) return Status(ENOMEM, "libarchive: out of memory");
    if (!plainTar) archive_read_support_filter_all(in.get());
    archive_read_support_format_tar(in.get());
    if (archive_read_open_fd(in.get(), inputFd, 1 << 20) != ARCHIVE_OK) return archiveError(in.get(), "open input");
    archive_write_disk_set_options(out.get(),
        ARCHIVE_EXTRACT_OWNER | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_XATTR |
        ARCHIVE_EXTRACT_UNLINK | ARCHIVE_EXTRACT_SECURE_NODOTDOT |
        ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS);
    archive_entry* e = nullptr;
    int r;
    while ((r = archive_read_next_header(in.get(), &e)) == ARCHIVE_OK || r == ARCHIVE_WARN) {
      OBD_RETURN_IF_ERROR(entry(in.get(), out.get(), e));
    }
    stats_->inputBytes = static_cast<uint64_t>(archive_filter_bytes(in.get(), -1));
    if (r != ARCHIVE_EOF) {
      return archiveError(in.get(), lastEntry_.empty() ? "reading archive" : "reading archive after entry " + lastEntry_);
    }
    if (archive_write_close(out.get()) != ARCHIVE_OK) return archiveError(out.get(), "finishing directories");
    if (mapping_) return collectRuns();
    return Status::Ok();
  }

 private:
  Status archiveError(archive* a, const std::string& what) {
    const char* s = archive_error_string(a);
    int err = archive_errno(a);
    return Status(err > 0 ? err : EBADMSG, what + ": " + (s ? s : "libarchive error"));
  }

  void warn(const std::string& msg) {
    stats_->warnings++;
    if (stats_->firstWarning.empty()) stats_->firstWarning = msg;
  }

  // Marks rel and its ancestors as written by this layer (whiteouts never hide them).
  void touch(const std::string& rel) {
    std::string p = rel;
    while (!p.empty() && touched_.insert(p).second) p = parentOf(p);
  }

  // lstat of every proper ancestor of rel: Ok(true) when they all exist as real directories,
  // Ok(false) when one is missing or not a directory, an error when one is a symlink. Directories
  // already seen are remembered; anything that removes or replaces objects forgets them all.
  Result<bool> ancestorsAreDirs(const std::string& rel, const std::string& entry) {
    size_t pos = 0;
    while (true) {
      size_t slash = rel.find('/', pos);
      if (slash == std::string::npos) return true;
      std::string cur = rel.substr(0, slash);
      pos = slash + 1;
      if (realDirs_.count(cur)) continue;
      struct stat st;
      if (lstat(cur.c_str(), &st) != 0) {
        if (errno == ENOENT) return false;
        return SysError("entry " + entry + ": lstat " + cur);
      }
      if (S_ISLNK(st.st_mode)) return InvalidArg("entry " + entry + ": path goes through symlink " + cur);
      if (!S_ISDIR(st.st_mode)) return false;
      realDirs_.insert(cur);
    }
  }

  Status remove(const std::string& rel, const std::string& entry) {
    realDirs_.clear();
    return removeAt(AT_FDCWD, rel, rel, &stats_->removed).wrap("entry " + entry);
  }

  Status entry(archive* in, archive* out, archive_entry* e) {
    // The reader has consumed exactly the header blocks: this is where the entry's data starts.
    const int64_t dataOffset = archive_filter_bytes(in, 0);
    const char* raw = archive_entry_pathname(e);
    if (!raw) return Corrupt("entry #" + std::to_string(stats_->entries + 1) + ": no name");
    const std::string name = raw;
    lastEntry_ = name;
    if (++stats_->entries > limits_.maxEntries) {
      return InvalidArg("entry " + name + ": more than " + std::to_string(limits_.maxEntries) + " entries in one layer");
    }
    std::string rel;
    std::string why = checkEntryName(name, limits_, &rel);
    if (!why.empty()) return InvalidArg("entry " + name + ": " + why);
    if (rel.empty()) return Status::Ok();  // "./": the root directory itself keeps the filesystem's attributes
    const std::string base = baseOf(rel);
    if (startsWith(base, kWhiteoutPrefix)) return whiteout(rel, base, name);

    // Never write through a symlink, wherever it points. (libarchive's SECURE_SYMLINKS is not used:
    // with ARCHIVE_EXTRACT_UNLINK it replaces such a symlink instead of refusing, and it opens every
    // path component of every entry.)
    auto parents = ancestorsAreDirs(rel, name);
    if (!parents.ok()) return parents.status();
    const char* link = archive_entry_hardlink(e);
    if (link) {
      std::string target;
      std::string whyLink = checkEntryName(link, limits_, &target);
      if (!whyLink.empty()) return InvalidArg("entry " + name + ": hardlink target " + link + ": " + whyLink);
      if (target.empty()) return InvalidArg("entry " + name + ": hardlink to the root directory");
      auto ok = ancestorsAreDirs(target, name);
      if (!ok.ok()) return ok.status();
      archive_entry_set_hardlink(e, target.c_str());
    }
    const int64_t size = archive_entry_size(e);
    if (size < 0 || static_cast<uint64_t>(size) > limits_.maxEntrySize) {
      return InvalidArg("entry " + name + ": size " + std::to_string(size) + " exceeds the limit of " +
                        std::to_string(limits_.maxEntrySize) + " bytes");
    }
    total_ += static_cast<uint64_t>(size);
    if (total_ > limits_.maxTotalBytes) {
      return InvalidArg("entry " + name + ": layer holds more than " + std::to_string(limits_.maxTotalBytes) + " bytes");
    }
    archive_entry_set_pathname(e, rel.c_str());
    const mode_t type = archive_entry_filetype(e);
    if (!link && type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK && type != AE_IFCHR && type != AE_IFBLK &&
        type != AE_IFIFO) {
      return InvalidArg("entry " + name + ": unsupported file type");
    }
    // A non-directory replaces whatever was there, a directory from a lower layer included.
    struct stat st;
    if ((link || type != AE_IFDIR) && lstat(rel.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
      auto ok = ancestorsAreDirs(rel, name);
      if (!ok.ok()) return ok.status();
      OBD_RETURN_IF_ERROR(remove(rel, name));
    } else if (link || type != AE_IFDIR) {
      realDirs_.erase(rel);
    }
    if (!link && type == AE_IFDIR && lstat(rel.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
      OBD_RETURN_IF_ERROR(dropStaleXattrs(e, rel, name));
    }
    // TurboOCI: data that the meta layer maps to the tar is never written, only given blocks.
    const bool mapped = mapping_ && !link && type == AE_IFREG && size > 0 && archive_entry_sparse_count(e) == 0 &&
                        dataOffset >= 0 && dataOffset % 512 == 0;
    int r = archive_write_header(out, e);
    if (r < ARCHIVE_WARN) return archiveError(out, "entry " + name);
    if (r == ARCHIVE_WARN) warn("entry " + name + ": " + (archive_error_string(out) ? archive_error_string(out) : "warning"));
    bool created = false;
    if (r == ARCHIVE_OK || r == ARCHIVE_WARN) {
      created = true;
      if (size > 0 && archive_entry_size_is_set(e) && !mapped) OBD_RETURN_IF_ERROR(copyData(in, out, name));
      r = archive_write_finish_entry(out);
      if (r < ARCHIVE_WARN) return archiveError(out, "entry " + name);
      if (r == ARCHIVE_WARN) warn("entry " + name + ": " + (archive_error_string(out) ? archive_error_string(out) : "warning"));
    }
    touch(rel);
    if (mapping_ && type != AE_IFDIR && lstat(rel.c_str(), &st) == 0) {
      if (mapped && created && S_ISREG(st.st_mode)) {
        OBD_RETURN_IF_ERROR(preallocate(rel, static_cast<uint64_t>(size), name));
        files_[st.st_ino] = FileData{{rel}, static_cast<uint64_t>(dataOffset), static_cast<uint64_t>(size)};
      } else if (link && files_.count(st.st_ino)) {
        files_[st.st_ino].paths.push_back(rel);
      } else {
        files_.erase(st.st_ino);  // the inode number of a file removed earlier in this layer, reused
      }
    }
    if (link) stats_->hardlinks++;
    else if (type == AE_IFREG) stats_->files++;
    else if (type == AE_IFDIR) stats_->dirs++;
    else if (type == AE_IFLNK) stats_->symlinks++;
    else stats_->specials++;
    return Status::Ok();
  }

  // A directory entry over an existing directory replaces its metadata, xattrs included (as the
  // upper directory of an overlay does): xattrs the entry does not carry are removed.
  Status dropStaleXattrs(archive_entry* e, const std::string& rel, const std::string& name) {
    std::set<std::string> keep;
    const char* xn;
    const void* xv;
    size_t xs;
    archive_entry_xattr_reset(e);
    while (archive_entry_xattr_next(e, &xn, &xv, &xs) == ARCHIVE_OK) keep.insert(xn);
    ssize_t n = llistxattr(rel.c_str(), nullptr, 0);
    if (n <= 0) return Status::Ok();
    std::vector<char> buf(static_cast<size_t>(n) + 1, '\0');
    n = llistxattr(rel.c_str(), buf.data(), buf.size() - 1);
    if (n < 0) return SysError("entry " + name + ": listxattr");
    for (ssize_t i = 0; i < n;) {
      std::string x(&buf[static_cast<size_t>(i)]);
      i += static_cast<ssize_t>(x.size()) + 1;
      if (!x.empty() && !keep.count(x) && lremovexattr(rel.c_str(), x.c_str()) != 0 && errno != ENODATA) {
        return SysError("entry " + name + ": removexattr " + x);
      }
    }
    return Status::Ok();
  }

  Status copyData(archive* in, archive* out, const std::string& name) {
    const void* buf;
    size_t n;
    la_int64_t off;
    while (true) {
      int r = archive_read_data_block(in, &buf, &n, &off);
      if (r == ARCHIVE_EOF) return Status::Ok();
      if (r < ARCHIVE_WARN) return archiveError(in, "entry " + name + ": reading data");
      if (archive_write_data_block(out, buf, n, off) < ARCHIVE_WARN) return archiveError(out, "entry " + name + ": writing data");
      stats_->bytes += n;
    }
  }

  Status whiteout(const std::string& rel, const std::string& base, const std::string& name) {
    const std::string dir = parentOf(rel);
    if (base == kOpaqueMarker) {
      stats_->opaques++;
      auto ok = ancestorsAreDirs(joinPath(dir, "x"), name);
      if (!ok.ok()) return ok.status();
      if (!ok.value()) return Status::Ok();
      return clearOpaque(dir, name, 0);
    }
    if (startsWith(base, kMetaPrefix)) return Status::Ok();
    stats_->whiteouts++;
    const std::string target = joinPath(dir, base.substr(strlen(kWhiteoutPrefix)));
    if (target == dir || base.size() == strlen(kWhiteoutPrefix)) return InvalidArg("entry " + name + ": empty whiteout name");
    if (touched_.count(target)) return Status::Ok();  // whiteouts hide lower layers only
    auto ok = ancestorsAreDirs(target, name);
    if (!ok.ok()) return ok.status();
    if (!ok.value()) return Status::Ok();
    return remove(target, name);
  }

  // Opaque directory: everything below `dir` that this layer did not write goes away.
  Status clearOpaque(const std::string& dir, const std::string& name, int depth) {
    if (depth > 4096) return InvalidArg("entry " + name + ": directory tree too deep");
    DIR* d = opendir(onDisk(dir).c_str());
    if (!d) return errno == ENOENT || errno == ENOTDIR ? Status::Ok() : SysError("entry " + name + ": opendir " + onDisk(dir));
    std::vector<std::pair<std::string, bool>> children;
    while (dirent* de = readdir(d)) {
      std::string n = de->d_name;
      if (n == "." || n == "..") continue;
      children.emplace_back(n, de->d_type == DT_DIR);
    }
    closedir(d);
    for (const auto& [n, isDir] : children) {
      const std::string p = joinPath(dir, n);
      if (!touched_.count(p)) {
        OBD_RETURN_IF_ERROR(remove(p, name));
      } else if (isDir) {
        OBD_RETURN_IF_ERROR(clearOpaque(p, name, depth + 1));
      }
    }
    return Status::Ok();
  }

  // Blocks for a file's data without writing it (ext4: unwritten extents). Writing to a file drops
  // its set-id bits and file capabilities and moves its times: they are put back.
  Status preallocate(const std::string& rel, uint64_t size, const std::string& name) {
    UniqueFd fd(open(rel.c_str(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC));
    struct stat st;
    if (fd.get() < 0 || fstat(fd.get(), &st) != 0) return SysError("entry " + name + ": open for preallocation");
    char cap[512];
    const ssize_t capLen = fgetxattr(fd.get(), "security.capability", cap, sizeof(cap));
    if (fallocate(fd.get(), 0, 0, static_cast<off_t>(size)) != 0) return SysError("entry " + name + ": fallocate");
    struct stat now;
    if (fstat(fd.get(), &now) != 0) return SysError("entry " + name + ": fstat");
    if ((now.st_mode & 07777) != (st.st_mode & 07777) && fchmod(fd.get(), st.st_mode & 07777) != 0) {
      return SysError("entry " + name + ": chmod after preallocation");
    }
    if (capLen > 0 && fgetxattr(fd.get(), "security.capability", nullptr, 0) < 0 &&
        fsetxattr(fd.get(), "security.capability", cap, static_cast<size_t>(capLen), 0) != 0) {
      return SysError("entry " + name + ": restoring security.capability");
    }
    const struct timespec times[2] = {st.st_atim, st.st_mtim};
    if (futimens(fd.get(), times) != 0) return SysError("entry " + name + ": restoring times");
    stats_->preallocatedBytes += size;
    return Status::Ok();
  }

  // Data extents of the preallocated files still present, as device offsets, with their tar offsets.
  Status collectRuns() {
    UniqueFd root(open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (root.get() < 0 || syncfs(root.get()) != 0) return SysError("syncfs");
    constexpr unsigned kExtents = 256;
    std::vector<uint8_t> buf(sizeof(fiemap) + kExtents * sizeof(fiemap_extent));
    auto* fm = reinterpret_cast<fiemap*>(buf.data());
    constexpr uint32_t kUnusable = FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_ENCODED |
                                   FIEMAP_EXTENT_DATA_ENCRYPTED | FIEMAP_EXTENT_NOT_ALIGNED | FIEMAP_EXTENT_DATA_INLINE |
                                   FIEMAP_EXTENT_DATA_TAIL;
    for (const auto& [ino, f] : files_) {
      UniqueFd fd;
      std::string rel;
      for (const std::string& p : f.paths) {  // any name still leading to this inode
        UniqueFd c(open(p.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
        struct stat st;
        if (c.get() >= 0 && fstat(c.get(), &st) == 0 && S_ISREG(st.st_mode) && st.st_ino == ino &&
            static_cast<uint64_t>(st.st_size) == f.size) {
          fd = std::move(c);
          rel = p;
          break;
        }
      }
      if (fd.get() < 0) continue;  // removed later in the layer
      const uint64_t limit = (f.size + 511) / 512 * 512;  // the tar holds whole 512-byte blocks
      uint64_t start = 0;
      uint64_t covered = 0;
      bool last = false;
      while (!last && start < limit) {
        std::memset(buf.data(), 0, buf.size());
        fm->fm_start = start;
        fm->fm_length = limit - start;
        fm->fm_flags = FIEMAP_FLAG_SYNC;
        fm->fm_extent_count = kExtents;
        if (ioctl(fd.get(), FS_IOC_FIEMAP, fm) != 0) return SysError("fiemap " + rel);
        if (fm->fm_mapped_extents == 0) break;
        for (uint32_t i = 0; i < fm->fm_mapped_extents; ++i) {
          const fiemap_extent& x = fm->fm_extents[i];
          if (x.fe_flags & FIEMAP_EXTENT_LAST) last = true;
          start = x.fe_logical + x.fe_length;
          if (x.fe_logical >= limit) continue;
          if ((x.fe_flags & kUnusable) || x.fe_logical != covered || x.fe_physical % 4096) {
            // Its data was not written, so it must be mapped: never leave a file reading wrong bytes.
            return Status(EIO, "entry " + rel + ": preallocated extent at " + std::to_string(x.fe_logical) +
                                   " cannot be mapped to the tar (flags " + std::to_string(x.fe_flags) + ")");
          }
          uint64_t len = std::min<uint64_t>(x.fe_length, limit - x.fe_logical);
          mapping_->runs.push_back(TarDataRun{x.fe_physical, len, f.tarOffset + x.fe_logical});
          covered += len;
        }
      }
      if (covered < limit) return Status(EIO, "entry " + rel + ": preallocated blocks do not cover its data");
      mapping_->preallocatedInodes.push_back(ino);
    }
    return Status::Ok();
  }

  struct FileData {
    std::vector<std::string> paths;
    uint64_t tarOffset;
    uint64_t size;
  };

  const ApplyLimits& limits_;
  ApplyStats* stats_;
  TarMapping* mapping_;
  std::map<ino_t, FileData> files_;
  std::unordered_set<std::string> touched_;
  std::unordered_set<std::string> realDirs_;
  uint64_t total_ = 0;
  std::string lastEntry_;
};

// Enters root with chroot() and leaves it again (through a descriptor of the old root) on scope exit.
class ChrootScope {
 public:
  Status enter(const std::string& root) {
    old_ = UniqueFd(open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (old_.get() < 0) return SysError("open /");
    if (chdir(root.c_str()) != 0) return SysError("chdir " + root);
    if (chroot(".") != 0) return SysError("chroot " + root);
    entered_ = true;
    if (chdir("/") != 0) return SysError("chdir / in " + root);
    return Status::Ok();
  }
  ~ChrootScope() {
    if (!entered_) return;
    if (fchdir(old_.get()) == 0 && chroot(".") == 0) {
      (void)!chdir("/");
    }
  }

 private:
  UniqueFd old_;
  bool entered_ = false;
};

}  // namespace

std::string checkEntryName(const std::string& name, const ApplyLimits& limits, std::string* cleaned) {
  cleaned->clear();
  if (name.empty()) return "empty name";
  if (name.size() > limits.maxPathBytes) {
    return "name is " + std::to_string(name.size()) + " bytes long (limit " + std::to_string(limits.maxPathBytes) + ")";
  }
  if (name[0] == '/') return "absolute path";
  size_t pos = 0;
  while (pos <= name.size()) {
    size_t slash = name.find('/', pos);
    if (slash == std::string::npos) slash = name.size();
    std::string c = name.substr(pos, slash - pos);
    pos = slash + 1;
    if (c.empty() || c == ".") continue;
    if (c == "..") return "path contains '..'";
    if (c.size() > limits.maxNameBytes) {
      return "component is " + std::to_string(c.size()) + " bytes long (limit " + std::to_string(limits.maxNameBytes) + ")";
    }
    if (!cleaned->empty()) cleaned->push_back('/');
    cleaned->append(c);
  }
  return std::string();
}

Status applyTar(int inputFd, const std::string& root, const ApplyLimits& limits, bool useChroot, ApplyStats* stats,
                TarMapping* mapping, bool plainTar) {
  struct stat st;
  if (stat(root.c_str(), &st) != 0) return SysError("target root " + root);
  if (!S_ISDIR(st.st_mode)) return InvalidArg("target root " + root + " is not a directory");
  ChrootScope scope;
  if (useChroot) {
    OBD_RETURN_IF_ERROR(scope.enter(root));
  } else if (chdir(root.c_str()) != 0) {
    return SysError("chdir " + root);
  }
  Applier a(limits, stats, mapping);
  return a.run(inputFd, plainTar);
}

}  // namespace obd::convert
