// libFuzzer target: the broker's exchange router fed lane frames from both
// sides in any order.
//
// The broker's ExchangeRouter runs in this process between an edge lane and
// a connector lane (in-memory LaneIo, as its unit tests use), each side
// played by hand. Each input is a script of records
// [kind][length: 2 bytes][payload]:
//   kind % 3 == 0  a LaneMessage from the edge
//   kind % 3 == 1  a LaneMessage from the connector
//   kind % 3 == 2  the broker runs what is ready
// A payload that does not parse as a LaneMessage is taken as one Frame, and
// one that does not parse as that either as a body piece of exchange 1.
// Whatever came before, a fresh exchange must still cross both lanes and
// back, and once both lanes end nothing may be left in flight; a hang, a
// crash, a leak or a sanitizer report is a finding.
#include <prometheus/registry.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "broker/exchange_router.hpp"
#include "common/observability/log.hpp"
#include "common/service_main.hpp"
#include "support/memory_lane.hpp"

namespace {

namespace tv1 = postern::tunnel::v1;
using namespace std::chrono_literals;
using postern::testing::MemoryLaneIo;

// Ids the script may use on the edge lane: the final check's is above them.
constexpr std::uint64_t kScriptIds = (std::uint64_t{1} << 62) - 1;
constexpr std::uint64_t kCheckId = std::uint64_t{1} << 62;

struct Record {
  int kind;
  std::string payload;
};

std::vector<Record> parse_script(const std::uint8_t* data, std::size_t size) {
  std::vector<Record> out;
  std::size_t i = 0;
  while (i + 3 <= size && out.size() < 128) {
    const int kind = data[i] % 3;
    const std::size_t len = std::min<std::size_t>(data[i + 1] | (data[i + 2] << 8), size - i - 3);
    out.push_back({kind, std::string(reinterpret_cast<const char*>(data) + i + 3, len)});
    i += 3 + len;
  }
  return out;
}

tv1::LaneMessage as_message(const std::string& payload) {
  tv1::LaneMessage m;
  if (m.ParseFromString(payload)) return m;
  m.Clear();
  tv1::Frame f;
  if (!f.ParseFromString(payload)) {
    f.Clear();
    f.set_exchange(1);
    f.set_body(payload);
  }
  *m.add_frames() = std::move(f);
  return m;
}

void run_ready(boost::asio::io_context& io) {
  for (int i = 0; i < 10000 && io.poll() > 0; ++i) {
  }
  io.restart();
}

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "lane_frames: %s\n", what);
  __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  postern::init_logging("broker", "error", "");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace broker = postern::broker;
  boost::asio::io_context io;
  broker::Registry registry;
  broker::ExchangeRouter router(io.get_executor(), registry, broker::ExchangeRouter::Options{.park_wait = 50ms},
                                broker::RouterMetrics{});
  auto [edge_io, edge_far] = postern::testing::memory_lane_pair(io.get_executor());
  auto [conn_io, conn_far] = postern::testing::memory_lane_pair(io.get_executor());
  MemoryLaneIo* edge = edge_io.get();
  MemoryLaneIo* connector = conn_io.get();
  auto session = registry.add("fuzz-connector", "spiffe://fuzz", {"fuzz"});
  auto edge_lane = std::make_unique<broker::BrokerLane>(router, broker::BrokerLane::Side::edge, std::move(edge_far),
                                                        "fuzz-edge");
  auto conn_lane = std::make_unique<broker::BrokerLane>(router, broker::BrokerLane::Side::connector,
                                                        std::move(conn_far), "fuzz-connector", session);
  registry.add_lane(session, conn_lane.get());
  int ended = 0;
  boost::asio::co_spawn(io, edge_lane->run(), [&](std::exception_ptr) { ++ended; });
  boost::asio::co_spawn(io, conn_lane->run(), [&](std::exception_ptr) { ++ended; });

  tv1::LaneMessage hello;
  hello.mutable_hello()->set_peer("fuzz");
  edge->send_now(hello);
  connector->send_now(hello);
  for (const auto& r : parse_script(data, size)) {
    if (r.kind == 2) {
      run_ready(io);
      continue;
    }
    auto m = as_message(r.payload);
    if (r.kind == 0) {
      for (auto& f : *m.mutable_frames()) f.set_exchange(f.exchange() & kScriptIds);
      edge->send_now(m);
    } else {
      connector->send_now(m);
    }
  }
  run_ready(io);

  // A fresh exchange still crosses: head and end from the edge, the
  // connector answers 204.
  tv1::LaneMessage open;
  auto* head = open.add_frames();
  head->set_exchange(kCheckId);
  head->mutable_request_head()->set_alias("fuzz");
  head->mutable_request_head()->set_method("GET");
  head->mutable_request_head()->set_target("/check");
  open.add_frames()->set_exchange(kCheckId);
  open.mutable_frames(1)->mutable_end();
  edge->send_now(open);
  run_ready(io);
  std::uint64_t at_connector = 0;
  tv1::LaneMessage in;
  while (at_connector == 0 && connector->try_read(in)) {
    for (const auto& f : in.frames()) {
      if (f.has_request_head() && f.request_head().target() == "/check") at_connector = f.exchange();
    }
  }
  if (at_connector == 0) finding("a fresh exchange never reached the connector");
  tv1::LaneMessage answer;
  auto* rh = answer.add_frames();
  rh->set_exchange(at_connector);
  rh->mutable_response_head()->set_status(204);
  answer.add_frames()->set_exchange(at_connector);
  answer.mutable_frames(1)->mutable_end();
  connector->send_now(answer);
  run_ready(io);
  bool answered = false;
  while (!answered && edge->try_read(in)) {
    for (const auto& f : in.frames()) {
      if (f.exchange() == kCheckId && f.has_end()) answered = true;
    }
  }
  if (!answered) finding("a fresh exchange was never answered");

  // Both lanes end: every exchange ends with them.
  edge_lane->lane().abort();
  conn_lane->lane().abort();
  run_ready(io);
  io.run_for(std::chrono::milliseconds(1));  // waits on timers (park_wait) end as the lanes go
  run_ready(io);
  if (ended != 2) finding("a lane did not end");
  if (router.in_flight() != 0) finding("exchanges left in flight after both lanes ended");
  registry.remove_lane(session, conn_lane.get());
  return 0;
}
