#include "faulty_source.h"

#include <chrono>
#include <random>
#include <thread>

namespace obd::zfile {

FaultySource::FaultySource(std::shared_ptr<ReadableFile> inner, bool otherThread) : state_(std::make_shared<State>()) {
  state_->inner = std::move(inner);
  state_->otherThread = otherThread;
}

void FaultySource::readAsync(void* buf, size_t n, uint64_t off, IoCallback cb) {
  const uint64_t seq = state_->reads.fetch_add(1);
  auto run = [state = state_, buf, n, off, cb = std::move(cb)]() mutable {
    Status st = state->inner->read(buf, n, off);
    if (st.ok() && n > 0 && state->takeCorruption()) static_cast<uint8_t*>(buf)[n / 2] ^= 0x20;
    cb(std::move(st));
  };
  if (!state_->otherThread) return run();
  std::thread([run = std::move(run), seq]() mutable {
    std::minstd_rand rnd(static_cast<uint32_t>(seq));
    std::this_thread::sleep_for(std::chrono::microseconds(rnd() % 500));
    run();
  }).detach();
}

}  // namespace obd::zfile
