#include "convert/ext4_unwritten.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>

#include "util/fd_io.h"
#include "util/unique_fd.h"

namespace obd::convert {
namespace {

// On-disk ext4 (little-endian; byte offsets inside their structures).
constexpr uint64_t kSuperOffset = 1024;
constexpr uint16_t kSuperMagic = 0xEF53;
constexpr uint32_t kIncompat64Bit = 0x80;
constexpr uint32_t kRoCompatMetadataCsum = 0x400;
constexpr uint32_t kExtentsFlag = 0x80000;
constexpr uint16_t kExtentMagic = 0xF30A;
constexpr uint16_t kUnwrittenLen = 32768;  // ee_len above this = unwritten extent of ee_len - 32768 blocks
constexpr int kMaxDepth = 5;

uint16_t le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t le32(const uint8_t* p) { return le16(p) | (static_cast<uint32_t>(le16(p + 2)) << 16); }
void put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}

class ExtentPatcher {
 public:
  ExtentPatcher(int fd, std::string device) : fd_(fd), device_(std::move(device)) {}

  Status loadSuper() {
    uint8_t sb[1024];
    OBD_RETURN_IF_ERROR(preadAll(fd_, sb, sizeof(sb), kSuperOffset, device_));
    if (le16(sb + 56) != kSuperMagic) return Corrupt(device_ + ": no ext4 superblock");
    if (le32(sb + 100) & kRoCompatMetadataCsum) return InvalidArg(device_ + ": ext4 with metadata_csum is not supported here");
    uint32_t logBlock = le32(sb + 24);
    if (logBlock > 6) return Corrupt(device_ + ": block size 2^" + std::to_string(logBlock + 10));
    blockSize_ = 1024u << logBlock;
    inodesPerGroup_ = le32(sb + 40);
    inodeSize_ = le16(sb + 88);
    inodesCount_ = le32(sb);
    firstDataBlock_ = le32(sb + 20);
    descSize_ = (le32(sb + 96) & kIncompat64Bit) ? le16(sb + 254) : 32;
    if (descSize_ < 32) descSize_ = 32;
    if (inodesPerGroup_ == 0 || inodeSize_ < 128 || inodeSize_ > blockSize_) return Corrupt(device_ + ": bad inode geometry");
    return Status::Ok();
  }

  Result<uint64_t> patchInode(uint64_t ino) {
    const std::string what = device_ + ": inode " + std::to_string(ino);
    if (ino == 0 || ino > inodesCount_) return InvalidArg(what + ": out of range");
    const uint64_t group = (ino - 1) / inodesPerGroup_;
    const uint64_t index = (ino - 1) % inodesPerGroup_;
    uint8_t desc[64] = {};
    OBD_RETURN_IF_ERROR(preadAll(fd_, desc, descSize_ > 64 ? 64 : descSize_,
                                 uint64_t(firstDataBlock_ + 1) * blockSize_ + group * descSize_, what));
    uint64_t table = le32(desc + 8);
    if (descSize_ >= 64) table |= uint64_t(le32(desc + 0x28)) << 32;
    const uint64_t at = table * blockSize_ + index * inodeSize_;
    std::vector<uint8_t> inode(inodeSize_);
    OBD_RETURN_IF_ERROR(preadAll(fd_, inode.data(), inode.size(), at, what));
    if (!(le32(inode.data() + 0x20) & kExtentsFlag)) return InvalidArg(what + ": does not use extents");
    uint8_t* root = inode.data() + 0x28;  // i_block, 60 bytes
    uint64_t changed = 0;
    OBD_RETURN_IF_ERROR(patchNode(root, 60, kMaxDepth, what, &changed));
    if (changed) OBD_RETURN_IF_ERROR(pwriteAll(fd_, inode.data(), inode.size(), at, what));
    return changed;
  }

 private:
  // One node of the extent tree (in the inode or in a block): leaves get their flag cleared,
  // index entries are followed.
  Status patchNode(uint8_t* node, size_t bytes, int depthLeft, const std::string& what, uint64_t* changed) {
    if (le16(node) != kExtentMagic) return Corrupt(what + ": bad extent header");
    const uint16_t entries = le16(node + 2);
    const uint16_t depth = le16(node + 6);
    if (12 + size_t(entries) * 12 > bytes || depth > depthLeft) return Corrupt(what + ": extent node out of bounds");
    for (uint16_t i = 0; i < entries; ++i) {
      uint8_t* e = node + 12 + size_t(i) * 12;
      if (depth == 0) {
        const uint16_t len = le16(e + 4);
        if (len > kUnwrittenLen) {
          put16(e + 4, static_cast<uint16_t>(len - kUnwrittenLen));
          (*changed)++;
        }
        continue;
      }
      const uint64_t leaf = le32(e + 4) | (uint64_t(le16(e + 8)) << 32);
      std::vector<uint8_t> block(blockSize_);
      OBD_RETURN_IF_ERROR(preadAll(fd_, block.data(), block.size(), leaf * blockSize_, what));
      uint64_t before = *changed;
      OBD_RETURN_IF_ERROR(patchNode(block.data(), block.size(), depth - 1, what, changed));
      if (*changed != before) OBD_RETURN_IF_ERROR(pwriteAll(fd_, block.data(), block.size(), leaf * blockSize_, what));
    }
    return Status::Ok();
  }

  int fd_;
  std::string device_;
  uint32_t blockSize_ = 4096;
  uint32_t inodesPerGroup_ = 0;
  uint32_t inodesCount_ = 0;
  uint32_t inodeSize_ = 256;
  uint32_t firstDataBlock_ = 0;
  uint32_t descSize_ = 32;
};

}  // namespace

Result<uint64_t> markExtentsWritten(const std::string& device, const std::vector<uint64_t>& inodes) {
  UniqueFd fd(::open(device.c_str(), O_RDWR | O_CLOEXEC));
  if (fd.get() < 0) return SysError("open " + device);
  ExtentPatcher p(fd.get(), device);
  OBD_RETURN_IF_ERROR(p.loadSuper());
  uint64_t changed = 0;
  for (uint64_t ino : inodes) {
    auto r = p.patchInode(ino);
    if (!r.ok()) return r.status();
    changed += r.value();
  }
  if (fsync(fd.get()) != 0) return SysError("fsync " + device);
  return changed;
}

}  // namespace obd::convert
