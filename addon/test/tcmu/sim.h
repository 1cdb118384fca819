// The kernel's side of target_core_user, simulated: a memfd holding mailbox + command ring + data area
// laid out as target_core_user.h defines them, an eventfd for "commands queued" (the uio interrupt) and
// one for "completions ready" (the user's uio write). It queues real CDBs the way the kernel does
// (entries never wrap: a PAD entry fills the ring to its end), hands out data-area blocks scattered so
// that data spans several iovecs, and reaps completions up to cmd_tail, checking the handler's writes.
#pragma once

#include <sys/mman.h>

#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "transport/tcmu/ring.h"
#include "transport/tcmu/ring_processor.h"
#include "util/unique_fd.h"

namespace obd::tcmu::sim {

struct Completion {
  uint16_t cmdId = 0;
  uint8_t status = 0xff;
  uint8_t sense[kSenseBufferSize] = {};
  uint8_t uflags = 0;
  std::vector<uint8_t> dataIn;
  uint8_t senseKey() const { return sense[2] & 0x0f; }
  uint8_t asc() const { return sense[12]; }
  uint8_t ascq() const { return sense[13]; }
};

struct SubmitOptions {
  std::vector<size_t> iovLens;  // explicit data iovec lengths; default: one per 4 KiB block
};

class KernelSim {
 public:
  static constexpr uint32_t kBlock = 4096;

  KernelSim(uint32_t ringSize, uint32_t dataBlocks, uint32_t seed = 1);
  ~KernelSim();

  uint8_t* base() { return base_; }
  size_t size() const { return size_; }
  Mailbox* mailbox() { return reinterpret_cast<Mailbox*>(base_); }
  Doorbell doorbell() const { return {kick_.get(), done_.get(), 8}; }
  int memFd() const { return mem_.get(); }

  // Queues one command; returns its cmd_id, or -1 if ring or data area lack room right now.
  int submit(const std::vector<uint8_t>& cdb, const std::vector<uint8_t>& dataOut, size_t dataInLen,
             const SubmitOptions& opt = {});
  // Writes raw bytes as the next entry (for malformed-entry tests); returns its ring offset.
  uint32_t submitRaw(const std::vector<uint8_t>& entry);
  void kick();
  // Reaps completions up to cmd_tail. Returns an error string for protocol violations, "" if fine.
  std::string reap();
  // Waits (up to timeoutMs) until cmd `id` completed, reaping as notifications come.
  bool waitFor(int id, int timeoutMs, std::string* err);
  bool waitAll(int timeoutMs, std::string* err);

  // Submit, kick, wait; sets err on failure.
  Completion run(const std::vector<uint8_t>& cdb, const std::vector<uint8_t>& dataOut, size_t dataInLen,
                 std::string* err, const SubmitOptions& opt = {});

  std::map<int, Completion>& completions() { return done_map_; }
  size_t pending() const { return pending_.size(); }
  uint64_t pads() const { return pads_; }
  uint64_t wraps() const { return wraps_; }
  uint32_t head() const { return head_; }
  std::vector<int> reapOrder() const { return reapOrder_; }

 private:
  struct Pending {
    uint32_t pos;
    std::vector<std::pair<uint64_t, uint64_t>> iov;  // mapping offset, length
    std::vector<uint32_t> blocks;
    size_t dataInLen;
  };
  uint32_t freeRing() const;
  bool allocRun(uint32_t nblocks, std::vector<uint32_t>& out, uint32_t& first);
  void putEntry(const uint8_t* bytes, uint32_t len);

  UniqueFd mem_, kick_, done_;
  uint8_t* base_ = nullptr;
  size_t size_ = 0;
  uint32_t ringSize_, dataOff_, dataBlocks_;
  uint32_t head_ = 0, cleaned_ = 0;
  std::vector<bool> used_;
  std::mt19937 rng_;
  uint16_t nextId_ = 1;
  std::map<int, Pending> pending_;
  std::map<int, Completion> done_map_;
  std::vector<int> reapOrder_;
  uint64_t pads_ = 0, wraps_ = 0;
};

}  // namespace obd::tcmu::sim
