#include "transport/fuse_loop/fuse_ring_channel.h"

#include <liburing.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace obd {

namespace {

// UAPI (protocol 7.42), absent from Debian's <linux/fuse.h>: the sub-commands and the command
// block in the SQE, and where fuse_uring_req_header keeps its parts.
constexpr uint32_t kCmdRegister = 1, kCmdCommitAndFetch = 2;
struct UringCmdReq {
  uint64_t flags;
  uint64_t commitId;
  uint16_t qid;
  uint8_t padding[6];
};
constexpr size_t kHeaderSize = 288;  // sizeof(struct fuse_uring_req_header)
constexpr size_t kOpInOffset = 128, kOpInSize = 128;
constexpr size_t kCommitIdOffset = 264, kPayloadSzOffset = 272;

}  // namespace

class FuseRingQueue {
 public:
  FuseRingQueue(int fd, uint16_t qid, const FuseRingChannel::Handler* handler) : fd_(fd), qid_(qid), handler_(handler) {}
  ~FuseRingQueue() { stop(); if (mem_) ::munmap(mem_, memSize_); }

  Status init(size_t payloadSize, int entries) {
    // Each entry has one command in flight at most, plus the wake-up NOP.
    if (int r = io_uring_queue_init(static_cast<unsigned>(entries) * 2 + 2, &ring_, IORING_SETUP_SQE128); r < 0)
      return SysError("io_uring_queue_init (FUSE queue " + std::to_string(qid_) + ")", -r);
    ringUp_ = true;
    size_t stride = 4096 + ((payloadSize + 4095) & ~size_t{4095});
    memSize_ = stride * static_cast<size_t>(entries);
    void* m = ::mmap(nullptr, memSize_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return SysError("FUSE ring buffers");
    mem_ = static_cast<char*>(m);
    entries_.resize(static_cast<size_t>(entries));
    for (size_t i = 0; i < entries_.size(); i++) {
      FuseRingEntry& e = entries_[i];
      e.queue = this;
      e.header = mem_ + i * stride;
      e.payload = e.header + 4096;
      e.payloadSize = payloadSize;
      e.iov[0] = {e.header, kHeaderSize};
      e.iov[1] = {e.payload, payloadSize};
    }
    return Status::Ok();
  }

  // The REGISTER commands go out only after the INIT reply (before it the kernel answers EAGAIN).
  Status registerAll() {
    for (auto& e : entries_) submit(&e, kCmdRegister, 0);
    live_ = static_cast<int>(entries_.size());
    thread_ = std::thread([this] { run(); });
    return Status::Ok();
  }

  void submit(FuseRingEntry* e, uint32_t cmdOp, uint64_t commitId) {
    std::lock_guard<std::mutex> lk(mu_);
    if (!ringUp_ || stopping_) return;  // a late reply after stop(): the connection is going away
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (!sqe) return;  // cannot happen: one command per entry at most
    std::memset(sqe, 0, 2 * sizeof *sqe);  // SQE128: the command block lies in the second half
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = fd_;
    sqe->cmd_op = cmdOp;
    if (cmdOp == kCmdRegister) {
      sqe->addr = reinterpret_cast<uint64_t>(e->iov);
      sqe->len = 2;
    }
    sqe->user_data = reinterpret_cast<uint64_t>(e);
    UringCmdReq req{0, commitId, qid_, {}};
    std::memcpy(sqe->cmd, &req, sizeof req);
    io_uring_submit(&ring_);
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (!ringUp_) return;
      stopping_ = true;
      if (io_uring_sqe* sqe = io_uring_get_sqe(&ring_)) {
        io_uring_prep_nop(sqe);
        sqe->user_data = 0;  // wakes the queue thread
        io_uring_submit(&ring_);
      }
    }
    if (thread_.joinable()) thread_.join();
    std::lock_guard<std::mutex> lk(mu_);
    // Closing the ring cancels the idle entries' commands in the kernel.
    io_uring_queue_exit(&ring_);
    ringUp_ = false;
  }

 private:
  void run() {
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    CPU_SET(qid_, &cpus);
    ::sched_setaffinity(0, sizeof cpus, &cpus);  // best effort: the queue is that CPU's
    while (live_ > 0) {
      io_uring_cqe* cqe = nullptr;
      int r = io_uring_wait_cqe(&ring_, &cqe);
      if (r == -EINTR) continue;
      if (r < 0) break;
      auto* e = reinterpret_cast<FuseRingEntry*>(cqe->user_data);
      int res = cqe->res;
      io_uring_cqe_seen(&ring_, cqe);
      if (!e) break;  // stop()
      if (res == 0) {
        dispatch(e);
      } else if (res == -EAGAIN || res == -EINTR) {
        submit(e, kCmdRegister, 0);
      } else {
        live_--;  // ENOTCONN (teardown), ECONNABORTED, or a refusal: this entry is done
      }
    }
  }

  void dispatch(FuseRingEntry* e) {
    FuseRequest r;
    std::memcpy(&r.h, e->header, sizeof r.h);
    uint64_t commitId;
    uint32_t payloadSz;
    std::memcpy(&commitId, e->header + kCommitIdOffset, sizeof commitId);
    std::memcpy(&payloadSz, e->header + kPayloadSzOffset, sizeof payloadSz);
    e->commitId = commitId;
    r.arg = e->header + kOpInOffset;
    r.argLen = kOpInSize;
    r.payload = e->payload;
    r.payloadLen = std::min<size_t>(payloadSz, e->payloadSize);
    r.to = FuseReplyTarget{-1, r.h.unique, e};
    (*handler_)(r);
  }

  int fd_;
  uint16_t qid_;
  const FuseRingChannel::Handler* handler_;
  io_uring ring_{};
  bool ringUp_ = false, stopping_ = false;
  std::mutex mu_;
  char* mem_ = nullptr;
  size_t memSize_ = 0;
  std::vector<FuseRingEntry> entries_;
  std::atomic<int> live_{0};
  std::thread thread_;
};

void commitFuseRingReply(FuseRingEntry* e, uint64_t unique, int error, const iovec* iov, int iovcnt) {
  size_t used = 0;
  for (int i = 0; !error && i < iovcnt; i++) {
    size_t n = std::min(iov[i].iov_len, e->payloadSize - used);
    if (iov[i].iov_base != e->payload + used) std::memcpy(e->payload + used, iov[i].iov_base, n);
    used += n;
  }
  fuse_out_header oh{};
  oh.len = static_cast<uint32_t>(sizeof oh + used);
  oh.error = error ? -error : 0;
  oh.unique = unique;
  std::memcpy(e->header, &oh, sizeof oh);
  uint32_t payloadSz = static_cast<uint32_t>(used);
  std::memcpy(e->header + kPayloadSzOffset, &payloadSz, sizeof payloadSz);
  e->queue->submit(e, kCmdCommitAndFetch, e->commitId);
}

Result<std::unique_ptr<FuseRingChannel>> FuseRingChannel::prepare(int connFd, size_t payloadSize, int entriesPerQueue, Handler handler) {
  std::unique_ptr<FuseRingChannel> c(new FuseRingChannel());
  c->handler_ = std::move(handler);
  int queues = ::get_nprocs_conf();  // every possible CPU has a queue the kernel waits for
  for (int q = 0; q < queues; q++) {
    auto queue = std::make_unique<FuseRingQueue>(connFd, static_cast<uint16_t>(q), &c->handler_);
    OBD_RETURN_IF_ERROR(queue->init(payloadSize, std::max(1, entriesPerQueue)));
    c->queues_.push_back(std::move(queue));
  }
  return c;
}

void FuseRingChannel::registerEntries() {
  for (auto& q : queues_) (void)q->registerAll();
}

FuseRingChannel::~FuseRingChannel() { stop(); }

void FuseRingChannel::stop() {
  for (auto& q : queues_) q->stop();
}

}  // namespace obd
