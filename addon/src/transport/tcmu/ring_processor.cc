#include "transport/tcmu/ring_processor.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>

namespace obd::tcmu {

namespace {
constexpr size_t kReqHeader = sizeof(CmdRequest);

// True if [off, off+len) lies inside [lo, hi).
bool within(uint64_t off, uint64_t len, uint64_t lo, uint64_t hi) {
  return off >= lo && off <= hi && len <= hi - off;
}
}  // namespace

Result<std::unique_ptr<RingProcessor>> RingProcessor::create(uint8_t* base, size_t size, Doorbell bell,
                                                             ScsiDisk& disk) {
  if (size < sizeof(Mailbox)) return InvalidArg("tcmu: mapping smaller than the mailbox");
  auto* mb = reinterpret_cast<Mailbox*>(base);
  if (mb->version != kMailboxVersion)
    return InvalidArg("tcmu: mailbox version " + std::to_string(mb->version) + ", expected 2");
  const uint64_t off = mb->cmdr_off, ringSize = mb->cmdr_size;
  if (off < sizeof(Mailbox) || ringSize < 64 || ringSize % kEntryAlign != 0 || !within(off, ringSize, 0, size))
    return InvalidArg("tcmu: command ring [" + std::to_string(off) + ", +" + std::to_string(ringSize) +
                      ") does not fit the " + std::to_string(size) + "-byte mapping");
  const uint32_t tail = loadAcquire(&mb->cmd_tail);
  if (tail >= ringSize || tail % kEntryAlign != 0)
    return InvalidArg("tcmu: cmd_tail " + std::to_string(tail) + " outside the ring");
  int sfd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (sfd < 0) return SysError("tcmu: eventfd");
  return std::unique_ptr<RingProcessor>(new RingProcessor(base, size, bell, disk, UniqueFd(sfd)));
}

RingProcessor::RingProcessor(uint8_t* base, size_t size, Doorbell bell, ScsiDisk& disk, UniqueFd stopFd)
    : base_(base),
      size_(size),
      mb_(reinterpret_cast<Mailbox*>(base)),
      ring_(base + mb_->cmdr_off),
      ringSize_(mb_->cmdr_size),
      dataOff_(uint64_t(mb_->cmdr_off) + mb_->cmdr_size),
      bell_(bell),
      disk_(disk),
      stopFd_(std::move(stopFd)),
      readPos_(loadAcquire(&mb_->cmd_tail)),
      tail_(readPos_) {}

RingProcessor::~RingProcessor() { stop(); }

Status RingProcessor::start() {
  if (thread_.joinable()) return Status::Ok();
  {
    std::lock_guard<std::mutex> lock(mu_);
    workerStop_ = false;
  }
  worker_ = std::thread([this] { work(); });
  thread_ = std::thread([this] { run(); });
  return Status::Ok();
}

void RingProcessor::stop() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    (void)!::write(stopFd_.get(), &one, sizeof one);
    thread_.join();
  }
  if (worker_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      workerStop_ = true;  // the worker drains what is queued first
    }
    workCv_.notify_all();
    worker_.join();
  }
  std::unique_lock<std::mutex> lock(mu_);
  idle_.wait(lock, [this] { return stats_.inFlight == 0; });
}

void RingProcessor::work() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    workCv_.wait(lock, [this] { return workerStop_ || !blocking_.empty(); });
    if (blocking_.empty()) return;
    Slot* slot = blocking_.front();
    blocking_.pop_front();
    lock.unlock();
    disk_.execute(slot->cdb, slot->cdbLen, slot->data.data(), slot->data.size(),
                  [this, slot](const ScsiResult& r) { complete(slot, r); });
    lock.lock();
  }
}

void RingProcessor::dispatch(Slot* slot) {
  if (mayBlock(slot->cdb[0])) {
    std::unique_lock<std::mutex> lock(mu_);
    if (worker_.joinable()) {
      blocking_.push_back(slot);
      lock.unlock();
      workCv_.notify_one();
      return;
    }
  }
  disk_.execute(slot->cdb, slot->cdbLen, slot->data.data(), slot->data.size(),
                [this, slot](const ScsiResult& r) { complete(slot, r); });
}

void RingProcessor::run() {
  processRing();  // commands queued before we started (e.g. re-opened after a daemon restart)
  for (;;) {
    pollfd fds[2] = {{bell_.waitFd, POLLIN, 0}, {stopFd_.get(), POLLIN, 0}};
    int n = ::poll(fds, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      failRing(std::string("poll: ") + std::strerror(errno));
      return;
    }
    if (fds[1].revents) return;
    if (fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
      failRing("doorbell fd closed or in error");
      return;
    }
    if (fds[0].revents & POLLIN) {
      uint64_t word = 0;
      (void)!::read(bell_.waitFd, &word, bell_.wordSize);  // clears the event; EAGAIN is fine
      processRing();
    }
  }
}

void RingProcessor::failRing(const std::string& why) {
  std::lock_guard<std::mutex> lock(mu_);
  if (ringError_.ok()) {
    ringError_ = IoError("tcmu ring: " + why);
    if (log_) log_(ringError_.message());
  }
}

void RingProcessor::processRing() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!ringError_.ok()) return;
    fetching_ = true;
    fetcher_ = std::this_thread::get_id();
  }
  for (;;) {
    const uint32_t head = loadAcquire(&mb_->cmd_head);
    if (head >= ringSize_ || head % kEntryAlign != 0) {
      failRing("cmd_head " + std::to_string(head) + " outside the " + std::to_string(ringSize_) + "-byte ring");
      break;
    }
    if (readPos_ == head) break;
    const uint32_t queued = (head + ringSize_ - readPos_) % ringSize_;
    uint8_t* entry = ring_ + readPos_;
    EntryHeader hdr;
    std::memcpy(&hdr, entry, sizeof hdr);
    const uint32_t len = entryLen(hdr.len_op);
    if (len < sizeof(EntryHeader) || len > queued || readPos_ + len > ringSize_) {
      failRing("entry at " + std::to_string(readPos_) + " has length " + std::to_string(len) + " (" +
               std::to_string(queued) + " bytes queued, ring " + std::to_string(ringSize_) + ")");
      break;
    }
    Slot* slot;
    {
      std::lock_guard<std::mutex> lock(mu_);
      slots_.emplace_back();
      slot = &slots_.back();
      slot->pos = readPos_;
      slot->len = len;
    }
    readPos_ = ringAdvance(readPos_, len, ringSize_);
    const EntryOp op = entryOp(hdr.len_op);
    if (op == EntryOp::kCmd) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        stats_.commands++;
        stats_.inFlight++;
      }
      if (!parseCmd(*slot, entry)) {
        {
          std::lock_guard<std::mutex> lock(mu_);
          stats_.badEntries++;
        }
        complete(slot, senseInternalFailure());
        continue;
      }
      dispatch(slot);
      continue;
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (op == EntryOp::kPad) {
      stats_.pads++;
    } else {
      stats_.otherEntries++;
      if (op != EntryOp::kTmr) entry[offsetof(EntryHeader, uflags)] |= kUflagUnknownOp;
    }
    slot->done = true;
  }
  bool ring;
  {
    std::lock_guard<std::mutex> lock(mu_);
    fetching_ = false;
    ring = advanceTailLocked() || notifyPending_;
    notifyPending_ = false;
  }
  if (ring) notify();
}

bool RingProcessor::parseCmd(Slot& slot, const uint8_t* entry) {
  CmdRequest req;
  if (slot.len < sizeof(CmdResponse)) return false;  // no room for the response in place
  std::memcpy(&req, entry, kReqHeader);
  const uint64_t iovs = uint64_t(req.iov_cnt) + req.iov_bidi_cnt + req.iov_dif_cnt;
  if (iovs > (slot.len - kReqHeader) / sizeof(RingIovec)) return false;
  slot.data.reserve(req.iov_cnt);
  for (uint32_t i = 0; i < req.iov_cnt; i++) {
    RingIovec iov;
    std::memcpy(&iov, entry + kReqHeader + i * sizeof(RingIovec), sizeof iov);
    if (!within(iov.base, iov.len, dataOff_, size_)) return false;
    slot.data.push_back({base_ + iov.base, size_t(iov.len)});
  }
  // The CDB: at least the opcode must be in the mapping, then as many bytes as its group implies.
  if (!within(req.cdb_off, 1, sizeof(Mailbox), size_)) return false;
  const uint8_t opcode = base_[req.cdb_off];
  size_t n = cdbLength(opcode);
  if (n == 0) n = 1;  // unknown group: the opcode alone is enough to reject it
  if (!within(req.cdb_off, n, sizeof(Mailbox), size_)) return false;
  std::memcpy(slot.cdb, base_ + req.cdb_off, n);
  slot.cdbLen = n;
  return true;
}

void RingProcessor::complete(Slot* slot, const ScsiResult& r) {
  // The request fields were copied at fetch time, so the response may overwrite them in place.
  auto* rsp = reinterpret_cast<CmdResponse*>(ring_ + slot->pos);
  // Entries shorter than a full response (rejected by parseCmd) get as much of it as fits.
  if (slot->len >= offsetof(CmdResponse, read_len)) rsp->scsi_status = r.status;
  if (r.status == kStatusCheckCondition && slot->len >= sizeof(CmdResponse)) {
    uint8_t sense[kSenseBufferSize] = {};
    std::memcpy(sense, r.sense, kFixedSenseLen);
    std::memcpy(rsp->sense_buffer, sense, sizeof sense);
  }
  bool ring = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    slot->done = true;
    if (advanceTailLocked()) {
      // Completions inline in the fetch loop ride on its one doorbell write; others ring now.
      if (fetching_ && std::this_thread::get_id() == fetcher_) notifyPending_ = true;
      else ring = true;
    }
  }
  if (ring) notify();
  // Last touch of this object: once inFlight reaches 0, stop() may return and the owner free us.
  std::lock_guard<std::mutex> lock(mu_);
  if (--stats_.inFlight == 0) idle_.notify_all();
}

bool RingProcessor::advanceTailLocked() {
  bool moved = false;
  while (!slots_.empty() && slots_.front().done) {
    tail_ = ringAdvance(tail_, slots_.front().len, ringSize_);
    slots_.pop_front();
    moved = true;
  }
  if (moved) storeRelease(&mb_->cmd_tail, tail_);
  return moved;
}

void RingProcessor::notify() {
  uint64_t word = bell_.wordSize == 8 ? 1 : 0;
  (void)!::write(bell_.notifyFd, &word, bell_.wordSize);
  std::lock_guard<std::mutex> lock(mu_);
  stats_.notifications++;
}

Status RingProcessor::ringError() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ringError_;
}

RingStats RingProcessor::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace obd::tcmu
