#include "transport/fuse_loop/fuse_ring_channel.h"

#include <liburing.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <sys/sysinfo.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "util/unique_fd.h"

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

// One queue's ring is driven by its own thread only (single issuer): it submits every command and
// reaps every completion, so a reply made on that thread (a local read or a write, answered inline)
// costs no syscall of its own: its COMMIT_AND_FETCH goes out with the next io_uring_enter, which also
// waits for the next requests. A reply made on another thread (a remote miss completing later) is
// handed over through a list and an eventfd the queue thread always has a read armed on.
class FuseRingQueue {
 public:
  FuseRingQueue(int fd, uint16_t qid, const FuseRingChannel::Handler* handler) : fd_(fd), qid_(qid), handler_(handler) {}
  ~FuseRingQueue() {
    stop();
    if (mem_) ::munmap(mem_, memSize_);
  }

  Status init(size_t payloadSize, int entries) {
    wake_.reset(::eventfd(0, EFD_CLOEXEC));
    if (!wake_.valid()) return SysError("eventfd (FUSE queue " + std::to_string(qid_) + ")");
    // Each entry has one command in flight at most, plus the wake-up read. Task work (the kernel
    // copying a request into an entry) runs when the queue thread enters the ring, not as an
    // interrupt. Such a ring belongs to the thread that enables it: created disabled, the queue
    // thread enables it.
    unsigned depth = static_cast<unsigned>(entries) + 2;
    int r = io_uring_queue_init(depth, &ring_, IORING_SETUP_SQE128 | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED);
    disabled_ = r == 0;
    if (r == -EINVAL) r = io_uring_queue_init(depth, &ring_, IORING_SETUP_SQE128);  // kernels before 6.1
    if (r < 0) return SysError("io_uring_queue_init (FUSE queue " + std::to_string(qid_) + ")", -r);
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

  // The REGISTER commands go out only after the INIT reply (before it the kernel answers EAGAIN);
  // the queue thread sends them, as it sends every command.
  void start() {
    live_ = static_cast<int>(entries_.size());
    thread_ = std::thread([this] { run(); });
  }

  // Answers the request `e` holds, from any thread.
  void commit(FuseRingEntry* e) {
    if (tlsQueue == this) return prepCommand(e, kCmdCommitAndFetch, e->commitId);
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (stopping_) return;  // a late reply after stop(): the connection is going away
      handedOver_.push_back(e);
    }
    uint64_t one = 1;
    (void)!::write(wake_.get(), &one, sizeof one);
  }

  void stop() {
    if (!ringUp_) return;
    {
      std::lock_guard<std::mutex> lk(mu_);
      stopping_ = true;
    }
    uint64_t one = 1;
    (void)!::write(wake_.get(), &one, sizeof one);
    if (thread_.joinable()) thread_.join();
    // Closing the ring cancels the idle entries' commands in the kernel.
    io_uring_queue_exit(&ring_);
    ringUp_ = false;
  }

 private:
  static constexpr uint64_t kWakeTag = 1;  // user_data of the eventfd read (entries are pointers)
  static thread_local FuseRingQueue* tlsQueue;

  // Queue thread only. The SQ has room: one command per entry and the wake-up read at most.
  void prepCommand(FuseRingEntry* e, uint32_t cmdOp, uint64_t commitId) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (!sqe) return;
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
  }

  void armWake() {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (!sqe) return;
    std::memset(sqe, 0, 2 * sizeof *sqe);
    io_uring_prep_read(sqe, wake_.get(), &wakeCount_, sizeof wakeCount_, 0);
    sqe->user_data = kWakeTag;
  }

  // Returns false once stop() asked.
  bool takeHandedOver() {
    std::vector<FuseRingEntry*> list;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (stopping_) return false;
      list.swap(handedOver_);
    }
    for (FuseRingEntry* e : list) prepCommand(e, kCmdCommitAndFetch, e->commitId);
    return true;
  }

  void run() {
    tlsQueue = this;
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    CPU_SET(qid_, &cpus);
    ::sched_setaffinity(0, sizeof cpus, &cpus);  // best effort: the queue is that CPU's
    // liburing 2.3 declares io_uring_enable_rings but does not export it.
    if (disabled_ && ::syscall(__NR_io_uring_register, ring_.ring_fd, IORING_REGISTER_ENABLE_RINGS, nullptr, 0) < 0)
      return;  // cannot happen: a ring of our own making
    for (auto& e : entries_) prepCommand(&e, kCmdRegister, 0);
    armWake();
    io_uring_cqe* cqes[64];
    while (live_ > 0) {
      int r = io_uring_submit_and_wait(&ring_, 1);
      if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) break;
      unsigned n = io_uring_peek_batch_cqe(&ring_, cqes, 64);
      bool stop = false;
      for (unsigned i = 0; i < n; i++) {
        uint64_t tag = cqes[i]->user_data;
        int res = cqes[i]->res;
        if (tag == kWakeTag) {
          stop = !takeHandedOver();
          armWake();
          continue;
        }
        auto* e = reinterpret_cast<FuseRingEntry*>(tag);
        if (res == 0) {
          dispatch(e);
        } else if (res == -EAGAIN || res == -EINTR) {
          prepCommand(e, kCmdRegister, 0);
        } else {
          live_--;  // ENOTCONN (teardown), ECONNABORTED, or a refusal: this entry is done
        }
      }
      io_uring_cq_advance(&ring_, n);
      if (stop) break;
    }
    // Whatever the last round prepared (answers made inline) still goes to the kernel.
    io_uring_submit(&ring_);
    tlsQueue = nullptr;
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
  bool ringUp_ = false, disabled_ = false;
  UniqueFd wake_;
  uint64_t wakeCount_ = 0;
  std::mutex mu_;  // guards stopping_ and handedOver_
  bool stopping_ = false;
  std::vector<FuseRingEntry*> handedOver_;
  char* mem_ = nullptr;
  size_t memSize_ = 0;
  std::vector<FuseRingEntry> entries_;
  int live_ = 0;
  std::thread thread_;
};

thread_local FuseRingQueue* FuseRingQueue::tlsQueue = nullptr;

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
  e->queue->commit(e);
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
  for (auto& q : queues_) q->start();
}

FuseRingChannel::~FuseRingChannel() { stop(); }

void FuseRingChannel::stop() {
  for (auto& q : queues_) q->stop();
}

}  // namespace obd
