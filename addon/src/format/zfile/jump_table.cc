#include "format/zfile/jump_table.h"

namespace obd::zfile {

JumpTable::JumpTable(const std::vector<uint32_t>& lengths, uint64_t dataStart) : count_(lengths.size()) {
  // Each group spans at most 64 blocks of < 2^17 stored bytes (validated by the caller), so a
  // group-relative u32 delta cannot overflow.
  base_.clear();
  delta_.clear();
  base_.reserve(count_ / kGroup + 1);
  delta_.reserve(count_ + 1);
  uint64_t pos = dataStart;
  for (uint64_t i = 0; i <= count_; i++) {
    if (i % kGroup == 0) base_.push_back(pos);
    delta_.push_back(static_cast<uint32_t>(pos - base_.back()));
    if (i < count_) pos += lengths[i];
  }
}

}  // namespace obd::zfile
