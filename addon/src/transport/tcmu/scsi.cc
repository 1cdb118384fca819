#include "transport/tcmu/scsi.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

namespace obd::tcmu {

namespace {

// Opcodes (SPC-4 / SBC-3).
constexpr uint8_t kTestUnitReady = 0x00;
constexpr uint8_t kRead6 = 0x08;
constexpr uint8_t kWrite6 = 0x0a;
constexpr uint8_t kInquiry = 0x12;
constexpr uint8_t kModeSelect6 = 0x15;
constexpr uint8_t kModeSense6 = 0x1a;
constexpr uint8_t kReadCapacity10 = 0x25;
constexpr uint8_t kRead10 = 0x28;
constexpr uint8_t kWrite10 = 0x2a;
constexpr uint8_t kSyncCache10 = 0x35;
constexpr uint8_t kWriteSame10 = 0x41;
constexpr uint8_t kUnmap = 0x42;
constexpr uint8_t kModeSelect10 = 0x55;
constexpr uint8_t kModeSense10 = 0x5a;
constexpr uint8_t kRead16 = 0x88;
constexpr uint8_t kWrite16 = 0x8a;
constexpr uint8_t kSyncCache16 = 0x91;
constexpr uint8_t kWriteSame16 = 0x93;
constexpr uint8_t kServiceActionIn16 = 0x9e;
constexpr uint8_t kRead12 = 0xa8;
constexpr uint8_t kWrite12 = 0xaa;
constexpr uint8_t kSaReadCapacity16 = 0x10;

constexpr uint32_t kMaxUnmapDescriptors = 256;
constexpr uint8_t kSupportedVpdPages[] = {0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2};

uint16_t be16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
uint32_t be32(const uint8_t* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }
uint64_t be64(const uint8_t* p) { return uint64_t(be32(p)) << 32 | be32(p + 4); }
void put16(uint8_t* p, uint16_t v) { p[0] = uint8_t(v >> 8); p[1] = uint8_t(v); }
void put32(uint8_t* p, uint32_t v) { put16(p, uint16_t(v >> 16)); put16(p + 2, uint16_t(v)); }
void put64(uint8_t* p, uint64_t v) { put32(p, uint32_t(v >> 32)); put32(p + 4, uint32_t(v)); }

// Copies a reply into the data-in buffer, truncated to the allocation length.
ScsiResult reply(const DataSegment* seg, size_t n, const uint8_t* buf, size_t len, size_t allocLen) {
  copyToSegments(seg, n, buf, std::min(len, allocLen));
  return ScsiResult::good();
}

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

ScsiResult ScsiResult::check(uint8_t key, uint8_t asc, uint8_t ascq) {
  ScsiResult r;
  r.status = kStatusCheckCondition;
  r.sense[0] = 0x70;  // current error, fixed format
  r.sense[2] = key & 0x0f;
  r.sense[7] = 0x0a;  // additional sense length
  r.sense[12] = asc;
  r.sense[13] = ascq;
  return r;
}

ScsiResult senseInvalidOpcode() { return ScsiResult::check(kSenseIllegalRequest, 0x20, 0x00); }
ScsiResult senseLbaOutOfRange() { return ScsiResult::check(kSenseIllegalRequest, 0x21, 0x00); }
ScsiResult senseInvalidFieldInCdb() { return ScsiResult::check(kSenseIllegalRequest, 0x24, 0x00); }
ScsiResult senseInvalidParamList() { return ScsiResult::check(kSenseIllegalRequest, 0x26, 0x00); }
ScsiResult senseWriteProtected() { return ScsiResult::check(kSenseDataProtect, 0x27, 0x00); }
ScsiResult senseReadError() { return ScsiResult::check(kSenseMediumError, 0x11, 0x00); }
ScsiResult senseWriteError() { return ScsiResult::check(kSenseMediumError, 0x0c, 0x00); }
ScsiResult senseInternalFailure() { return ScsiResult::check(kSenseHardwareError, 0x44, 0x00); }

size_t cdbLength(uint8_t opcode) {
  switch (opcode >> 5) {
    case 0: return 6;
    case 1: case 2: return 10;
    case 4: return 16;
    case 5: return 12;
    default: return 0;
  }
}

bool mayBlock(uint8_t opcode) {
  switch (opcode) {
    case kWrite6: case kWrite10: case kWrite12: case kWrite16:
    case kSyncCache10: case kSyncCache16:
    case kWriteSame10: case kWriteSame16: case kUnmap:
      return true;
    default:
      return false;
  }
}

size_t segmentsLength(const DataSegment* seg, size_t n) {
  size_t total = 0;
  for (size_t i = 0; i < n; i++) total += seg[i].len;
  return total;
}

size_t copyToSegments(const DataSegment* seg, size_t n, const uint8_t* src, size_t len) {
  size_t done = 0;
  for (size_t i = 0; i < n && done < len; i++) {
    size_t k = std::min(seg[i].len, len - done);
    std::memcpy(seg[i].base, src + done, k);
    done += k;
  }
  return done;
}

size_t copyFromSegments(const DataSegment* seg, size_t n, uint8_t* dst, size_t len) {
  size_t done = 0;
  for (size_t i = 0; i < n && done < len; i++) {
    size_t k = std::min(seg[i].len, len - done);
    std::memcpy(dst + done, seg[i].base, k);
    done += k;
  }
  return done;
}

ScsiDisk::ScsiDisk(BlockDevice& dev, ScsiDiskParams params)
    : dev_(dev), params_(std::move(params)), numBlocks_(dev.size() / params_.blockSize) {}

ScsiResult ScsiDisk::checkRange(uint64_t lba, uint64_t count) const {
  if (lba > numBlocks_ || count > numBlocks_ - lba) return senseLbaOutOfRange();
  return ScsiResult::good();
}

void ScsiDisk::execute(const uint8_t* cdb, size_t cdbLen, const DataSegment* data, size_t segments,
                       ScsiDone done) {
  if (cdbLen == 0 || cdbLen < cdbLength(cdb[0])) return done(senseInvalidOpcode());
  Cmd c{cdb, cdbLen, data, segments};
  const uint8_t op = cdb[0];
  switch (op) {
    case kTestUnitReady: return done(ScsiResult::good());
    case kInquiry: return done(inquiry(c));
    case kReadCapacity10: return done(readCapacity10(c));
    case kServiceActionIn16: return done(serviceActionIn16(c));
    case kModeSense6: return done(modeSense(c, false));
    case kModeSense10: return done(modeSense(c, true));
    case kModeSelect6: return done(modeSelect(c, false));
    case kModeSelect10: return done(modeSelect(c, true));
    case kRead6: {
      uint64_t lba = uint64_t(cdb[1] & 0x1f) << 16 | be16(cdb + 2);
      return readBlocks(c, lba, cdb[4] == 0 ? 256 : cdb[4], std::move(done));
    }
    case kRead10: return readBlocks(c, be32(cdb + 2), be16(cdb + 7), std::move(done));
    case kRead12: return readBlocks(c, be32(cdb + 2), be32(cdb + 6), std::move(done));
    case kRead16: return readBlocks(c, be64(cdb + 2), be32(cdb + 10), std::move(done));
    case kWrite6: {
      uint64_t lba = uint64_t(cdb[1] & 0x1f) << 16 | be16(cdb + 2);
      return done(writeBlocks(c, lba, cdb[4] == 0 ? 256 : cdb[4]));
    }
    case kWrite10: return done(writeBlocks(c, be32(cdb + 2), be16(cdb + 7)));
    case kWrite12: return done(writeBlocks(c, be32(cdb + 2), be32(cdb + 6)));
    case kWrite16: return done(writeBlocks(c, be64(cdb + 2), be32(cdb + 10)));
    case kSyncCache10:
    case kSyncCache16: return done(synchronizeCache());
    case kUnmap: return done(unmap(c));
    case kWriteSame10: return done(writeSame(c, be32(cdb + 2), be16(cdb + 7)));
    case kWriteSame16: return done(writeSame(c, be64(cdb + 2), be32(cdb + 10)));
    default: return done(senseInvalidOpcode());
  }
}

ScsiResult ScsiDisk::inquiry(const Cmd& c) {
  const bool evpd = c.cdb[1] & 0x01;
  const uint8_t page = c.cdb[2];
  const size_t allocLen = be16(c.cdb + 3);
  if (!evpd) {
    if (page != 0) return senseInvalidFieldInCdb();
    uint8_t buf[36] = {};
    buf[0] = 0x00;  // direct-access block device, connected
    buf[2] = 0x05;  // SPC-3
    buf[3] = 0x02;  // response data format 2
    buf[4] = 31;    // additional length
    buf[5] = 0x08;  // 3PC
    buf[7] = 0x02;  // CmdQue
    std::memcpy(buf + 8, "LIO-ORG ", 8);
    std::memcpy(buf + 16, "TCMU device     ", 16);
    std::memcpy(buf + 32, "0002", 4);
    return reply(c.data, c.segments, buf, sizeof buf, allocLen);
  }
  uint8_t buf[512] = {};
  size_t len = 0;
  ScsiResult r = vpdPage(page, buf, len);
  if (r.status != kStatusGood) return r;
  return reply(c.data, c.segments, buf, len, allocLen);
}

ScsiResult ScsiDisk::vpdPage(uint8_t page, uint8_t* buf, size_t& len) {
  buf[1] = page;
  const std::string& serial = params_.unitSerial;
  switch (page) {
    case 0x00:
      buf[3] = sizeof kSupportedVpdPages;
      std::memcpy(buf + 4, kSupportedVpdPages, sizeof kSupportedVpdPages);
      len = 16;
      return ScsiResult::good();
    case 0x80: {
      size_t n = std::min<size_t>(serial.size(), 254);
      buf[3] = uint8_t(n + 1);
      std::memcpy(buf + 4, serial.data(), n);  // followed by NUL (buffer is zeroed)
      len = 512;
      return ScsiResult::good();
    }
    case 0x83: {
      size_t p = 4;
      // 1: T10 vendor id, ASCII: "LIO-ORG " + serial + NUL.
      size_t n = std::min<size_t>(serial.size(), 200);
      buf[p] = 0x02; buf[p + 1] = 0x01; buf[p + 3] = uint8_t(8 + n + 1);
      std::memcpy(buf + p + 4, "LIO-ORG ", 8);
      std::memcpy(buf + p + 12, serial.data(), n);
      p += 4 + 8 + n + 1;
      // 2: NAA IEEE registered extended (type 6), OpenFabrics OUI 00-14-05, then the serial's hex digits.
      buf[p] = 0x01; buf[p + 1] = 0x03; buf[p + 3] = 0x10;
      uint8_t* naa = buf + p + 4;
      naa[0] = 0x60; naa[1] = 0x01; naa[2] = 0x40; naa[3] = 0x50;
      size_t nibble = 7;  // low nibble of byte 3
      for (char ch : serial) {
        int v = hexValue(ch);
        if (v < 0) continue;
        if (nibble >= 32) break;
        naa[nibble / 2] |= (nibble % 2) ? uint8_t(v) : uint8_t(v << 4);
        nibble++;
      }
      p += 4 + 16;
      // 3: vendor specific, the handler cfgstring.
      size_t m = std::min<size_t>(params_.cfgString.size(), 512 - p - 5);
      buf[p] = 0x02; buf[p + 1] = 0x00; buf[p + 3] = uint8_t(std::min<size_t>(m + 1, 255));
      std::memcpy(buf + p + 4, params_.cfgString.data(), std::min<size_t>(m, 254));
      p += 4 + std::min<size_t>(m + 1, 255);
      put16(buf + 2, uint16_t(p - 4));
      len = p;
      return ScsiResult::good();
    }
    case 0xb0: {
      put16(buf + 2, 0x3c);
      buf[4] = 0x01;  // WSNZ
      buf[5] = 0x01;  // max COMPARE AND WRITE length
      put32(buf + 8, params_.maxTransferBlocks);
      put32(buf + 12, params_.maxTransferBlocks);
      if (unmapEnabled()) {
        put32(buf + 20, uint32_t(std::min<uint64_t>(numBlocks_, 0xffffffffu)));  // max unmap LBA count
        put32(buf + 24, kMaxUnmapDescriptors);
        put32(buf + 28, 1);     // optimal unmap granularity (blocks)
        put32(buf + 32, 0);     // alignment 0 ...
        buf[32] |= 0x80;        // ... valid (UGAVALID)
      }
      put64(buf + 36, 0xffffffffu);  // max WRITE SAME length
      len = 64;
      return ScsiResult::good();
    }
    case 0xb1:
      put16(buf + 2, 0x3c);
      put16(buf + 4, 0x0001);  // non-rotating medium
      len = 64;
      return ScsiResult::good();
    case 0xb2:
      put16(buf + 2, 0x04);
      buf[5] = 0x04;                      // LBPRZ: unmapped blocks read as zeros
      if (unmapEnabled()) buf[5] |= 0xe0;  // LBPU, LBPWS, LBPWS10
      len = 8;
      return ScsiResult::good();
    default:
      return senseInvalidFieldInCdb();
  }
}

ScsiResult ScsiDisk::readCapacity10(const Cmd& c) {
  uint8_t buf[8];
  uint64_t last = numBlocks_ ? numBlocks_ - 1 : 0;
  put32(buf, last >= 0xffffffffu ? 0xffffffffu : uint32_t(last));
  put32(buf + 4, params_.blockSize);
  return reply(c.data, c.segments, buf, sizeof buf, sizeof buf);
}

ScsiResult ScsiDisk::serviceActionIn16(const Cmd& c) {
  if ((c.cdb[1] & 0x1f) != kSaReadCapacity16) return senseInvalidFieldInCdb();
  uint8_t buf[32] = {};
  put64(buf, numBlocks_ ? numBlocks_ - 1 : 0);
  put32(buf + 8, params_.blockSize);
  if (unmapEnabled()) buf[14] = 0xc0;  // LBPME | LBPRZ
  return reply(c.data, c.segments, buf, sizeof buf, be32(c.cdb + 10));
}

// Writes one mode page (current values, or the changeable mask: nothing is changeable) into out.
size_t ScsiDisk::modePage(uint8_t page, bool changeable, uint8_t* out) {
  size_t len = 0;
  switch (page) {
    case 0x01:  // read-write error recovery
      len = 12;
      std::memset(out, 0, len);
      out[0] = 0x01; out[1] = 0x0a;
      break;
    case 0x08:  // caching
      len = 20;
      std::memset(out, 0, len);
      out[0] = 0x08; out[1] = 0x12;
      if (params_.writeCache && !changeable) out[2] = 0x04;  // WCE
      break;
    case 0x0a: {  // control
      static const uint8_t kControl[12] = {0x0a, 0x0a, 0x02, 0, 0, 0x40, 0, 0, 0xff, 0xff, 0, 0};
      len = 12;
      std::memcpy(out, kControl, len);
      if (changeable) std::memset(out + 2, 0, len - 2);
      break;
    }
  }
  return len;
}

ScsiResult ScsiDisk::modeSense(const Cmd& c, bool ten) {
  const uint8_t pc = c.cdb[2] >> 6;
  const uint8_t page = c.cdb[2] & 0x3f;
  const uint8_t subpage = c.cdb[3];
  const size_t allocLen = ten ? be16(c.cdb + 7) : c.cdb[4];
  if (pc == 3) return ScsiResult::check(kSenseIllegalRequest, 0x39, 0x00);  // saving not supported
  if (subpage != 0 && !(page == 0x3f && subpage == 0xff)) return senseInvalidFieldInCdb();
  uint8_t buf[128] = {};
  size_t used = ten ? 8 : 4;
  if (page == 0x3f) {
    for (uint8_t p : {0x01, 0x08, 0x0a}) used += modePage(p, pc == 1, buf + used);
  } else {
    size_t n = modePage(page, pc == 1, buf + used);
    if (n == 0) return senseInvalidFieldInCdb();
    used += n;
  }
  const uint8_t deviceSpecific = dev_.readOnly() ? 0x80 : 0x00;  // WP
  if (ten) {
    put16(buf, uint16_t(used - 2));
    buf[3] = deviceSpecific;
  } else {
    buf[0] = uint8_t(used - 1);
    buf[2] = deviceSpecific;
  }
  return reply(c.data, c.segments, buf, used, allocLen);
}

// Accepts only parameter lists that leave every page at its current value.
ScsiResult ScsiDisk::modeSelect(const Cmd& c, bool ten) {
  const size_t listLen = ten ? be16(c.cdb + 7) : c.cdb[4];
  if (!(c.cdb[1] & 0x10) && listLen != 0) return senseInvalidFieldInCdb();  // PF must be set
  if (listLen == 0) return ScsiResult::good();
  const size_t hdr = ten ? 8 : 4;
  if (listLen < hdr || segmentsLength(c.data, c.segments) < listLen) return senseInvalidParamList();
  std::vector<uint8_t> list(listLen);
  copyFromSegments(c.data, c.segments, list.data(), listLen);
  const size_t blockDescLen = ten ? be16(list.data() + 6) : list[3];
  size_t p = hdr + blockDescLen;
  if (p > listLen) return senseInvalidParamList();
  while (p < listLen) {
    if (p + 2 > listLen) return senseInvalidParamList();
    uint8_t current[32] = {};
    size_t n = modePage(list[p] & 0x3f, false, current);
    if (n == 0 || p + n > listLen) return senseInvalidParamList();
    if (std::memcmp(list.data() + p + 2, current + 2, n - 2) != 0) return senseInvalidParamList();
    p += n;
  }
  return ScsiResult::good();
}

namespace {
// State of one READ command until the device calls back (kept general: several partial reads may join).
struct ReadJoin {
  std::atomic<size_t> remaining;
  std::mutex mu;
  Status first;
  std::vector<uint8_t> bounce;  // when the data spans several segments
  const DataSegment* segs = nullptr;
  size_t segCount = 0;
  ScsiDone done;

  void finish(Status st) {
    if (!st.ok()) {
      std::lock_guard<std::mutex> lock(mu);
      if (first.ok()) first = st;
    }
    if (remaining.fetch_sub(1) != 1) return;
    if (!first.ok()) return done(senseReadError());
    if (!bounce.empty()) copyToSegments(segs, segCount, bounce.data(), bounce.size());
    done(ScsiResult::good());
  }
};
}  // namespace

// One device call per command: the kernel hands data as page-sized iovecs, and one large read or write
// is far cheaper for a layer stack (one index lookup, one remote range, one LSMT extent) than one per
// page; the extra copy through a bounce buffer is small next to that.
void ScsiDisk::readBlocks(const Cmd& c, uint64_t lba, uint64_t count, ScsiDone done) {
  ScsiResult r = checkRange(lba, count);
  if (r.status != kStatusGood) return done(r);
  if (count == 0) return done(ScsiResult::good());
  const uint64_t bytes = count * params_.blockSize;
  if (segmentsLength(c.data, c.segments) < bytes) return done(senseInternalFailure());
  auto join = std::make_shared<ReadJoin>();
  join->done = std::move(done);
  join->segs = c.data;
  join->segCount = c.segments;
  join->remaining = 1;
  uint8_t* target = c.data[0].base;
  if (c.data[0].len < bytes) {
    join->bounce.resize(bytes);
    target = join->bounce.data();
  }
  dev_.readAsync(target, bytes, lba * params_.blockSize, [join](Status st) { join->finish(std::move(st)); });
}

ScsiResult ScsiDisk::writeBlocks(const Cmd& c, uint64_t lba, uint64_t count) {
  if (dev_.readOnly()) return senseWriteProtected();
  ScsiResult r = checkRange(lba, count);
  if (r.status != kStatusGood || count == 0) return r;
  const uint64_t bytes = count * params_.blockSize;
  if (segmentsLength(c.data, c.segments) < bytes) return senseInternalFailure();
  const uint8_t* src = c.data[0].base;
  std::vector<uint8_t> buf;
  if (c.data[0].len < bytes) {
    buf.resize(bytes);
    copyFromSegments(c.data, c.segments, buf.data(), bytes);
    src = buf.data();
  }
  Status st = dev_.write(src, bytes, lba * params_.blockSize);
  if (st.code() == EROFS) return senseWriteProtected();
  return st.ok() ? ScsiResult::good() : senseWriteError();
}

ScsiResult ScsiDisk::synchronizeCache() {
  if (dev_.readOnly()) return ScsiResult::good();
  return dev_.flush().ok() ? ScsiResult::good() : senseWriteError();
}

ScsiResult ScsiDisk::unmap(const Cmd& c) {
  if (dev_.readOnly()) return senseWriteProtected();
  if (c.cdb[1] & 0x01) return senseInvalidFieldInCdb();  // ANCHOR not supported
  const size_t listLen = be16(c.cdb + 7);
  if (listLen == 0) return ScsiResult::good();
  if (listLen < 8 || segmentsLength(c.data, c.segments) < listLen) return senseInvalidParamList();
  std::vector<uint8_t> list(listLen);
  copyFromSegments(c.data, c.segments, list.data(), listLen);
  const size_t dataLen = be16(list.data());
  const size_t descLen = be16(list.data() + 2);
  if (dataLen + 2 > listLen || descLen + 8 > listLen || descLen % 16 != 0) return senseInvalidParamList();
  const size_t n = descLen / 16;
  if (n > kMaxUnmapDescriptors) return senseInvalidFieldInCdb();
  for (size_t i = 0; i < n; i++) {  // validate everything before changing anything
    const uint8_t* d = list.data() + 8 + 16 * i;
    ScsiResult r = checkRange(be64(d), be32(d + 8));
    if (r.status != kStatusGood) return r;
  }
  for (size_t i = 0; i < n; i++) {
    const uint8_t* d = list.data() + 8 + 16 * i;
    uint64_t count = be32(d + 8);
    if (count == 0) continue;
    if (!dev_.discard(be64(d) * params_.blockSize, count * params_.blockSize).ok()) return senseWriteError();
  }
  return ScsiResult::good();
}

ScsiResult ScsiDisk::writeSame(const Cmd& c, uint64_t lba, uint64_t count) {
  if (dev_.readOnly()) return senseWriteProtected();
  const bool unmapBit = c.cdb[1] & 0x08;
  const bool ndob = c.cdb[0] == kWriteSame16 && (c.cdb[1] & 0x01);
  if (count == 0) return senseInvalidFieldInCdb();  // WSNZ
  ScsiResult r = checkRange(lba, count);
  if (r.status != kStatusGood) return r;
  const uint32_t bs = params_.blockSize;
  std::vector<uint8_t> block(bs, 0);
  if (!ndob) {
    if (segmentsLength(c.data, c.segments) < bs) return senseInternalFailure();
    copyFromSegments(c.data, c.segments, block.data(), bs);
  }
  const bool zero = std::all_of(block.begin(), block.end(), [](uint8_t b) { return b == 0; });
  if (unmapBit && zero) {
    return dev_.discard(lba * bs, count * bs).ok() ? ScsiResult::good() : senseWriteError();
  }
  // Write the block repeatedly, a bounded chunk at a time.
  const uint64_t chunkBlocks = std::min<uint64_t>(count, 2048);
  std::vector<uint8_t> chunk(chunkBlocks * bs);
  for (uint64_t i = 0; i < chunkBlocks; i++) std::memcpy(chunk.data() + i * bs, block.data(), bs);
  for (uint64_t done = 0; done < count;) {
    uint64_t n = std::min(chunkBlocks, count - done);
    Status st = dev_.write(chunk.data(), n * bs, (lba + done) * bs);
    if (st.code() == EROFS) return senseWriteProtected();
    if (!st.ok()) return senseWriteError();
    done += n;
  }
  return ScsiResult::good();
}

}  // namespace obd::tcmu
