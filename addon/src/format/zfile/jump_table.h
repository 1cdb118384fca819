// In-memory jump table: the stored offset of every block, rebuilt from the on-disk u32 lengths.
// Kept compact (a u64 base per group of 64 blocks plus a u32 delta per block, ~4 bytes a block like
// the on-disk table) because a large layer can have millions of blocks.
#pragma once

#include <cstdint>
#include <vector>

namespace obd::zfile {

class JumpTable {
 public:
  JumpTable() = default;
  // lengths: stored length of each block; dataStart: file offset of block 0.
  JumpTable(const std::vector<uint32_t>& lengths, uint64_t dataStart);

  uint64_t blockCount() const { return count_; }
  // File offset where block i starts; start(blockCount()) is the end of the data section.
  uint64_t start(uint64_t i) const { return base_[i / kGroup] + delta_[i]; }
  uint64_t storedLength(uint64_t i) const { return start(i + 1) - start(i); }

 private:
  static constexpr uint64_t kGroup = 64;
  uint64_t count_ = 0;
  std::vector<uint64_t> base_{0};
  std::vector<uint32_t> delta_{0};
};

}  // namespace obd::zfile
