// The SCSI block command set a TCMU-backed disk answers: plain C++ over a
// BlockDevice, independent of the ring, so it can be driven by the ring processor or directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "io/file.h"

namespace obd::tcmu {

// SAM status codes.
constexpr uint8_t kStatusGood = 0x00;
constexpr uint8_t kStatusCheckCondition = 0x02;
constexpr uint8_t kStatusBusy = 0x08;

// Sense keys.
constexpr uint8_t kSenseNoSense = 0x0;
constexpr uint8_t kSenseMediumError = 0x3;
constexpr uint8_t kSenseHardwareError = 0x4;
constexpr uint8_t kSenseIllegalRequest = 0x5;
constexpr uint8_t kSenseDataProtect = 0x7;

constexpr size_t kFixedSenseLen = 18;

// A command's outcome: status plus fixed-format sense data when status is CHECK CONDITION.
struct ScsiResult {
  uint8_t status = kStatusGood;
  uint8_t sense[kFixedSenseLen] = {};

  static ScsiResult good() { return ScsiResult(); }
  static ScsiResult check(uint8_t key, uint8_t asc, uint8_t ascq);
  uint8_t senseKey() const { return sense[2] & 0x0f; }
  uint8_t asc() const { return sense[12]; }
  uint8_t ascq() const { return sense[13]; }
};

// Named sense conditions (SBC/SPC).
ScsiResult senseInvalidOpcode();      // ILLEGAL REQUEST 20/00
ScsiResult senseLbaOutOfRange();      // ILLEGAL REQUEST 21/00
ScsiResult senseInvalidFieldInCdb();  // ILLEGAL REQUEST 24/00
ScsiResult senseInvalidParamList();   // ILLEGAL REQUEST 26/00
ScsiResult senseWriteProtected();     // DATA PROTECT 27/00
ScsiResult senseReadError();          // MEDIUM ERROR 11/00
ScsiResult senseWriteError();         // MEDIUM ERROR 0C/00
ScsiResult senseInternalFailure();    // HARDWARE ERROR 44/00

// A host-addressable piece of the command's data buffer.
struct DataSegment {
  uint8_t* base;
  size_t len;
};

// CDB length implied by the opcode's group code; 0 for groups we never accept (variable/vendor).
size_t cdbLength(uint8_t opcode);

// Commands whose execution calls a synchronous BlockDevice method (write, discard, flush), so that
// the ring processor runs them off its fetch thread.
bool mayBlock(uint8_t opcode);

using ScsiDone = std::function<void(const ScsiResult&)>;

struct ScsiDiskParams {
  uint32_t blockSize = 512;
  uint32_t maxTransferBlocks = 2048;     // VPD B0 max/optimal transfer length
  std::string unitSerial = "obd";        // VPD 80, also the source of the NAA id in VPD 83
  std::string cfgString;                 // VPD 83 vendor-specific descriptor (handler cfgstring)
  bool writeCache = false;               // MODE SENSE caching page WCE
};

class ScsiDisk {
 public:
  ScsiDisk(BlockDevice& dev, ScsiDiskParams params);

  // Runs one command. data covers the whole data buffer the initiator supplied (data-out for writes,
  // room for data-in for reads); cdb and data must stay valid until done has run. done runs exactly
  // once, inline or on a BlockDevice completion thread.
  void execute(const uint8_t* cdb, size_t cdbLen, const DataSegment* data, size_t segments, ScsiDone done);

  uint64_t numBlocks() const { return numBlocks_; }
  bool unmapEnabled() const { return !dev_.readOnly(); }

 private:
  struct Cmd {
    const uint8_t* cdb;
    size_t cdbLen;
    const DataSegment* data;
    size_t segments;
  };
  ScsiResult inquiry(const Cmd& c);
  ScsiResult vpdPage(uint8_t page, uint8_t* buf, size_t& len);
  ScsiResult readCapacity10(const Cmd& c);
  ScsiResult serviceActionIn16(const Cmd& c);
  ScsiResult modeSense(const Cmd& c, bool ten);
  ScsiResult modeSelect(const Cmd& c, bool ten);
  size_t modePage(uint8_t page, bool changeable, uint8_t* out);
  void readBlocks(const Cmd& c, uint64_t lba, uint64_t count, ScsiDone done);
  ScsiResult writeBlocks(const Cmd& c, uint64_t lba, uint64_t count);
  ScsiResult synchronizeCache();
  ScsiResult unmap(const Cmd& c);
  ScsiResult writeSame(const Cmd& c, uint64_t lba, uint64_t count);
  ScsiResult checkRange(uint64_t lba, uint64_t count) const;

  BlockDevice& dev_;
  ScsiDiskParams params_;
  uint64_t numBlocks_;
};

// Scatter/gather between a flat buffer and data segments; return bytes copied.
size_t copyToSegments(const DataSegment* seg, size_t n, const uint8_t* src, size_t len);
size_t copyFromSegments(const DataSegment* seg, size_t n, uint8_t* dst, size_t len);
size_t segmentsLength(const DataSegment* seg, size_t n);

}  // namespace obd::tcmu
