#include "support/memory_lane.hpp"

#include <deque>

#include "common/event.hpp"

namespace postern::testing {

namespace tv1 = tunnel::v1;

struct MemoryLaneIo::Shared {
  explicit Shared(asio::any_io_executor ex) : ready{Event(ex), Event(ex)}, gate{Event(ex), Event(ex)} {
    gate[0].set();
    gate[1].set();
  }
  std::deque<tv1::LaneMessage> to[2];  // to[i]: what side i reads
  Event ready[2];                      // something for side i, or closed
  Event gate[2];                       // side i's writes may complete
  std::vector<int> written[2];
  bool done_writing[2] = {false, false};  // side i closed its writes
  bool closed = false;
};

asio::awaitable<bool> MemoryLaneIo::read(tv1::LaneMessage& m) {
  auto s = shared_;
  auto& q = s->to[side_];
  while (q.empty() && !s->closed && !s->done_writing[1 - side_]) {
    s->ready[side_].reset();
    co_await s->ready[side_].wait();
  }
  if (q.empty()) co_return false;
  m = std::move(q.front());
  q.pop_front();
  co_return true;
}

asio::awaitable<bool> MemoryLaneIo::write(const tv1::LaneMessage& m) {
  auto s = shared_;
  co_await s->gate[side_].wait();
  if (s->closed) co_return false;
  const int other = 1 - side_;
  s->to[other].push_back(m);
  s->written[side_].push_back(m.frames_size());
  s->ready[other].set();
  co_return true;
}

bool MemoryLaneIo::try_read(tv1::LaneMessage& m) {
  auto& q = shared_->to[side_];
  if (q.empty()) return false;
  m = std::move(q.front());
  q.pop_front();
  return true;
}

void MemoryLaneIo::send_now(const tv1::LaneMessage& m) {
  if (shared_->closed) return;
  const int other = 1 - side_;
  shared_->to[other].push_back(m);
  shared_->written[side_].push_back(m.frames_size());
  shared_->ready[other].set();
}

asio::awaitable<void> MemoryLaneIo::close_writes() {
  shared_->done_writing[side_] = true;
  shared_->ready[1 - side_].set();
  co_return;
}

void MemoryLaneIo::cancel() {
  shared_->closed = true;
  for (auto& e : shared_->ready) e.set();
  for (auto& e : shared_->gate) e.set();
}

void MemoryLaneIo::hold_writes() { shared_->gate[side_].reset(); }
void MemoryLaneIo::release_writes() { shared_->gate[side_].set(); }
const std::vector<int>& MemoryLaneIo::written() const { return shared_->written[side_]; }

std::pair<std::unique_ptr<MemoryLaneIo>, std::unique_ptr<MemoryLaneIo>> memory_lane_pair(asio::any_io_executor ex) {
  auto s = std::make_shared<MemoryLaneIo::Shared>(ex);
  return {std::make_unique<MemoryLaneIo>(s, 0), std::make_unique<MemoryLaneIo>(s, 1)};
}

}  // namespace postern::testing
