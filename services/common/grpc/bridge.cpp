#include "common/grpc/bridge.hpp"

#include <absl/synchronization/mutex.h>
#include <grpc/support/time.h>
#include <pthread.h>

#include <mutex>

namespace postern::grpc_bridge {

namespace {
// Completions handed over in one post at most; bounds the latency of the
// first in a long run.
constexpr std::size_t kMaxBatch = 64;
// How often side queues are looked at while the main queue is quiet.
constexpr int kSideQueuePollMs = 20;

// gRPC's locks are absl::Mutex. Debian builds abseil without NDEBUG, which
// leaves its debug-only deadlock detection on: every Lock records the lock
// order in one process-wide graph behind a global spin lock (61 ns per pair
// of Lock/Unlock instead of 15 here, and every gRPC thread serialised on that
// spin lock). Postern ships release binaries; the detection is turned off
// once, before the first pump runs.
void turn_off_absl_deadlock_detection() {
  static std::once_flag once;
  std::call_once(once, [] { absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore); });
}
}  // namespace

void Ready::post_all() {
  for (auto& g : groups_) {
    asio::post(g.ex, [calls = std::move(g.calls)]() mutable {
      for (auto& c : calls) (*c)();
    });
  }
  groups_.clear();
  count_ = 0;
}

Pump::Pump(std::unique_ptr<grpc::CompletionQueue> cq, std::string name,
           std::vector<std::unique_ptr<grpc::CompletionQueue>> side) {
  turn_off_absl_deadlock_detection();
  queues_.push_back(std::move(cq));
  for (auto& q : side) queues_.push_back(std::move(q));
  thread_ = std::thread([this, name = std::move(name)] {
    pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
    run();
  });
}

void Pump::run() {
  using Status = grpc::CompletionQueue::NextStatus;
  std::vector<bool> open(queues_.size(), true);
  std::size_t open_count = queues_.size();
  void* tag = nullptr;
  bool ok = false;
  Ready ready;  // emptied by post_all() each round; keeps its capacity
  while (open_count > 0) {
    // Wait on the first queue still open; with side queues, only for a
    // slice, so that they are looked at even while the first is quiet.
    std::size_t wait_on = 0;
    while (!open[wait_on]) ++wait_on;
    const gpr_timespec until =
        open_count > 1 ? gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(kSideQueuePollMs, GPR_TIMESPAN))
                       : gpr_inf_future(GPR_CLOCK_MONOTONIC);
    const Status st = queues_[wait_on]->AsyncNext(&tag, &ok, until);
    if (st == Status::GOT_EVENT) {
      static_cast<Tag*>(tag)->complete(ok, ready);
    } else if (st == Status::SHUTDOWN) {
      open[wait_on] = false;
      --open_count;
    }
    // Everything else already complete goes with it: under load a wake-up
    // of the service thread carries many completions, not one.
    for (std::size_t i = 0; i < queues_.size(); ++i) {
      while (open[i] && ready.size() < kMaxBatch) {
        const Status more = queues_[i]->AsyncNext(&tag, &ok, gpr_time_0(GPR_CLOCK_MONOTONIC));
        if (more == Status::GOT_EVENT) {
          static_cast<Tag*>(tag)->complete(ok, ready);
        } else {
          if (more == Status::SHUTDOWN) {
            open[i] = false;
            --open_count;
          }
          break;
        }
      }
    }
    ready.post_all();
  }
}

Pump::~Pump() { shutdown(); }

void Pump::shutdown() {
  if (shut_) return;
  shut_ = true;
  for (auto& q : queues_) q->Shutdown();
  if (thread_.joinable()) thread_.join();
}

}  // namespace postern::grpc_bridge
