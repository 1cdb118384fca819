// The 4096-byte LSMT header/trailer block (docs/formats.md, LSMT) and the UUID text form.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "util/status.h"

namespace obd::lsmt {

constexpr size_t kHeaderSpace = 4096;  // header and trailer each occupy one 4 KiB block
constexpr uint32_t kStructSize = 390;
constexpr size_t kUuidField = 37;      // 36 ASCII chars + NUL
constexpr size_t kTagSize = 256;
constexpr uint64_t kMaxRoIndexSize = 1000000;     // entries accepted in a sealed trailer
constexpr uint64_t kMaxRwIndexSize = 128000000;   // entries in a writable index file / merged index
constexpr size_t kMaxStackLayers = 255;
constexpr uint64_t kMaxVirtualSize = ((uint64_t(1) << 50) - 1) * 512;  // what a 50-bit sector offset can address

constexpr uint32_t kFlagHeader = 1u << 0;   // 1 header, 0 trailer
constexpr uint32_t kFlagData = 1u << 1;     // 1 data file, 0 index file
constexpr uint32_t kFlagSealed = 1u << 2;
constexpr uint32_t kFlagSparseRw = 1u << 4;

extern const char kNullUuid[];  // "00000000-0000-0000-0000-000000000000"

struct HeaderTrailer {
  uint32_t size = kStructSize;
  uint32_t flags = 0;
  uint64_t indexOffset = 0;  // bytes
  uint64_t indexSize = 0;    // entries
  uint64_t virtualSize = 0;  // bytes
  char uuid[kUuidField] = {};
  char parentUuid[kUuidField] = {};
  uint8_t version = 1;
  uint8_t subVersion = 1;
  uint8_t userTag[kTagSize] = {};

  bool isHeader() const { return flags & kFlagHeader; }
  bool isDataFile() const { return flags & kFlagData; }
  bool isSealed() const { return flags & kFlagSealed; }
  bool isSparseRw() const { return flags & kFlagSparseRw; }
  // Text fields bounded by their on-disk size, whatever the bytes are.
  std::string uuidText() const;
  std::string parentUuidText() const;
  std::string userTagText() const;
};

bool hasMagic(const uint8_t* block, size_t n);
// Fails only on bad magic; what the flags must be is the caller's rule.
Result<HeaderTrailer> decodeHeader(const uint8_t* block, size_t n);
// Encodes into a zero-filled 4096-byte block.
void encodeHeader(const HeaderTrailer& ht, uint8_t* block);

// UUID text: accepts upper or lower case `8-4-4-4-12` hex; returns it upper-cased.
Result<std::string> normalizeUuid(const std::string& text);
std::string randomUuid();  // version 4, upper case
// Copies a normalized uuid (or the null uuid for "") into a field.
Status setUuidField(char (&field)[kUuidField], const std::string& text);
Status setUserTag(HeaderTrailer& ht, const std::string& tag);

}  // namespace obd::lsmt
