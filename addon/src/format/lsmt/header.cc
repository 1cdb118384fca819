#include "format/lsmt/header.h"

#include <cstring>
#include <random>

#include "util/little_endian.h"

namespace obd::lsmt {

namespace {

const uint8_t kMagic0[8] = {0x4C, 0x53, 0x4D, 0x54, 0x00, 0x01, 0x02, 0x00};
const uint8_t kMagic1[16] = {0x65, 0x7E, 0x63, 0xD2, 0x94, 0x44, 0x08, 0x4C,
                             0xA2, 0xD2, 0xC8, 0xEC, 0x4F, 0xCF, 0xAE, 0x8A};

// Field offsets inside the packed struct (docs/formats.md, LSMT).
constexpr size_t kOffSize = 24, kOffFlags = 28, kOffIndexOffset = 32, kOffIndexSize = 40, kOffVsize = 48,
                 kOffUuid = 56, kOffParent = 93, kOffVersion = 132, kOffSubVersion = 133, kOffTag = 134;

std::string boundedText(const void* p, size_t max) {
  const char* s = static_cast<const char*>(p);
  return std::string(s, strnlen(s, max));
}

}  // namespace

const char kNullUuid[] = "00000000-0000-0000-0000-000000000000";

std::string HeaderTrailer::uuidText() const { return boundedText(uuid, kUuidField - 1); }
std::string HeaderTrailer::parentUuidText() const { return boundedText(parentUuid, kUuidField - 1); }
std::string HeaderTrailer::userTagText() const { return boundedText(userTag, kTagSize); }

bool hasMagic(const uint8_t* block, size_t n) {
  return n >= 24 && std::memcmp(block, kMagic0, 8) == 0 && std::memcmp(block + 8, kMagic1, 16) == 0;
}

Result<HeaderTrailer> decodeHeader(const uint8_t* block, size_t n) {
  if (n < kHeaderSpace) return Corrupt("short header block");
  if (!hasMagic(block, n)) return Corrupt("bad LSMT magic");
  HeaderTrailer ht;
  ht.size = static_cast<uint32_t>(loadLe(block + kOffSize, 4));
  ht.flags = static_cast<uint32_t>(loadLe(block + kOffFlags, 4));
  ht.indexOffset = loadLe(block + kOffIndexOffset, 8);
  ht.indexSize = loadLe(block + kOffIndexSize, 8);
  ht.virtualSize = loadLe(block + kOffVsize, 8);
  std::memcpy(ht.uuid, block + kOffUuid, kUuidField);
  std::memcpy(ht.parentUuid, block + kOffParent, kUuidField);
  ht.version = block[kOffVersion];
  ht.subVersion = block[kOffSubVersion];
  std::memcpy(ht.userTag, block + kOffTag, kTagSize);
  return ht;
}

void encodeHeader(const HeaderTrailer& ht, uint8_t* block) {
  std::memset(block, 0, kHeaderSpace);
  std::memcpy(block, kMagic0, 8);
  std::memcpy(block + 8, kMagic1, 16);
  storeLe(block + kOffSize, ht.size, 4);
  storeLe(block + kOffFlags, ht.flags, 4);
  storeLe(block + kOffIndexOffset, ht.indexOffset, 8);
  storeLe(block + kOffIndexSize, ht.indexSize, 8);
  storeLe(block + kOffVsize, ht.virtualSize, 8);
  std::memcpy(block + kOffUuid, ht.uuid, kUuidField);
  std::memcpy(block + kOffParent, ht.parentUuid, kUuidField);
  block[kOffVersion] = ht.version;
  block[kOffSubVersion] = ht.subVersion;
  std::memcpy(block + kOffTag, ht.userTag, kTagSize);
}

Result<std::string> normalizeUuid(const std::string& text) {
  if (text.size() != 36) return InvalidArg("invalid uuid '" + text + "': expected 36 characters");
  std::string out = text;
  for (size_t i = 0; i < out.size(); ++i) {
    char c = out[i];
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash) {
      if (c != '-') return InvalidArg("invalid uuid '" + text + "': expected '-' at position " + std::to_string(i));
      continue;
    }
    if (c >= 'a' && c <= 'f') c = static_cast<char>(c - 'a' + 'A');
    if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'F')))
      return InvalidArg("invalid uuid '" + text + "': not a hex digit at position " + std::to_string(i));
    out[i] = c;
  }
  return out;
}

std::string randomUuid() {
  std::random_device rd;
  uint8_t b[16];
  for (int i = 0; i < 16; i += 4) {
    uint32_t r = rd();
    std::memcpy(b + i, &r, 4);
  }
  b[6] = static_cast<uint8_t>((b[6] & 0x0F) | 0x40);
  b[8] = static_cast<uint8_t>((b[8] & 0x3F) | 0x80);
  static const char hex[] = "0123456789ABCDEF";
  std::string s;
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s += '-';
    s += hex[b[i] >> 4];
    s += hex[b[i] & 15];
  }
  return s;
}

Status setUuidField(char (&field)[kUuidField], const std::string& text) {
  std::string value = kNullUuid;
  if (!text.empty()) {
    auto norm = normalizeUuid(text);
    if (!norm.ok()) return norm.status();
    value = norm.value();
  }
  std::memset(field, 0, kUuidField);
  std::memcpy(field, value.data(), value.size());
  return Status::Ok();
}

Status setUserTag(HeaderTrailer& ht, const std::string& tag) {
  if (tag.size() > kTagSize)
    return Status(ENOBUFS, "user tag is " + std::to_string(tag.size()) + " bytes, at most " + std::to_string(kTagSize));
  std::memset(ht.userTag, 0, kTagSize);
  std::memcpy(ht.userTag, tag.data(), tag.size());
  return Status::Ok();
}

}  // namespace obd::lsmt
