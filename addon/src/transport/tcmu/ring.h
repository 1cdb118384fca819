// The shared-memory layout of target_core_user (UAPI target_core_user.h, TCMU_MAILBOX_VERSION 2), written
// from the kernel's target_core_user ring layout. Everything the kernel writes here is untrusted: readers go
// through RingView, which bounds-checks every offset against the mapping.
#pragma once

#include <cstddef>
#include <cstdint>

namespace obd::tcmu {

constexpr uint16_t kMailboxVersion = 2;
constexpr uint16_t kCapOutOfOrderCompletion = 1u << 0;
constexpr uint16_t kCapReadLen = 1u << 1;
constexpr uint16_t kCapTmr = 1u << 2;
constexpr uint16_t kCapKeepBuf = 1u << 3;

enum class EntryOp : uint32_t { kPad = 0, kCmd = 1, kTmr = 2 };
constexpr uint32_t kOpMask = 0x7;

constexpr uint8_t kUflagUnknownOp = 0x1;
constexpr uint8_t kUflagReadLen = 0x2;
constexpr uint8_t kUflagKeepBuf = 0x4;

constexpr size_t kSenseBufferSize = 96;
constexpr size_t kEntryAlign = 8;

struct Mailbox {
  uint16_t version;
  uint16_t flags;
  uint32_t cmdr_off;
  uint32_t cmdr_size;
  uint32_t cmd_head;             // producer index (kernel), byte offset within the ring
  uint8_t pad_[64 - 16];
  uint32_t cmd_tail;             // consumer index (userspace), own cache line
  uint8_t pad2_[128 - 68];
};
static_assert(sizeof(Mailbox) == 128, "mailbox is 128 bytes");
static_assert(offsetof(Mailbox, cmd_head) == 12, "cmd_head at 12");
static_assert(offsetof(Mailbox, cmd_tail) == 64, "cmd_tail at 64");

struct EntryHeader {
  uint32_t len_op;
  uint16_t cmd_id;
  uint8_t kflags;
  uint8_t uflags;
};
static_assert(sizeof(EntryHeader) == 8, "entry header is 8 bytes");

inline EntryOp entryOp(uint32_t len_op) { return static_cast<EntryOp>(len_op & kOpMask); }
inline uint32_t entryLen(uint32_t len_op) { return len_op & ~kOpMask; }
inline uint32_t makeLenOp(uint32_t len, EntryOp op) { return (len & ~kOpMask) | static_cast<uint32_t>(op); }

struct RingIovec {
  uint64_t base;  // byte offset from the start of the mapping
  uint64_t len;
};
static_assert(sizeof(RingIovec) == 16, "iovec is 16 bytes");

// Request view of a CMD entry (kernel → user).
struct CmdRequest {
  EntryHeader hdr;
  uint32_t iov_cnt;
  uint32_t iov_bidi_cnt;
  uint32_t iov_dif_cnt;
  uint32_t pad0_;       // the inner struct is not packed: cdb_off is 8-aligned
  uint64_t cdb_off;     // byte offset of the CDB from the start of the mapping
  uint64_t pad1_;
  uint64_t pad2_;
  // RingIovec iov[] follows
};
static_assert(sizeof(CmdRequest) == 48, "request header is 48 bytes");
static_assert(offsetof(CmdRequest, cdb_off) == 24, "cdb_off at 24");

// Response view of the same entry (user → kernel), written in place.
struct CmdResponse {
  EntryHeader hdr;
  uint8_t scsi_status;
  uint8_t pad1_;
  uint16_t pad2_;
  uint32_t read_len;
  uint8_t sense_buffer[kSenseBufferSize];
};
static_assert(sizeof(CmdResponse) == 112, "cmd entry is 112 bytes");
static_assert(offsetof(CmdResponse, read_len) == 12, "read_len at 12");
static_assert(offsetof(CmdResponse, sense_buffer) == 16, "sense at 16");

// TMR notification entry: only skipped by us.
struct TmrEntry {
  EntryHeader hdr;
  uint8_t tmr_type;
  uint8_t pad1_;
  uint16_t pad2_;
  uint32_t cmd_cnt;
  uint64_t pad3_;
  uint64_t pad4_;
  // uint16_t cmd_ids[] follows
};
static_assert(sizeof(TmrEntry) == 32, "tmr entry header is 32 bytes");

// Ring positions are offsets within [0, cmdr_size).
inline uint32_t ringAdvance(uint32_t pos, uint32_t len, uint32_t size) { return (pos + len) % size; }

// Loads/stores of the indices shared with the kernel.
inline uint32_t loadAcquire(const uint32_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
inline void storeRelease(uint32_t* p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

}  // namespace obd::tcmu
