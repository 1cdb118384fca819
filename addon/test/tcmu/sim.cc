#include "sim.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <stdexcept>

namespace obd::tcmu::sim {

namespace {
uint32_t roundUp8(size_t n) { return uint32_t((n + 7) & ~size_t(7)); }
constexpr uint32_t kCmdrOff = sizeof(Mailbox);
}  // namespace

KernelSim::KernelSim(uint32_t ringSize, uint32_t dataBlocks, uint32_t seed)
    : ringSize_(ringSize), dataBlocks_(dataBlocks), used_(dataBlocks, false), rng_(seed) {
  dataOff_ = (kCmdrOff + ringSize + kBlock - 1) / kBlock * kBlock;
  size_ = size_t(dataOff_) + size_t(dataBlocks) * kBlock;
  mem_.reset(::memfd_create("tcmu-sim", MFD_CLOEXEC));
  if (!mem_.valid() || ::ftruncate(mem_.get(), off_t(size_)) != 0) throw std::runtime_error("memfd");
  void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, mem_.get(), 0);
  if (p == MAP_FAILED) throw std::runtime_error("mmap");
  base_ = static_cast<uint8_t*>(p);
  kick_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  done_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  Mailbox* mb = mailbox();
  mb->version = kMailboxVersion;
  mb->flags = kCapOutOfOrderCompletion | kCapReadLen;
  mb->cmdr_off = kCmdrOff;
  mb->cmdr_size = ringSize;
  mb->cmd_head = 0;
  mb->cmd_tail = 0;
}

KernelSim::~KernelSim() {
  if (base_) ::munmap(base_, size_);
}

uint32_t KernelSim::freeRing() const {
  uint32_t used = (head_ + ringSize_ - cleaned_) % ringSize_;
  return ringSize_ - used - 1;
}

// First-fit run of free blocks starting at a random block, so consecutive iovecs land apart.
bool KernelSim::allocRun(uint32_t nblocks, std::vector<uint32_t>& out, uint32_t& first) {
  uint32_t start = std::uniform_int_distribution<uint32_t>(0, dataBlocks_ - 1)(rng_);
  for (uint32_t k = 0; k < dataBlocks_; k++) {
    uint32_t b = (start + k) % dataBlocks_;
    if (b + nblocks > dataBlocks_) continue;
    bool ok = true;
    for (uint32_t i = 0; i < nblocks && ok; i++) ok = !used_[b + i];
    if (!ok) continue;
    for (uint32_t i = 0; i < nblocks; i++) {
      used_[b + i] = true;
      out.push_back(b + i);
    }
    first = b;
    return true;
  }
  return false;
}

void KernelSim::putEntry(const uint8_t* bytes, uint32_t len) {
  std::memcpy(base_ + kCmdrOff + head_, bytes, len);
  head_ = (head_ + len) % ringSize_;
  if (head_ == 0) wraps_++;
  storeRelease(&mailbox()->cmd_head, head_);
}

int KernelSim::submit(const std::vector<uint8_t>& cdb, const std::vector<uint8_t>& dataOut, size_t dataInLen,
                      const SubmitOptions& opt) {
  const size_t total = dataOut.empty() ? dataInLen : dataOut.size();
  std::vector<size_t> lens = opt.iovLens;
  if (lens.empty()) {
    for (size_t done = 0; done < total; done += kBlock) lens.push_back(std::min<size_t>(kBlock, total - done));
  }
  Pending p;
  p.dataInLen = dataInLen;
  for (size_t len : lens) {
    uint32_t first = 0;
    uint32_t n = uint32_t((len + kBlock - 1) / kBlock);
    if (n == 0) n = 1;
    if (!allocRun(n, p.blocks, first)) {
      for (uint32_t b : p.blocks) used_[b] = false;
      return -1;
    }
    p.iov.emplace_back(uint64_t(dataOff_) + uint64_t(first) * kBlock, len);
  }
  const uint32_t entryLen = roundUp8(std::max<size_t>(sizeof(CmdResponse),
                                                      sizeof(CmdRequest) + 16 * p.iov.size() + cdb.size()));
  const uint32_t toEnd = ringSize_ - head_;
  const uint32_t need = toEnd < entryLen ? toEnd + entryLen : entryLen;
  if (freeRing() < need) {
    for (uint32_t b : p.blocks) used_[b] = false;
    return -1;
  }
  if (toEnd < entryLen) {  // the kernel never splits an entry: PAD to the end of the ring
    EntryHeader pad{makeLenOp(toEnd, EntryOp::kPad), 0, 0, 0};
    std::vector<uint8_t> bytes(toEnd, 0);
    std::memcpy(bytes.data(), &pad, sizeof pad);
    putEntry(bytes.data(), toEnd);
    pads_++;
  }
  uint16_t id;
  do {
    id = nextId_++;
  } while (id == 0 || pending_.count(id));
  p.pos = head_;
  std::vector<uint8_t> e(entryLen, 0);
  CmdRequest req{};
  req.hdr = {makeLenOp(entryLen, EntryOp::kCmd), id, 0, 0};
  req.iov_cnt = uint32_t(p.iov.size());
  req.cdb_off = kCmdrOff + head_ + sizeof(CmdRequest) + 16 * p.iov.size();
  std::memcpy(e.data(), &req, sizeof req);
  for (size_t i = 0; i < p.iov.size(); i++) {
    RingIovec v{p.iov[i].first, p.iov[i].second};
    std::memcpy(e.data() + sizeof(CmdRequest) + 16 * i, &v, sizeof v);
  }
  std::memcpy(e.data() + sizeof(CmdRequest) + 16 * p.iov.size(), cdb.data(), cdb.size());
  // Data-out goes into the iovecs; data-in buffers are poisoned so an early completion shows.
  size_t off = 0;
  for (auto& [at, len] : p.iov) {
    if (!dataOut.empty()) std::memcpy(base_ + at, dataOut.data() + off, len);
    else std::memset(base_ + at, 0xEE, len);
    off += len;
  }
  pending_[id] = std::move(p);
  putEntry(e.data(), entryLen);
  return id;
}

uint32_t KernelSim::submitRaw(const std::vector<uint8_t>& entry) {
  const uint32_t len = uint32_t(entry.size());
  const uint32_t toEnd = ringSize_ - head_;
  if (toEnd < len) {
    EntryHeader pad{makeLenOp(toEnd, EntryOp::kPad), 0, 0, 0};
    std::vector<uint8_t> bytes(toEnd, 0);
    std::memcpy(bytes.data(), &pad, sizeof pad);
    putEntry(bytes.data(), toEnd);
    pads_++;
  }
  uint32_t pos = head_;
  EntryHeader hdr;
  std::memcpy(&hdr, entry.data(), sizeof hdr);
  if (entryOp(hdr.len_op) == EntryOp::kCmd) {
    Pending p;
    p.pos = pos;
    p.dataInLen = 0;
    pending_[hdr.cmd_id] = std::move(p);
  }
  putEntry(entry.data(), len);
  return pos;
}

void KernelSim::kick() {
  uint64_t one = 1;
  (void)!::write(kick_.get(), &one, sizeof one);
}

std::string KernelSim::reap() {
  const uint32_t tail = loadAcquire(&mailbox()->cmd_tail);
  if (tail >= ringSize_ || tail % 8) return "cmd_tail " + std::to_string(tail) + " outside the ring";
  const uint32_t queued = (head_ + ringSize_ - cleaned_) % ringSize_;
  const uint32_t advanced = (tail + ringSize_ - cleaned_) % ringSize_;
  if (advanced > queued) return "cmd_tail " + std::to_string(tail) + " passed cmd_head " + std::to_string(head_);
  uint32_t pos = cleaned_;
  while (pos != tail) {
    EntryHeader hdr;
    std::memcpy(&hdr, base_ + kCmdrOff + pos, sizeof hdr);
    const uint32_t len = entryLen(hdr.len_op);
    if (len == 0 || pos + len > ringSize_) return "entry at " + std::to_string(pos) + " lost its length";
    if (entryOp(hdr.len_op) == EntryOp::kCmd) {
      auto it = pending_.find(hdr.cmd_id);
      if (it == pending_.end()) return "completion for unknown cmd_id " + std::to_string(hdr.cmd_id);
      if (it->second.pos != pos) return "cmd_id " + std::to_string(hdr.cmd_id) + " completed in another slot";
      const auto* rsp = reinterpret_cast<const CmdResponse*>(base_ + kCmdrOff + pos);
      Completion c;
      c.cmdId = hdr.cmd_id;
      c.status = rsp->scsi_status;
      c.uflags = hdr.uflags;
      if (len >= sizeof(CmdResponse)) std::memcpy(c.sense, rsp->sense_buffer, sizeof c.sense);
      for (auto& [at, l] : it->second.iov) {
        if (c.dataIn.size() >= it->second.dataInLen) break;
        size_t k = std::min<size_t>(l, it->second.dataInLen - c.dataIn.size());
        c.dataIn.insert(c.dataIn.end(), base_ + at, base_ + at + k);
      }
      for (uint32_t b : it->second.blocks) used_[b] = false;
      pending_.erase(it);
      reapOrder_.push_back(c.cmdId);
      done_map_[c.cmdId] = std::move(c);
    } else if (entryOp(hdr.len_op) != EntryOp::kPad && (hdr.uflags & kUflagUnknownOp)) {
      Completion c;  // record unknown-op acknowledgements under a pseudo id (pos | 1<<20)
      c.uflags = hdr.uflags;
      done_map_[int(pos) | (1 << 20)] = std::move(c);
    }
    pos = (pos + len) % ringSize_;
  }
  cleaned_ = tail;
  return "";
}

bool KernelSim::waitFor(int id, int timeoutMs, std::string* err) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
  for (;;) {
    std::string e = reap();
    if (!e.empty()) {
      *err = e;
      return false;
    }
    if (id >= 0 ? done_map_.count(id) > 0 : pending_.empty()) return true;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      *err = "timed out waiting for completion (cmd " + std::to_string(id) + ", " +
             std::to_string(pending_.size()) + " pending)";
      return false;
    }
    pollfd pfd{done_.get(), POLLIN, 0};
    ::poll(&pfd, 1, int(std::min<long>(left.count(), 50)));
    uint64_t v;
    (void)!::read(done_.get(), &v, sizeof v);
  }
}

bool KernelSim::waitAll(int timeoutMs, std::string* err) { return waitFor(-1, timeoutMs, err); }

Completion KernelSim::run(const std::vector<uint8_t>& cdb, const std::vector<uint8_t>& dataOut, size_t dataInLen,
                          std::string* err, const SubmitOptions& opt) {
  int id = submit(cdb, dataOut, dataInLen, opt);
  if (id < 0) {
    *err = "no room in ring/data area";
    return {};
  }
  kick();
  if (!waitFor(id, 5000, err)) return {};
  Completion c = done_map_[id];
  done_map_.erase(id);
  return c;
}

}  // namespace obd::tcmu::sim
