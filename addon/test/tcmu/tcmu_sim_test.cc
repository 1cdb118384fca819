// Drives the TCMU handler (RingProcessor + ScsiDisk) through the simulated kernel side with real CDBs.
// Usage: tcmu_sim_test --list | tcmu_sim_test <case>... | tcmu_sim_test (all cases)
//        tcmu_sim_test --serve <backing-file> <size-MiB> [--read-only]  (real kernel: see serve.cc)
//        tcmu_sim_test --probe [--load]  (kernel support: exit 0, or 77 with the reason)
// Each case prints "ok <name>" or "not ok <name>: <why>"; the exit status is non-zero if any failed.
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "fake_configfs.h"
#include "mem_disk.h"
#include "sim.h"
#include "transport/tcmu/kernel.h"
#include "transport/tcmu/ring_processor.h"
#include "transport/tcmu/scsi.h"
#include "transport/tcmu/tcmu_device.h"
#include "transport/serve.h"

using namespace obd;
using namespace obd::tcmu;
using namespace obd::tcmu::sim;

int serveMain(int argc, char** argv);  // serve.cc

namespace {

struct Failure {
  std::string what;
};

#define CHECK(cond, msg)                                                             \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::ostringstream os_;                                                        \
      os_ << __LINE__ << ": " << msg;                                                \
      throw Failure{os_.str()};                                                      \
    }                                                                                \
  } while (0)

constexpr uint64_t kDiskSize = 8 << 20;  // 16384 blocks of 512
constexpr uint32_t kBs = 512;

std::vector<uint8_t> be(uint64_t v, int n) {
  std::vector<uint8_t> out(n);
  for (int i = n - 1; i >= 0; i--, v >>= 8) out[i] = uint8_t(v);
  return out;
}
uint64_t rdbe(const std::vector<uint8_t>& b, size_t off, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++) v = v << 8 | b.at(off + i);
  return v;
}

std::vector<uint8_t> rw10(uint8_t op, uint32_t lba, uint16_t n) {
  std::vector<uint8_t> c(10, 0);
  c[0] = op;
  auto l = be(lba, 4), k = be(n, 2);
  std::copy(l.begin(), l.end(), c.begin() + 2);
  std::copy(k.begin(), k.end(), c.begin() + 7);
  return c;
}
std::vector<uint8_t> rw16(uint8_t op, uint64_t lba, uint32_t n) {
  std::vector<uint8_t> c(16, 0);
  c[0] = op;
  auto l = be(lba, 8), k = be(n, 4);
  std::copy(l.begin(), l.end(), c.begin() + 2);
  std::copy(k.begin(), k.end(), c.begin() + 10);
  return c;
}
std::vector<uint8_t> rw6(uint8_t op, uint32_t lba, uint8_t n) {
  return {op, uint8_t((lba >> 16) & 0x1f), uint8_t(lba >> 8), uint8_t(lba), n, 0};
}
std::vector<uint8_t> rw12(uint8_t op, uint32_t lba, uint32_t n) {
  std::vector<uint8_t> c(12, 0);
  c[0] = op;
  auto l = be(lba, 4), k = be(n, 4);
  std::copy(l.begin(), l.end(), c.begin() + 2);
  std::copy(k.begin(), k.end(), c.begin() + 6);
  return c;
}
std::vector<uint8_t> inquiry(bool evpd, uint8_t page, uint16_t alloc) {
  return {0x12, uint8_t(evpd ? 1 : 0), page, uint8_t(alloc >> 8), uint8_t(alloc), 0};
}

std::vector<uint8_t> randomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = uint8_t(rng());
  return v;
}

// One handler over one simulated kernel and one MemDisk.
struct Rig {
  MemDisk disk;
  KernelSim kernel;
  ScsiDisk scsi;
  std::unique_ptr<RingProcessor> proc;

  explicit Rig(bool readOnly = false, uint32_t ringSize = 64 * 1024, uint32_t dataBlocks = 1024)
      : disk(kDiskSize, readOnly),
        kernel(ringSize, dataBlocks),
        scsi(disk, ScsiDiskParams{kBs, 2048, "1234567890abcdef0123", "obd//tmp/config.v1.json", false}) {
    auto r = RingProcessor::create(kernel.base(), kernel.size(), kernel.doorbell(), scsi);
    CHECK(r.ok(), "create: " << r.status().message());
    proc = r.take();
    CHECK(proc->start().ok(), "start");
  }
  ~Rig() {
    if (proc) proc->stop();
  }
  Completion run(const std::vector<uint8_t>& cdb, const std::vector<uint8_t>& out = {}, size_t in = 0,
                 const SubmitOptions& opt = {}) {
    std::string err;
    Completion c = kernel.run(cdb, out, in, &err, opt);
    CHECK(err.empty(), "cdb 0x" << std::hex << int(cdb[0]) << ": " << err);
    return c;
  }
};

void expectGood(const Completion& c, const char* what) {
  CHECK(c.status == kStatusGood, what << ": status 0x" << std::hex << int(c.status) << " key " << int(c.senseKey())
                                      << " asc " << int(c.asc()) << "/" << int(c.ascq()));
}
void expectSense(const Completion& c, uint8_t key, uint8_t asc, uint8_t ascq, const char* what) {
  CHECK(c.status == kStatusCheckCondition, what << ": status 0x" << std::hex << int(c.status) << ", want CHECK CONDITION");
  CHECK(c.sense[0] == 0x70 && c.sense[7] == 0x0a, what << ": sense is not fixed format");
  CHECK(c.senseKey() == key && c.asc() == asc && c.ascq() == ascq,
        what << ": sense " << std::hex << int(c.senseKey()) << "/" << int(c.asc()) << "/" << int(c.ascq()) << ", want "
             << int(key) << "/" << int(asc) << "/" << int(ascq));
}

// ---- cases ----

void inquiryStandardAndVpd() {
  Rig rig;
  Completion c = rig.run(inquiry(false, 0, 96), {}, 96);
  expectGood(c, "std inquiry");
  CHECK(c.dataIn[0] == 0 && c.dataIn[2] == 5 && c.dataIn[3] == 2 && c.dataIn[4] == 31, "std header");
  CHECK(c.dataIn[7] & 0x02, "CmdQue");
  CHECK(std::string(c.dataIn.begin() + 8, c.dataIn.begin() + 16) == "LIO-ORG ", "vendor");
  CHECK(std::string(c.dataIn.begin() + 16, c.dataIn.begin() + 32) == "TCMU device     ", "product");
  CHECK(std::string(c.dataIn.begin() + 32, c.dataIn.begin() + 36) == "0002", "revision");
  CHECK(c.dataIn[40] == 0xEE, "wrote past the 36-byte reply");
  c = rig.run(inquiry(false, 0, 5), {}, 512);
  expectGood(c, "short alloc");
  CHECK(c.dataIn[4] == 31 && c.dataIn[5] == 0xEE, "allocation length not honoured");
  expectSense(rig.run(inquiry(false, 0x80, 96), {}, 96), kSenseIllegalRequest, 0x24, 0, "EVPD=0 with page");

  c = rig.run(inquiry(true, 0x00, 255), {}, 255);
  expectGood(c, "vpd 00");
  std::vector<uint8_t> pages(c.dataIn.begin() + 4, c.dataIn.begin() + 4 + c.dataIn[3]);
  CHECK((pages == std::vector<uint8_t>{0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2}), "supported pages list");
  c = rig.run(inquiry(true, 0x80, 255), {}, 255);
  expectGood(c, "vpd 80");
  CHECK(c.dataIn[1] == 0x80 && std::string((char*)&c.dataIn[4]) == "1234567890abcdef0123", "serial");
  c = rig.run(inquiry(true, 0x83, 512), {}, 512);
  expectGood(c, "vpd 83");
  size_t plen = rdbe(c.dataIn, 2, 2), p = 4;
  int seen = 0;
  bool naa = false, t10 = false, vendor = false;
  while (p < 4 + plen) {
    uint8_t type = c.dataIn[p + 1] & 0x0f, len = c.dataIn[p + 3];
    if (type == 0x03) {
      naa = c.dataIn[p + 4] == 0x60 && c.dataIn[p + 5] == 0x01 && c.dataIn[p + 6] == 0x40 &&
            c.dataIn[p + 7] == 0x51 && c.dataIn[p + 8] == 0x23 && len == 16;
    }
    if (type == 0x01) t10 = std::string((char*)&c.dataIn[p + 4], 8) == "LIO-ORG ";
    if (type == 0x00) vendor = std::string((char*)&c.dataIn[p + 4]) == "obd//tmp/config.v1.json";
    p += 4 + len;
    seen++;
  }
  CHECK(seen == 3 && naa && t10 && vendor, "vpd 83 descriptors (seen " << seen << " naa " << naa << " t10 " << t10
                                                                       << " vendor " << vendor << ")");
  c = rig.run(inquiry(true, 0xb0, 64), {}, 64);
  expectGood(c, "vpd b0");
  CHECK(rdbe(c.dataIn, 2, 2) == 0x3c && rdbe(c.dataIn, 8, 4) == 2048, "b0 length / max transfer");
  CHECK(rdbe(c.dataIn, 24, 4) > 0 && (c.dataIn[32] & 0x80), "b0 unmap fields on a writable disk");
  CHECK(rdbe(c.dataIn, 36, 8) == 0xffffffffu, "b0 max write same");
  c = rig.run(inquiry(true, 0xb1, 64), {}, 64);
  expectGood(c, "vpd b1");
  CHECK(rdbe(c.dataIn, 4, 2) == 1, "b1 non-rotating");
  c = rig.run(inquiry(true, 0xb2, 8), {}, 8);
  expectGood(c, "vpd b2");
  CHECK(c.dataIn[5] == 0xe4, "b2 LBPU|LBPWS|LBPWS10|LBPRZ, got " << int(c.dataIn[5]));
  expectSense(rig.run(inquiry(true, 0x86, 64), {}, 64), kSenseIllegalRequest, 0x24, 0, "unknown vpd page");
}

void testUnitReadyAndBadOpcodes() {
  Rig rig;
  expectGood(rig.run({0, 0, 0, 0, 0, 0}), "TEST UNIT READY");
  expectSense(rig.run({0x02, 0, 0, 0, 0, 0}), kSenseIllegalRequest, 0x20, 0, "opcode 0x02");
  expectSense(rig.run({0x7f, 0, 0, 0, 0, 0, 0, 0, 0, 0}), kSenseIllegalRequest, 0x20, 0, "variable-length CDB");
  expectSense(rig.run({0xc0, 0, 0, 0, 0, 0}), kSenseIllegalRequest, 0x20, 0, "vendor opcode");
  expectSense(rig.run({0xa3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}), kSenseIllegalRequest, 0x20, 0, "MAINTENANCE IN");
  std::vector<uint8_t> sai(16, 0);
  sai[0] = 0x9e;
  sai[1] = 0x12;
  expectSense(rig.run(sai, {}, 32), kSenseIllegalRequest, 0x24, 0, "SERVICE ACTION IN other than RC16");
}

void readCapacity() {
  Rig rig;
  Completion c = rig.run({0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0}, {}, 8);
  expectGood(c, "RC10");
  CHECK(rdbe(c.dataIn, 0, 4) == kDiskSize / kBs - 1 && rdbe(c.dataIn, 4, 4) == kBs, "RC10 values");
  std::vector<uint8_t> rc16(16, 0);
  rc16[0] = 0x9e;
  rc16[1] = 0x10;
  rc16[13] = 32;
  c = rig.run(rc16, {}, 32);
  expectGood(c, "RC16");
  CHECK(rdbe(c.dataIn, 0, 8) == kDiskSize / kBs - 1 && rdbe(c.dataIn, 8, 4) == kBs, "RC16 values");
  CHECK(c.dataIn[14] == 0xc0, "RC16 LBPME|LBPRZ");
}

void modeSenseAndSelect() {
  for (bool ro : {false, true}) {
    Rig rig(ro);
    Completion c = rig.run({0x1a, 0, 0x3f, 0, 255, 0}, {}, 255);
    expectGood(c, "MS6 all");
    CHECK(c.dataIn[0] == 4 + 12 + 20 + 12 - 1, "MS6 length " << int(c.dataIn[0]));
    CHECK(((c.dataIn[2] & 0x80) != 0) == ro, "MS6 WP bit for read-only=" << ro);
    CHECK(c.dataIn[4] == 0x01 && c.dataIn[16] == 0x08 && c.dataIn[36] == 0x0a, "page order 01 08 0a");
    CHECK((c.dataIn[18] & 0x04) == 0, "write cache disabled");
    c = rig.run({0x5a, 0, 0x08, 0, 0, 0, 0, 0, 255, 0}, {}, 255);
    expectGood(c, "MS10 caching");
    CHECK(rdbe(c.dataIn, 0, 2) == 8 + 20 - 2 && c.dataIn[8] == 0x08 && c.dataIn[9] == 0x12, "MS10 caching page");
    CHECK(((c.dataIn[3] & 0x80) != 0) == ro, "MS10 WP bit for read-only=" << ro);
    c = rig.run({0x1a, 0, 0x0a, 0, 8, 0}, {}, 64);
    expectGood(c, "MS6 control truncated");
    CHECK(c.dataIn[0] == 4 + 12 - 1 && c.dataIn[8] == 0xEE, "allocation length honoured");
    expectSense(rig.run({0x1a, 0, 0x1c, 0, 255, 0}, {}, 255), kSenseIllegalRequest, 0x24, 0, "unknown mode page");
  }
  {  // a disk with a write cache says so (WCE), so that the initiator sends SYNCHRONIZE CACHE
    MemDisk d(kDiskSize);
    ScsiDisk wc(d, ScsiDiskParams{kBs, 2048, "s", "", true});
    uint8_t buf[64] = {};
    DataSegment seg{buf, sizeof buf};
    const uint8_t cdb[6] = {0x1a, 0, 0x08, 0, 64, 0};
    uint8_t status = 0xff;
    wc.execute(cdb, 6, &seg, 1, [&](const ScsiResult& r) { status = r.status; });
    CHECK(status == kStatusGood && buf[4] == 0x08 && (buf[6] & 0x04), "WCE not reported");
  }
  Rig rig;
  std::vector<uint8_t> same = {0, 0, 0, 0, 0x0a, 0x0a, 0x02, 0, 0, 0x40, 0, 0, 0xff, 0xff, 0, 0};
  expectGood(rig.run({0x15, 0x10, 0, 0, uint8_t(same.size()), 0}, same, 0), "MODE SELECT current values");
  std::vector<uint8_t> diff = same;
  diff[6] = 0x00;
  expectSense(rig.run({0x15, 0x10, 0, 0, uint8_t(diff.size()), 0}, diff, 0), kSenseIllegalRequest, 0x26, 0,
              "MODE SELECT changing a value");
}

void readWriteRoundTrip() {
  Rig rig;
  std::mt19937 rng(3);
  std::vector<uint8_t> ref = rig.disk.snapshot(0, kDiskSize);
  const uint64_t blocks = kDiskSize / kBs;
  for (int i = 0; i < 120; i++) {
    int kind = i % 4;  // 6, 10, 12, 16
    uint32_t n = 1 + rng() % (kind == 0 ? 255 : 300);
    uint64_t lba = rng() % (kind == 0 ? std::min<uint64_t>(blocks, 0x1fffff) - n : blocks - n);
    std::vector<uint8_t> data = randomBytes(n * kBs, rng());
    std::vector<uint8_t> w = kind == 0 ? rw6(0x0a, uint32_t(lba), uint8_t(n))
                           : kind == 1 ? rw10(0x2a, uint32_t(lba), uint16_t(n))
                           : kind == 2 ? rw12(0xaa, uint32_t(lba), n) : rw16(0x8a, lba, n);
    expectGood(rig.run(w, data), "write");
    std::copy(data.begin(), data.end(), ref.begin() + long(lba * kBs));
    // read back a different, overlapping range with a different CDB size
    uint32_t rn = 1 + rng() % 255;
    uint64_t rl = rng() % (std::min<uint64_t>(blocks, 0x1fffff) - rn);
    std::vector<uint8_t> r = (i % 3 == 0) ? rw6(0x08, uint32_t(rl), uint8_t(rn))
                           : (i % 3 == 1) ? rw10(0x28, uint32_t(rl), uint16_t(rn)) : rw16(0x88, rl, rn);
    Completion c = rig.run(r, {}, rn * kBs);
    expectGood(c, "read");
    CHECK(std::equal(c.dataIn.begin(), c.dataIn.end(), ref.begin() + long(rl * kBs)), "read data differs at lba " << rl);
  }
  CHECK(rig.disk.snapshot(0, kDiskSize) == ref, "disk differs from the reference");
  // READ(6) transfer length 0 means 256 blocks
  Completion c = rig.run(rw6(0x08, 10, 0), {}, 256 * kBs);
  expectGood(c, "READ(6) 256");
  CHECK(std::equal(c.dataIn.begin(), c.dataIn.end(), ref.begin() + 10 * kBs), "READ(6) 256 data");
  expectGood(rig.run(rw10(0x28, 5, 0)), "READ(10) of 0 blocks");
}

void lbaOutOfRange() {
  Rig rig;
  const uint64_t blocks = kDiskSize / kBs;
  std::vector<uint8_t> before = rig.disk.snapshot(0, kDiskSize);
  expectSense(rig.run(rw10(0x28, uint32_t(blocks), 1), {}, kBs), kSenseIllegalRequest, 0x21, 0, "read at end");
  expectSense(rig.run(rw10(0x28, uint32_t(blocks - 1), 2), {}, 2 * kBs), kSenseIllegalRequest, 0x21, 0, "read across end");
  expectSense(rig.run(rw16(0x88, ~0ull, 2), {}, 2 * kBs), kSenseIllegalRequest, 0x21, 0, "READ(16) lba overflow");
  expectSense(rig.run(rw16(0x8a, blocks - 1, 2), randomBytes(2 * kBs, 1)), kSenseIllegalRequest, 0x21, 0,
              "write across end");
  expectSense(rig.run(rw6(0x0a, uint32_t(blocks), 1), randomBytes(kBs, 1)), kSenseIllegalRequest, 0x21, 0, "WRITE(6)");
  CHECK(rig.disk.snapshot(0, kDiskSize) == before, "out-of-range command changed the disk");
  Completion c = rig.run(rw10(0x28, uint32_t(blocks - 1), 1), {}, kBs);
  expectGood(c, "last block");
}

void writeProtect() {
  Rig rig(true);
  std::vector<uint8_t> before = rig.disk.snapshot(0, kDiskSize);
  expectSense(rig.run(rw10(0x2a, 0, 1), randomBytes(kBs, 2)), kSenseDataProtect, 0x27, 0, "WRITE(10) read-only");
  expectSense(rig.run(rw16(0x8a, 8, 8), randomBytes(8 * kBs, 2)), kSenseDataProtect, 0x27, 0, "WRITE(16) read-only");
  std::vector<uint8_t> ws = rw16(0x93, 0, 8);
  ws[1] = 0x08;
  expectSense(rig.run(ws, std::vector<uint8_t>(kBs, 0)), kSenseDataProtect, 0x27, 0, "WRITE SAME read-only");
  std::vector<uint8_t> list = {0, 22, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0};
  expectSense(rig.run({0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0}, list), kSenseDataProtect, 0x27, 0, "UNMAP read-only");
  CHECK(rig.disk.snapshot(0, kDiskSize) == before, "read-only disk changed");
  Completion c = rig.run(rw10(0x28, 0, 4), {}, 4 * kBs);
  expectGood(c, "read on read-only disk");
  expectGood(rig.run({0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0}), "SYNC CACHE on read-only disk");
  c = rig.run(inquiry(true, 0xb2, 8), {}, 8);
  CHECK(c.dataIn[5] == 0x04, "b2 advertises no unmap on a read-only disk");
}

void mediumErrors() {
  Rig rig;
  rig.disk.failReads(100 * kBs, kBs);
  expectSense(rig.run(rw10(0x28, 96, 8), {}, 8 * kBs), kSenseMediumError, 0x11, 0, "read error");
  expectGood(rig.run(rw10(0x28, 101, 8), {}, 8 * kBs), "read next to the bad block");
  rig.disk.failWrites(200 * kBs, kBs);
  expectSense(rig.run(rw10(0x2a, 199, 4), randomBytes(4 * kBs, 9)), kSenseMediumError, 0x0c, 0, "write error");
  rig.disk.failFlush(true);
  expectSense(rig.run({0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0}), kSenseMediumError, 0x0c, 0, "flush error");
  rig.disk.failFlush(false);
  expectGood(rig.run({0x91, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}), "SYNC CACHE(16)");
  // the same read error when the read completes on another thread, split over several iovecs
  rig.disk.setAsync(true, 1);
  expectSense(rig.run(rw10(0x28, 90, 32), {}, 32 * kBs), kSenseMediumError, 0x11, 0, "async read error");
}

void ringWrapAroundWithPad() {
  // A ring of 1 KiB holds only a few entries: every few commands the producer wraps, usually with PAD.
  Rig rig(false, 1024, 256);
  std::vector<uint8_t> ref = rig.disk.snapshot(0, kDiskSize);
  std::mt19937 rng(5);
  for (int i = 0; i < 400; i++) {
    uint32_t n = 1 + rng() % 24;
    uint64_t lba = rng() % (kDiskSize / kBs - n);
    if (i % 2 == 0) {
      std::vector<uint8_t> d = randomBytes(n * kBs, uint32_t(i));
      expectGood(rig.run(rw16(0x8a, lba, n), d), "write");
      std::copy(d.begin(), d.end(), ref.begin() + long(lba * kBs));
    } else {
      Completion c = rig.run(rw10(0x28, uint32_t(lba), uint16_t(n)), {}, n * kBs);
      expectGood(c, "read");
      CHECK(std::equal(c.dataIn.begin(), c.dataIn.end(), ref.begin() + long(lba * kBs)), "data at lba " << lba);
    }
  }
  CHECK(rig.kernel.pads() > 10 && rig.kernel.wraps() > 10,
        "expected many PAD entries and wraps, got " << rig.kernel.pads() << "/" << rig.kernel.wraps());
  CHECK(rig.proc->stats().pads == rig.kernel.pads(), "handler skipped " << rig.proc->stats().pads << " PADs of "
                                                                         << rig.kernel.pads());
  CHECK(rig.proc->ringError().ok(), rig.proc->ringError().message());
}

void manyInFlightOutOfOrder() {
  Rig rig(false, 1 << 16, 2048);
  rig.disk.setAsync(true, 16);
  std::vector<uint8_t> ref = rig.disk.snapshot(0, kDiskSize);
  std::mt19937 rng(8);
  for (int round = 0; round < 6; round++) {
    std::vector<std::pair<int, uint64_t>> ids;
    std::vector<uint32_t> lens;
    for (int i = 0; i < 64; i++) {
      uint32_t n = 1 + rng() % 48;
      uint64_t lba = rng() % (kDiskSize / kBs - n);
      int id = rig.kernel.submit(rw16(0x88, lba, n), {}, n * kBs);
      CHECK(id >= 0, "submit " << i);
      ids.emplace_back(id, lba);
      lens.push_back(n);
      if (i % 8 == 7) rig.kernel.kick();  // the handler sees them in bursts while earlier ones are in flight
    }
    rig.kernel.kick();
    std::string err;
    CHECK(rig.kernel.waitAll(10000, &err), err);
    for (size_t i = 0; i < ids.size(); i++) {
      Completion& c = rig.kernel.completions().at(ids[i].first);
      expectGood(c, "async read");
      CHECK(c.dataIn.size() == lens[i] * kBs, "data-in length");
      CHECK(std::equal(c.dataIn.begin(), c.dataIn.end(), ref.begin() + long(ids[i].second * kBs)),
            "read " << i << " completed before its data arrived (or wrong data)");
    }
    rig.kernel.completions().clear();
  }
  // The device really completed out of order.
  auto order = rig.disk.completionOrder();
  CHECK(!std::is_sorted(order.begin(), order.end()), "device completed in order: test did not exercise OOO");
}

void tailWaitsForOldestCommand() {
  Rig rig;
  rig.disk.setAsync(true, 1);
  rig.disk.hold(40 * kBs);  // the first command's read does not complete until released
  const uint32_t head0 = rig.kernel.head();
  int first = rig.kernel.submit(rw10(0x28, 40, 8), {}, 8 * kBs);
  std::vector<int> rest;
  for (int i = 0; i < 10; i++) rest.push_back(rig.kernel.submit(rw10(0x28, 100 + 16 * i, 8), {}, 8 * kBs));
  rig.kernel.kick();
  // wait until the later commands completed on the device side
  for (int spin = 0; spin < 400 && rig.disk.completionOrder().size() < 10; spin++) usleep(5000);
  CHECK(rig.disk.completionOrder().size() == 10, "later reads did not complete");
  usleep(20000);
  std::string err = rig.kernel.reap();
  CHECK(err.empty(), err);
  CHECK(rig.kernel.mailbox()->cmd_tail == head0, "cmd_tail moved past an incomplete command ("
                                                     << rig.kernel.mailbox()->cmd_tail << " vs " << head0 << ")");
  CHECK(rig.kernel.completions().empty(), "completions visible before the oldest command finished");
  rig.disk.releaseHolds();
  CHECK(rig.kernel.waitAll(5000, &err), err);
  std::vector<int> want = {first};
  want.insert(want.end(), rest.begin(), rest.end());
  CHECK(rig.kernel.reapOrder() == want, "reaped out of ring order");
  std::vector<uint8_t> ref = rig.disk.snapshot(0, kDiskSize);
  CHECK(std::equal(rig.kernel.completions().at(first).dataIn.begin(), rig.kernel.completions().at(first).dataIn.end(),
                   ref.begin() + 40 * kBs), "held read data");
}

void dataSpanningIovecs() {
  Rig rig;
  std::vector<uint8_t> ref = rig.disk.snapshot(0, kDiskSize);
  const std::vector<std::vector<size_t>> layouts = {
      {512, 1536, 4096, 2048},                // aligned, uneven
      {100, 412, 4000, 3680},                 // not 512-aligned: bounce path
      {4096, 4096, 4096, 4096, 4096, 4096},   // page iovecs scattered over the data area
      {7, 8185},                              // a tiny first iovec
  };
  for (size_t k = 0; k < layouts.size(); k++) {
    size_t total = 0;
    for (size_t l : layouts[k]) total += l;
    uint32_t n = uint32_t(total / kBs);
    uint64_t lba = 1000 + 100 * k;
    std::vector<uint8_t> d = randomBytes(total, uint32_t(k + 100));
    expectGood(rig.run(rw10(0x2a, uint32_t(lba), uint16_t(n)), d, 0, {layouts[k]}), "multi-iov write");
    std::copy(d.begin(), d.end(), ref.begin() + long(lba * kBs));
    CHECK(rig.disk.snapshot(lba * kBs, total) == d, "multi-iov write landed wrong (layout " << k << ")");
    // read it back through a different layout, also async
    rig.disk.setAsync(k % 2 == 1, 2);
    const size_t readsBefore = rig.disk.completionOrder().size();
    Completion c = rig.run(rw10(0x28, uint32_t(lba - 1), uint16_t(n + 2)), {}, total + 2 * kBs,
                           {{1024, total - 512, 512}});
    rig.disk.setAsync(false);
    expectGood(c, "multi-iov read");
    CHECK(std::equal(c.dataIn.begin(), c.dataIn.end(), ref.begin() + long((lba - 1) * kBs)), "multi-iov read data " << k);
    CHECK(rig.disk.completionOrder().size() == readsBefore + 1, "a multi-iovec READ became several device reads");
  }
}

void unmapAndWriteSame() {
  Rig rig;
  const std::vector<uint8_t> zeros(64 * kBs, 0);
  // UNMAP two ranges
  std::vector<uint8_t> list = {0, 38, 0, 32};
  list.resize(8, 0);
  for (auto [lba, n] : {std::pair<uint64_t, uint32_t>{10, 4}, {50, 8}}) {
    auto l = be(lba, 8), k = be(n, 4);
    list.insert(list.end(), l.begin(), l.end());
    list.insert(list.end(), k.begin(), k.end());
    list.insert(list.end(), 4, 0);
  }
  expectGood(rig.run({0x42, 0, 0, 0, 0, 0, 0, 0, uint8_t(list.size()), 0}, list), "UNMAP");
  CHECK(rig.disk.snapshot(10 * kBs, 4 * kBs) == std::vector<uint8_t>(4 * kBs, 0), "unmapped range 1 reads zero");
  CHECK(rig.disk.snapshot(50 * kBs, 8 * kBs) == std::vector<uint8_t>(8 * kBs, 0), "unmapped range 2 reads zero");
  CHECK(rig.disk.snapshot(14 * kBs, kBs) != std::vector<uint8_t>(kBs, 0), "UNMAP went past its range");
  // descriptor past the end: nothing changes
  std::vector<uint8_t> before = rig.disk.snapshot(0, kDiskSize);
  std::vector<uint8_t> bad = list;
  auto far = be(kDiskSize / kBs - 2, 8);
  std::copy(far.begin(), far.end(), bad.begin() + 24);
  expectSense(rig.run({0x42, 0, 0, 0, 0, 0, 0, 0, uint8_t(bad.size()), 0}, bad), kSenseIllegalRequest, 0x21, 0,
              "UNMAP past the end");
  std::vector<uint8_t> trunc = list;
  trunc[3] = 40;  // descriptor length beyond the list
  expectSense(rig.run({0x42, 0, 0, 0, 0, 0, 0, 0, uint8_t(trunc.size()), 0}, trunc), kSenseIllegalRequest, 0x26, 0,
              "UNMAP bad parameter list");
  CHECK(rig.disk.snapshot(0, kDiskSize) == before, "failed UNMAP changed the disk");
  // WRITE SAME(16) with UNMAP → zeros
  std::vector<uint8_t> ws = rw16(0x93, 200, 64);
  ws[1] = 0x08;
  expectGood(rig.run(ws, std::vector<uint8_t>(kBs, 0)), "WRITE SAME(16) UNMAP");
  CHECK(rig.disk.snapshot(200 * kBs, 64 * kBs) == zeros, "WRITE SAME UNMAP reads zero");
  Completion c = rig.run(rw10(0x28, 200, 64), {}, 64 * kBs);
  CHECK(c.dataIn == zeros, "read after WRITE SAME UNMAP");
  // WRITE SAME(10) without UNMAP writes the pattern
  std::vector<uint8_t> pat = randomBytes(kBs, 77);
  expectGood(rig.run(rw10(0x41, 300, 5), pat), "WRITE SAME(10)");
  for (int i = 0; i < 5; i++) CHECK(rig.disk.snapshot((300 + i) * kBs, kBs) == pat, "WRITE SAME block " << i);
  expectSense(rig.run(rw16(0x93, 0, 0), pat), kSenseIllegalRequest, 0x24, 0, "WRITE SAME of 0 blocks (WSNZ)");
  expectSense(rig.run(rw16(0x93, kDiskSize / kBs, 1), pat), kSenseIllegalRequest, 0x21, 0, "WRITE SAME past end");
  uint64_t f = rig.disk.flushes();
  expectGood(rig.run({0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0}), "SYNC CACHE(10)");
  CHECK(rig.disk.flushes() == f + 1, "SYNC CACHE did not flush");
}

std::vector<uint8_t> cmdEntry(uint16_t id, uint32_t len, uint32_t iovCnt, uint64_t cdbOff,
                              const std::vector<RingIovec>& iovs) {
  std::vector<uint8_t> e(len, 0);
  CmdRequest req{};
  req.hdr = {makeLenOp(len, EntryOp::kCmd), id, 0, 0};
  req.iov_cnt = iovCnt;
  req.cdb_off = cdbOff;
  std::memcpy(e.data(), &req, sizeof req);
  for (size_t i = 0; i < iovs.size() && sizeof(CmdRequest) + 16 * (i + 1) <= len; i++)
    std::memcpy(e.data() + sizeof(CmdRequest) + 16 * i, &iovs[i], 16);
  return e;
}

void malformedEntries() {
  Rig rig;
  KernelSim& k = rig.kernel;
  const uint64_t ringBase = sizeof(Mailbox);
  auto cdbAt = [&](uint32_t pos, uint32_t iovs) { return ringBase + pos + sizeof(CmdRequest) + 16 * iovs; };
  auto putCdb = [&](std::vector<uint8_t>& e, uint32_t iovs, std::vector<uint8_t> cdb) {
    std::copy(cdb.begin(), cdb.end(), e.begin() + sizeof(CmdRequest) + 16 * iovs);
  };
  std::string err;
  // 1. iovec pointing into the command ring (outside the data area)
  uint32_t pos = k.head();
  auto e = cmdEntry(9001, 128, 1, cdbAt(pos, 1), {{ringBase, 512}});
  putCdb(e, 1, rw10(0x28, 0, 1));
  k.submitRaw(e);
  // 2. iovec running past the end of the mapping
  pos = k.head();
  e = cmdEntry(9002, 128, 1, cdbAt(pos, 1), {{k.size() - 256, 512}});
  putCdb(e, 1, rw10(0x28, 0, 1));
  k.submitRaw(e);
  // 3. iov_cnt far larger than the entry
  pos = k.head();
  e = cmdEntry(9003, 128, 0x40000000, cdbAt(pos, 1), {});
  k.submitRaw(e);
  // 4. cdb_off outside the mapping
  e = cmdEntry(9004, 112, 0, k.size() + 4096, {});
  k.submitRaw(e);
  // 5. iovec with base + len overflowing 64 bits
  pos = k.head();
  e = cmdEntry(9005, 128, 1, cdbAt(pos, 1), {{~0ull - 100, 4096}});
  putCdb(e, 1, rw10(0x28, 0, 8));
  k.submitRaw(e);
  // 6. a CMD entry too short to hold a response
  e = cmdEntry(9006, 48, 0, 0, {});
  k.submitRaw(e);
  // 7. a TMR entry and an unknown entry opcode: skipped (the unknown one flagged UNKNOWN_OP)
  std::vector<uint8_t> tmr(40, 0);
  EntryHeader th{makeLenOp(40, EntryOp::kTmr), 0, 0, 0};
  std::memcpy(tmr.data(), &th, sizeof th);
  k.submitRaw(tmr);
  std::vector<uint8_t> unk(16, 0);
  EntryHeader uh{makeLenOp(16, EntryOp(5)), 0, 0, 0};
  std::memcpy(unk.data(), &uh, sizeof uh);
  uint32_t unkPos = k.submitRaw(unk);
  k.kick();
  CHECK(k.waitAll(5000, &err), err);
  for (int id : {9001, 9002, 9003, 9004, 9005}) {
    expectSense(k.completions().at(id), kSenseHardwareError, 0x44, 0, ("malformed entry " + std::to_string(id)).c_str());
  }
  CHECK(k.completions().at(9006).status == kStatusCheckCondition, "short entry answered");
  CHECK(k.completions().count(int(unkPos) | (1 << 20)) && (k.completions()[int(unkPos) | (1 << 20)].uflags & kUflagUnknownOp),
        "unknown entry opcode not flagged UNKNOWN_OP");
  CHECK(rig.proc->stats().badEntries == 6, "bad entries counted: " << rig.proc->stats().badEntries);
  // the handler still works
  Completion c = rig.run(rw10(0x28, 0, 8), {}, 8 * kBs);
  expectGood(c, "read after malformed entries");
  CHECK(rig.proc->ringError().ok(), rig.proc->ringError().message());
}

void brokenRingStopsSafely() {
  {  // an entry of length 0 cannot be walked: the handler stops fetching and reports it
    Rig rig;
    std::vector<uint8_t> zero(16, 0);
    EntryHeader h{makeLenOp(0, EntryOp::kCmd), 1, 0, 0};
    std::memcpy(zero.data(), &h, sizeof h);
    rig.kernel.submitRaw(zero);
    rig.kernel.kick();
    for (int i = 0; i < 200 && rig.proc->ringError().ok(); i++) usleep(5000);
    CHECK(!rig.proc->ringError().ok(), "zero-length entry not reported");
  }
  {  // cmd_head outside the ring
    Rig rig;
    storeRelease(&rig.kernel.mailbox()->cmd_head, 1u << 30);
    rig.kernel.kick();
    for (int i = 0; i < 200 && rig.proc->ringError().ok(); i++) usleep(5000);
    CHECK(!rig.proc->ringError().ok(), "bad cmd_head not reported");
    storeRelease(&rig.kernel.mailbox()->cmd_head, 0);
  }
  {  // a mailbox that does not describe a ring inside the mapping is refused up front
    KernelSim k(4096, 16);
    MemDisk d(kDiskSize);
    ScsiDisk s(d, {});
    k.mailbox()->cmdr_size = 1 << 30;
    CHECK(!RingProcessor::create(k.base(), k.size(), k.doorbell(), s).ok(), "oversized cmdr_size accepted");
    k.mailbox()->cmdr_size = 4096;
    k.mailbox()->version = 1;
    CHECK(!RingProcessor::create(k.base(), k.size(), k.doorbell(), s).ok(), "mailbox version 1 accepted");
  }
}

void notificationsAreBatched() {
  Rig rig;
  for (int i = 0; i < 32; i++) CHECK(rig.kernel.submit(rw10(0x28, i * 8, 8), {}, 8 * kBs) >= 0, "submit");
  rig.kernel.kick();
  std::string err;
  CHECK(rig.kernel.waitAll(5000, &err), err);
  CHECK(rig.proc->stats().notifications < 32, "one uio write per command (" << rig.proc->stats().notifications << ")");
}

// ---- the kernel side through configfs/sysfs, on the configfs model ----

struct ModelRig {
  std::string root;
  KernelSim uioMem{64 * 1024, 64};
  std::unique_ptr<FakeConfigfs> fs;
  TcmuDeviceOptions opts;
  std::shared_ptr<MemDisk> disk = std::make_shared<MemDisk>(kDiskSize);

  ModelRig() {
    char tmpl[] = "/tmp/obd-tcmu-model-XXXXXX";
    CHECK(::mkdtemp(tmpl), "mkdtemp");
    root = std::string(tmpl) + "/";
    fs = std::make_unique<FakeConfigfs>(root, "/proc/self/fd/" + std::to_string(uioMem.memFd()), uioMem.size());
    opts.paths.root = root;
    opts.paths.fs = fs.get();
    opts.backstore.name = "dev_42";
    opts.backstore.cfgString = "obd//var/lib/obd/42/config.v1.json";
    opts.backstore.loopbackWwn = aciLoopbackWwn(42);
    opts.timeoutMs = 300;
  }
  ~ModelRig() {
    ::unlink((root + "dev/uio0").c_str());
    ::rmdir((root + "dev").c_str());
    ::rmdir(root.c_str());
  }
  size_t logIndex(const std::string& entry) const {
    for (size_t i = 0; i < fs->log.size(); i++)
      if (fs->log[i] == entry) return i;
    return SIZE_MAX;
  }
  // Nothing of ours left: no backstore, no loopback target, no disk, no UIO device.
  void expectClean() {
    const std::string core = root + "sys/kernel/config/target/core/user_999999999";
    CHECK(fs->list(core).empty(), "backstore left: " << fs->list(core).size());
    CHECK(fs->list(root + "sys/kernel/config/target/loopback").empty(), "loopback target left");
    CHECK(!fs->exists(root + "sys/class/uio/uio0"), "UIO device left");
    CHECK(!fs->exists(root + "dev/sdq"), "disk left");
  }
};

void configfsCreateAndTeardown() {
  ModelRig m;
  auto dev = TcmuDevice::create(m.opts, m.disk);
  CHECK(dev.ok(), "create: " << dev.status().message());
  CHECK(dev.value()->devicePath() == m.root + "dev/sdq", "device path " << dev.value()->devicePath());
  CHECK(dev.value()->ringError().ok(), "ring: " << dev.value()->ringError().message());
  const std::string core = "sys/kernel/config/target/core/user_999999999/dev_42";
  const std::string tpg = "sys/kernel/config/target/loopback/naa.1990000000000042/tpgt_1";
  const std::vector<std::string> want = {
      "mkdir sys/kernel/config/target/core/user_999999999",
      "mkdir " + core,
      "write " + core + "/control dev_config=obd//var/lib/obd/42/config.v1.json,dev_size=8388608,hw_block_size=512,"
                        "nl_reply_supported=-1",
      "write " + core + "/enable 1",
      "mkdir sys/kernel/config/target/loopback/naa.1990000000000042",
      "mkdir " + tpg,
      "mkdir " + tpg + "/lun/lun_0",
      "write " + tpg + "/nexus naa.1990000000000042",
      "symlink " + tpg + "/lun/lun_0/dev_42 -> " + core,
      "mknod dev/sdq block",
  };
  size_t last = 0;
  for (const std::string& w : want) {
    size_t at = m.logIndex(w);
    CHECK(at != SIZE_MAX, "missing step: " << w);
    CHECK(at >= last, "out of order: " << w);
    last = at;
  }
  Status st = dev.value()->close();
  CHECK(st.ok(), "close: " << st.message());
  size_t unlinkAt = m.logIndex("unlink " + tpg + "/lun/lun_0/dev_42");
  size_t rmCoreAt = m.logIndex("rmdir " + core);
  CHECK(unlinkAt != SIZE_MAX && rmCoreAt != SIZE_MAX && unlinkAt < rmCoreAt, "LUN must go before the backstore");
  m.expectClean();
  CHECK(dev.value()->close().ok(), "second close is not idempotent");
}

void configfsFailuresLeaveNothing() {
  {
    ModelRig m;
    m.fs->failEnable = true;
    auto dev = TcmuDevice::create(m.opts, m.disk);
    CHECK(!dev.ok() && dev.status().message().find("enable") != std::string::npos, "enable failure: " << dev.status().message());
    m.expectClean();
  }
  {
    ModelRig m;
    m.fs->diskNeverAppears = true;
    auto dev = TcmuDevice::create(m.opts, m.disk);
    CHECK(!dev.ok() && dev.status().message().find("no disk appeared") != std::string::npos,
          "missing disk: " << dev.status().message());
    m.expectClean();
  }
  {
    ModelRig m;
    m.opts.backstore.name = "../escape";
    auto dev = TcmuDevice::create(m.opts, m.disk);
    CHECK(!dev.ok() && dev.status().code() == EINVAL, "bad name accepted");
    m.opts.backstore.name = "dev_1";
    m.opts.backstore.cfgString = "obd/a,dev_size=1";
    dev = TcmuDevice::create(m.opts, m.disk);
    CHECK(!dev.ok() && dev.status().code() == EINVAL, "dev_config with ',' accepted");
    m.expectClean();
  }
  {
    ModelRig m;
    m.fs->removeNode(m.root + "sys/module/target_core_user");
    auto dev = TcmuDevice::create(m.opts, m.disk);
    CHECK(!dev.ok() && dev.status().code() == ENOTSUP, "created without target_core_user");
    CHECK(dev.status().message().find("target_core_user (CONFIG_TCM_USER2)") != std::string::npos,
          "reason does not name the module: " << dev.status().message());
    TcmuSupport s = checkTcmuSupport(true, m.opts.paths);
    CHECK(!s.ok && s.reason.find("modprobe target_core_user") != std::string::npos, "modprobe not tried: " << s.reason);
  }
  {
    // No modprobe binary: the reason names every missing module and says so once.
    ModelRig m;
    m.fs->noModprobe = true;
    m.fs->removeNode(m.root + "sys/module/target_core_user");
    TcmuSupport s = checkTcmuSupport(true, m.opts.paths);
    CHECK(!s.ok && s.reason.find("target_core_user (CONFIG_TCM_USER2)") != std::string::npos, "module not named: " << s.reason);
    const std::string once = "cannot run modprobe";
    const size_t first = s.reason.find(once);
    CHECK(first != std::string::npos && s.reason.find(once, first + 1) == std::string::npos, "not said once: " << s.reason);
  }
}

void configfsAdoptAfterRestart() {
  ModelRig m;
  auto first = TcmuDevice::create(m.opts, m.disk);
  CHECK(first.ok(), "create: " << first.status().message());
  const std::string path = first.value()->devicePath();
  first.value()->abandon();  // deviced goes away, the disk stays
  CHECK(m.fs->exists(m.root + "sys/class/uio/uio0") && m.fs->exists(path), "abandon removed the device");
  auto again = TcmuDevice::create(m.opts, m.disk);
  CHECK(!again.ok() && again.status().code() == EEXIST, "second create without adoptExisting: " << again.status().message());
  m.opts.adoptExisting = true;
  m.fs->log.clear();
  auto adopted = TcmuDevice::create(m.opts, m.disk);
  CHECK(adopted.ok(), "adopt: " << adopted.status().message());
  CHECK(adopted.value()->devicePath() == path, "adopted a different disk");
  for (const std::string& l : m.fs->log) CHECK(l.rfind("mkdir", 0) != 0 && l.rfind("symlink", 0) != 0, "adoption re-created: " << l);
  CHECK(adopted.value()->close().ok(), "close");
  m.expectClean();
  // a device left by a crashed process that nobody adopts is found and removed
  auto left = TcmuDevice::create(m.opts, m.disk);
  CHECK(left.ok(), "create: " << left.status().message());
  left.value()->abandon();
  std::vector<std::string> stale = listBackstores(m.opts.paths, m.opts.backstore.hba);
  CHECK(stale == std::vector<std::string>{"dev_42"}, "listBackstores found " << stale.size());
  BackstoreSpec spec;
  spec.name = stale[0];  // nothing else known: the LUN is found through its link
  Status st = removeStaleDevice(m.opts.paths, spec);
  CHECK(st.ok(), "removeStaleDevice: " << st.message());
  m.expectClean();
}

// deviced's seam: serveBlockDevice(kind Tcmu) gives a ServedDevice for the backstore; release() (deviced
// exit) leaves it for the next process to adopt, close() removes it.
void servedDeviceOverConfigfs() {
  ModelRig m;
  ServeOptions so;
  so.kind = TransportKind::Tcmu;
  so.tcmu = m.opts;
  auto dev = serveBlockDevice(m.disk, so);
  CHECK(dev.ok(), "serve: " << dev.status().message());
  const std::string path = dev.value()->path();
  CHECK(path == m.root + "dev/sdq", "device path " << path);
  CHECK(dev.value()->size() == kDiskSize && !dev.value()->readOnly(), "size/readOnly of the served disk");
  DeviceStats st = dev.value()->stats();
  CHECK(st.ringCommands == 0 && st.readOps == 0 && st.inFlight == 0, "fresh device has counters at 0");
  dev.value()->release(true);
  CHECK(m.fs->exists(path) && listBackstores(m.opts.paths, m.opts.backstore.hba) == std::vector<std::string>{"dev_42"},
        "release removed the device");
  dev = Result<std::unique_ptr<ServedDevice>>(nullptr);
  so.tcmu.adoptExisting = true;
  auto adopted = serveBlockDevice(m.disk, so);
  CHECK(adopted.ok() && adopted.value()->path() == path, "adopt: " << adopted.status().message());
  Status cs = adopted.value()->close(false);
  CHECK(cs.ok(), "close: " << cs.message());
  m.expectClean();
}

// Random CMD entries (framing kept walkable, everything else random: iovecs, CDB offset, CDB bytes):
// each gets an answer, nothing crashes, and the handler keeps working.
void fuzzedEntriesAlwaysAnswered() {
  Rig rig(false, 16 * 1024, 256);
  KernelSim& k = rig.kernel;
  std::mt19937_64 rng(1234);
  const uint8_t opcodes[] = {0x00, 0x08, 0x0a, 0x12, 0x15, 0x1a, 0x25, 0x28, 0x2a, 0x35, 0x41, 0x42,
                             0x55, 0x5a, 0x88, 0x8a, 0x91, 0x93, 0x9e, 0xa8, 0xaa, 0x7f, 0xff};
  const uint64_t dataOff = (sizeof(Mailbox) + 16 * 1024 + 4095) / 4096 * 4096;
  std::string err;
  for (int i = 0; i < 3000; i++) {
    uint32_t len = 112 + 8 * uint32_t(rng() % 48);
    std::vector<uint8_t> e(len);
    for (auto& b : e) b = uint8_t(rng());
    const uint16_t id = uint16_t(20000 + i % 40000);
    const uint32_t pos = k.head() + len > 16 * 1024 ? 0 : k.head();  // where submitRaw will put it
    const uint32_t maxIov = (len - 48) / 16;
    CmdRequest req;
    std::memcpy(&req, e.data(), sizeof req);
    req.hdr = {makeLenOp(len, EntryOp::kCmd), id, 0, 0};
    req.iov_cnt = rng() % 8 == 0 ? uint32_t(rng()) : uint32_t(rng() % (maxIov + 1));
    req.iov_bidi_cnt = rng() % 8 == 0 ? uint32_t(rng() % 3) : 0;
    req.iov_dif_cnt = 0;
    const uint32_t iovs = std::min(req.iov_cnt, maxIov);
    const uint64_t cdbPos = sizeof(Mailbox) + pos + 48 + 16 * uint64_t(iovs);
    req.cdb_off = rng() % 10 == 0 ? rng() : (cdbPos + 16 <= sizeof(Mailbox) + pos + len ? cdbPos : sizeof(Mailbox) + pos + 48);
    std::memcpy(e.data(), &req, sizeof req);
    for (uint32_t v = 0; v < iovs; v++) {
      RingIovec iov;
      iov.base = rng() % 6 == 0 ? rng() : dataOff + rng() % (256 * 4096);
      iov.len = rng() % 6 == 0 ? rng() : rng() % 65536;
      std::memcpy(e.data() + 48 + 16 * v, &iov, 16);
    }
    if (req.cdb_off >= sizeof(Mailbox) + pos && req.cdb_off + 16 <= sizeof(Mailbox) + pos + len) {
      uint8_t* cdb = e.data() + (req.cdb_off - sizeof(Mailbox) - pos);
      cdb[0] = opcodes[rng() % sizeof opcodes];
      if (rng() % 2) {  // plausible small LBAs and lengths half of the time
        for (int b = 2; b < 16; b++) cdb[b] = b >= 7 ? uint8_t(rng() % 4) : 0;
      }
    }
    uint32_t at = k.submitRaw(e);
    CHECK(at == pos, "fuzz: entry placed at " << at << " not " << pos);
    k.kick();
    CHECK(k.waitFor(id, 5000, &err), "fuzz entry " << i << ": " << err);
    k.completions().erase(id);
  }
  CHECK(rig.proc->ringError().ok(), rig.proc->ringError().message());
  Completion c = rig.run(rw10(0x28, 0, 8), {}, 8 * kBs);
  expectGood(c, "read after fuzzing");
}

void slowFlushDoesNotStopReads() {
  Rig rig;
  rig.disk.blockFlushes(true);
  int flush = rig.kernel.submit({0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0}, {}, 0);
  std::vector<int> reads;
  for (int i = 0; i < 8; i++) reads.push_back(rig.kernel.submit(rw10(0x28, 8 * i, 8), {}, 8 * kBs));
  rig.kernel.kick();
  for (int spin = 0; spin < 400 && rig.disk.completionOrder().size() < 8; spin++) usleep(5000);
  CHECK(rig.disk.completionOrder().size() == 8, "reads waited for the flush to finish");
  std::string err = rig.kernel.reap();
  CHECK(err.empty() && rig.kernel.completions().empty(), "completions passed the unfinished flush in the ring");
  rig.disk.blockFlushes(false);
  CHECK(rig.kernel.waitAll(5000, &err), err);
  expectGood(rig.kernel.completions().at(flush), "flush");
  for (int id : reads) expectGood(rig.kernel.completions().at(id), "read");
}

// accelerated-container-image's tcm_loop target names: naa.199 + 13 digits, or naa.1NN with a tenant.
void aciLoopbackNames() {
  CHECK(aciLoopbackWwn(42) == "naa.1990000000000042", aciLoopbackWwn(42));
  CHECK(aciLoopbackWwn(42, kAciDefaultHba) == "naa.1990000000000042", aciLoopbackWwn(42, kAciDefaultHba));
  CHECK(aciLoopbackWwn(42, 7) == "naa.1070000000000042", aciLoopbackWwn(42, 7));
  CHECK(aciLoopbackWwn(12345678901234ull, 1234) == "naa.1342345678901234", aciLoopbackWwn(12345678901234ull, 1234));
}

struct Case {
  const char* name;
  void (*fn)();
};
const Case kCases[] = {
    {"inquiry_standard_and_vpd", inquiryStandardAndVpd},
    {"test_unit_ready_and_bad_opcodes", testUnitReadyAndBadOpcodes},
    {"read_capacity_10_16", readCapacity},
    {"mode_sense_and_select", modeSenseAndSelect},
    {"read_write_round_trip", readWriteRoundTrip},
    {"lba_out_of_range", lbaOutOfRange},
    {"write_protect", writeProtect},
    {"medium_errors", mediumErrors},
    {"ring_wrap_around_with_pad", ringWrapAroundWithPad},
    {"many_in_flight_out_of_order", manyInFlightOutOfOrder},
    {"tail_waits_for_oldest_command", tailWaitsForOldestCommand},
    {"data_spanning_iovecs", dataSpanningIovecs},
    {"unmap_and_write_same", unmapAndWriteSame},
    {"malformed_entries", malformedEntries},
    {"broken_ring_stops_safely", brokenRingStopsSafely},
    {"notifications_are_batched", notificationsAreBatched},
    {"slow_flush_does_not_stop_reads", slowFlushDoesNotStopReads},
    {"fuzzed_entries_always_answered", fuzzedEntriesAlwaysAnswered},
    {"aci_loopback_names", aciLoopbackNames},
    {"configfs_create_and_teardown", configfsCreateAndTeardown},
    {"configfs_failures_leave_nothing", configfsFailuresLeaveNothing},
    {"configfs_adopt_after_restart", configfsAdoptAfterRestart},
    {"served_device_over_configfs", servedDeviceOverConfigfs},
};

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--serve") == 0) return serveMain(argc, argv);
  if (argc > 1 && std::strcmp(argv[1], "--probe") == 0) {  // exit 0 if the kernel has TCMU, else 77
    TcmuSupport s = checkTcmuSupport(argc > 2 && std::strcmp(argv[2], "--load") == 0);
    std::printf(s.ok ? "supported\n" : "unsupported: %s\n", s.reason.c_str());
    return s.ok ? 0 : 77;
  }
  if (argc > 1 && std::strcmp(argv[1], "--list") == 0) {
    for (const Case& c : kCases) std::printf("%s\n", c.name);
    return 0;
  }
  std::set<std::string> want(argv + 1, argv + argc);
  int failed = 0, ran = 0;
  for (const Case& c : kCases) {
    if (!want.empty() && !want.count(c.name)) continue;
    ran++;
    try {
      c.fn();
      std::printf("ok %s\n", c.name);
    } catch (const Failure& f) {
      failed++;
      std::printf("not ok %s: %s\n", c.name, f.what.c_str());
    } catch (const std::exception& e) {
      failed++;
      std::printf("not ok %s: exception %s\n", c.name, e.what());
    }
    std::fflush(stdout);
  }
  if (ran == 0) {
    std::fprintf(stderr, "no such case\n");
    return 2;
  }
  return failed ? 1 : 0;
}
