#include "format/tar/tar_wrapper.h"

#include <cstring>
#include <string>

namespace obd::tar {

namespace {

constexpr size_t kBlock = 512;
constexpr uint64_t kMaxPaxSize = 64 * 1024;  // extended headers of a wrapper are a few dozen bytes

// ustar header fields (offset, length)
constexpr size_t kSizeOff = 124, kSizeLen = 12, kChksumOff = 148, kChksumLen = 8, kTypeOff = 156, kMagicOff = 257,
                 kVersionOff = 263;

bool isUstar(const uint8_t* h) {
  return std::memcmp(h + kMagicOff, "ustar", 6) == 0 && std::memcmp(h + kVersionOff, "00", 2) == 0;
}

// Octal, NUL/space terminated; or GNU base-256 (high bit of the first byte set).
std::optional<uint64_t> parseNumber(const uint8_t* p, size_t len) {
  if (p[0] & 0x80) {
    uint64_t v = p[0] & 0x7F;
    for (size_t i = 1; i < len; ++i) {
      if (v >> 55) return std::nullopt;
      v = (v << 8) | p[i];
    }
    return v;
  }
  size_t i = 0;
  while (i < len && p[i] == ' ') ++i;
  uint64_t v = 0;
  bool any = false;
  for (; i < len && p[i] >= '0' && p[i] <= '7'; ++i) {
    if (v >> 60) return std::nullopt;
    v = v * 8 + (p[i] - '0');
    any = true;
  }
  if (i < len && p[i] != 0 && p[i] != ' ') return std::nullopt;
  return any ? std::optional<uint64_t>(v) : std::optional<uint64_t>(0);
}

bool checksumOk(const uint8_t* h) {
  auto stored = parseNumber(h + kChksumOff, kChksumLen);
  if (!stored) return false;
  uint64_t sum = 0;
  for (size_t i = 0; i < kBlock; ++i) sum += (i >= kChksumOff && i < kChksumOff + kChksumLen) ? ' ' : h[i];
  return sum == *stored;
}

// Finds the `size` record in PAX extended header data ("<len> <key>=<value>\n" records).
Result<std::optional<uint64_t>> paxSize(const std::string& data) {
  size_t pos = 0;
  std::optional<uint64_t> size;
  while (pos < data.size()) {
    if (data[pos] == '\0') break;  // padding
    size_t sp = data.find(' ', pos);
    if (sp == std::string::npos) return Corrupt("tar: malformed PAX record");
    uint64_t len = 0;
    for (size_t i = pos; i < sp; ++i) {
      if (data[i] < '0' || data[i] > '9' || len > data.size()) return Corrupt("tar: malformed PAX record length");
      len = len * 10 + (data[i] - '0');
    }
    if (len <= sp - pos + 1 || pos + len > data.size() || data[pos + len - 1] != '\n')
      return Corrupt("tar: malformed PAX record");
    std::string rec = data.substr(sp + 1, pos + len - 1 - (sp + 1));
    if (rec.compare(0, 5, "size=") == 0) {
      uint64_t v = 0;
      if (rec.size() == 5 || rec.size() > 5 + 19) return Corrupt("tar: bad PAX size record");
      for (size_t i = 5; i < rec.size(); ++i) {
        if (rec[i] < '0' || rec[i] > '9') return Corrupt("tar: bad PAX size record");
        v = v * 10 + (rec[i] - '0');
      }
      size = v;
    }
    pos += len;
  }
  return size;
}

}  // namespace

Result<std::optional<Member>> detect(ReadableFile& file) {
  const std::string& name = file.name();
  uint64_t fsize = file.size();
  if (fsize < kBlock) return std::optional<Member>();
  uint8_t h[kBlock];
  OBD_RETURN_IF_ERROR(file.read(h, kBlock, 0).wrap(name));
  if (!isUstar(h) || !checksumOk(h)) return std::optional<Member>();

  uint64_t headerAt = 0;
  std::optional<uint64_t> size;
  if (h[kTypeOff] == 'x') {
    auto paxLen = parseNumber(h + kSizeOff, kSizeLen);
    if (!paxLen || *paxLen > kMaxPaxSize) return Corrupt(name + ": tar: PAX header of unreasonable size");
    uint64_t paxBlocks = (*paxLen + kBlock - 1) / kBlock;
    if (kBlock * (2 + paxBlocks) > fsize) return Corrupt(name + ": tar: truncated after the PAX header");
    std::string data(static_cast<size_t>(*paxLen), '\0');
    OBD_RETURN_IF_ERROR(file.read(data.data(), data.size(), kBlock).wrap(name));
    auto ps = paxSize(data);
    if (!ps.ok()) return ps.status().wrap(name);
    size = ps.value();
    headerAt = kBlock * (1 + paxBlocks);
    OBD_RETURN_IF_ERROR(file.read(h, kBlock, headerAt).wrap(name));
    if (!isUstar(h) || !checksumOk(h)) return Corrupt(name + ": tar: bad member header after the PAX header");
  }
  char type = static_cast<char>(h[kTypeOff]);
  if (type != '0' && type != '\0') return Corrupt(name + ": tar: first member is not a regular file (type '" + std::string(1, type) + "')");
  if (!size) {
    auto s = parseNumber(h + kSizeOff, kSizeLen);
    if (!s) return Corrupt(name + ": tar: bad size field");
    size = s;
  }
  Member m{headerAt + kBlock, *size};
  if (m.size > fsize || m.offset > fsize - m.size)
    return Corrupt(name + ": tar: member of " + std::to_string(m.size) + " bytes at " + std::to_string(m.offset) +
                   " runs past the end of the file (" + std::to_string(fsize) + " bytes)");
  return std::optional<Member>(m);
}

void MemberFile::readAsync(void* buf, size_t n, uint64_t off, IoCallback cb) {
  // Bytes at or beyond the member's end read as zero, as ReadableFile promises.
  if (off >= member_.size) {
    std::memset(buf, 0, n);
    cb(Status::Ok());
    return;
  }
  size_t inside = static_cast<size_t>(std::min<uint64_t>(n, member_.size - off));
  if (inside < n) std::memset(static_cast<char*>(buf) + inside, 0, n - inside);
  archive_->readAsync(buf, inside, member_.offset + off, std::move(cb));
}

}  // namespace obd::tar
