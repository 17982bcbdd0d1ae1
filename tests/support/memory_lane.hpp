#pragma once
// Two in-memory LaneIo joined as a gRPC stream would join them: what one
// side writes the other reads, in order. For unit tests of lanes, endpoints
// and the broker's router, on one io_context.

#include <memory>
#include <utility>
#include <vector>

#include "common/tunnel/lane.hpp"

namespace postern::testing {

class MemoryLaneIo final : public tunnel::LaneIo {
 public:
  struct Shared;
  MemoryLaneIo(std::shared_ptr<Shared> shared, int side) : shared_(std::move(shared)), side_(side) {}
  asio::awaitable<bool> read(tunnel::v1::LaneMessage& m) override;
  asio::awaitable<bool> write(const tunnel::v1::LaneMessage& m) override;
  void cancel() override;
  asio::awaitable<void> close_writes() override;

  /// Writes from this side wait until release_writes(): a write in flight.
  void hold_writes();
  void release_writes();
  /// Without a coroutine, for a test that plays this side by hand: the
  /// next message for this side (false: none yet), and a message sent.
  bool try_read(tunnel::v1::LaneMessage& m);
  void send_now(const tunnel::v1::LaneMessage& m);
  /// Frames in each message this side wrote, in order.
  const std::vector<int>& written() const;

 private:
  std::shared_ptr<Shared> shared_;
  int side_;
};

/// A joined pair; keep raw pointers to them before handing them to lanes.
std::pair<std::unique_ptr<MemoryLaneIo>, std::unique_ptr<MemoryLaneIo>> memory_lane_pair(asio::any_io_executor ex);

}  // namespace postern::testing
