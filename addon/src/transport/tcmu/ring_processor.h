// Userspace side of the TCMU command ring: fetches entries between our read cursor
// and mailbox->cmd_head, hands CMD entries to a ScsiDisk, and completes them.
//
// Completion rule: the response is written in place into the command's own entry, and cmd_tail only
// advances over a contiguous run of completed entries (PAD/TMR/unknown entries count as completed when
// fetched). So commands may finish in any order on any thread, but the kernel never sees an entry as
// done before its response and its read data are in place. This does not rely on CAP_OOOC.
//
// Threads: one fetch thread waits on the doorbell and dispatches; reads go straight to the device
// (asynchronous), commands that block (writes, discards, flushes: mayBlock) go to one worker thread
// in ring order, so a slow flush never stops reads from being fetched.
//
// Every ring entry is untrusted: offsets and lengths are checked against the mapping. A bad CMD entry
// is answered with HARDWARE ERROR (internal target failure); an inconsistent ring (cmd_head or entry
// length that cannot be walked) stops fetching and is reported by ringError().
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <condition_variable>
#include <string>
#include <thread>
#include <vector>

#include "transport/tcmu/ring.h"
#include "transport/tcmu/scsi.h"
#include "util/status.h"
#include "util/unique_fd.h"

namespace obd::tcmu {

// How the two sides poke each other. UIO: one fd, 4-byte reads/writes. The simulator: two eventfds,
// 8-byte words.
struct Doorbell {
  int waitFd = -1;    // readable when the kernel queued commands
  int notifyFd = -1;  // written after cmd_tail advanced
  size_t wordSize = 4;
};

struct RingStats {
  uint64_t commands = 0;      // CMD entries fetched
  uint64_t pads = 0;          // PAD entries skipped
  uint64_t otherEntries = 0;  // TMR and unknown opcodes
  uint64_t badEntries = 0;    // CMD entries rejected by bounds checks
  uint64_t notifications = 0; // doorbell writes
  uint64_t inFlight = 0;
};

class RingProcessor {
 public:
  // base/size: the whole shared mapping (mailbox + ring + data area). Validates the mailbox.
  static Result<std::unique_ptr<RingProcessor>> create(uint8_t* base, size_t size, Doorbell bell,
                                                       ScsiDisk& disk);
  ~RingProcessor();  // stops the thread and waits for in-flight commands
  RingProcessor(const RingProcessor&) = delete;
  RingProcessor& operator=(const RingProcessor&) = delete;

  // Starts the thread that waits on the doorbell and processes the ring.
  Status start();
  // Stops fetching and waits until every fetched command has completed.
  void stop();
  // Fetches and dispatches everything queued now (the thread calls this; tests may call it directly).
  void processRing();

  Status ringError() const;
  RingStats stats() const;
  void setLogger(std::function<void(const std::string&)> log) { log_ = std::move(log); }

 private:
  struct Slot {
    uint32_t pos = 0;  // entry offset within the ring
    uint32_t len = 0;
    bool done = false;
    uint8_t cdb[16] = {};
    size_t cdbLen = 0;
    std::vector<DataSegment> data;
  };

  RingProcessor(uint8_t* base, size_t size, Doorbell bell, ScsiDisk& disk, UniqueFd stopFd);
  void run();
  void work();
  void dispatch(Slot* slot);
  // Validates one CMD entry into slot; returns false (slot answered as bad) on any bounds failure.
  bool parseCmd(Slot& slot, const uint8_t* entry);
  void complete(Slot* slot, const ScsiResult& r);
  // Under mu_: moves cmd_tail over completed slots; returns true if it moved.
  bool advanceTailLocked();
  void notify();
  void failRing(const std::string& why);

  uint8_t* base_;
  size_t size_;
  Mailbox* mb_;
  uint8_t* ring_;
  uint32_t ringSize_;
  uint64_t dataOff_;
  Doorbell bell_;
  ScsiDisk& disk_;
  UniqueFd stopFd_;
  std::thread thread_;
  std::thread worker_;
  std::deque<Slot*> blocking_;  // mayBlock commands waiting for the worker (under mu_)
  std::condition_variable workCv_;
  bool workerStop_ = false;
  std::function<void(const std::string&)> log_;

  uint32_t readPos_;  // our fetch cursor; only the fetching thread touches it
  mutable std::mutex mu_;
  std::condition_variable idle_;
  std::deque<Slot> slots_;  // fetched, not yet passed by cmd_tail, in ring order
  uint32_t tail_;
  bool fetching_ = false;   // true while processRing runs: its inline completions defer the doorbell
  std::thread::id fetcher_;
  bool notifyPending_ = false;
  Status ringError_;
  RingStats stats_;
};

}  // namespace obd::tcmu
