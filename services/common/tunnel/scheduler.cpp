#include "common/tunnel/scheduler.hpp"

#include <algorithm>

namespace postern::tunnel {

void Scheduler::push(tunnel::v1::Frame&& f) {
  auto& q = queues_[f.exchange()];
  if (q.empty()) ready_.push_back(f.exchange());
  q.push_back(std::move(f));
  ++frames_;
}

void Scheduler::take(tunnel::v1::LaneMessage& out, std::size_t max_bytes) {
  std::size_t bytes = 0, n = 0;
  bool full = false;
  while (!ready_.empty() && !full) {
    const std::uint64_t id = ready_.front();
    ready_.pop_front();
    auto it = queues_.find(id);
    auto& q = it->second;
    // One turn: at most one data piece, with the frames around it that
    // carry no data (a small response's head and end go with its body).
    bool took_data = false;
    while (!q.empty()) {
      const auto& f = q.front();
      const bool data = f.kind_case() == tunnel::v1::Frame::kBody || f.kind_case() == tunnel::v1::Frame::kWsMessage;
      if (data && took_data) break;
      const std::size_t size = f.ByteSizeLong();
      if (n > 0 && (bytes + size > max_bytes || n >= kBatchFrames)) {
        full = true;
        break;
      }
      bytes += size;
      ++n;
      took_data = took_data || data;
      *out.add_frames() = std::move(q.front());
      q.pop_front();
      --frames_;
    }
    if (q.empty()) {
      queues_.erase(it);
    } else if (full) {
      ready_.push_front(id);  // its turn goes on in the next message
    } else {
      ready_.push_back(id);
    }
  }
}

void Scheduler::drop(std::uint64_t exchange) {
  const auto it = queues_.find(exchange);
  if (it == queues_.end()) return;
  frames_ -= it->second.size();
  queues_.erase(it);
  ready_.erase(std::remove(ready_.begin(), ready_.end(), exchange), ready_.end());
}

}  // namespace postern::tunnel
