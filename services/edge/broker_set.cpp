#include "edge/broker_set.hpp"

#include <grpcpp/grpcpp.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <algorithm>
#include <boost/asio/steady_timer.hpp>
#include <set>

#include "common/config/yaml_proto.hpp"
#include "common/grpc/channel.hpp"
#include "common/observability/log.hpp"
#include "common/tunnel/lane_io.hpp"

namespace postern::edge {

namespace tv1 = tunnel::v1;
namespace gb = grpc_bridge;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

// A failure asks for the names to be resolved again, at most this often.
constexpr auto kMinResolveGap = 1s;
// One connect attempt to a broker may take this long. Edges and brokers
// share the DMZ, so a connect takes milliseconds; a broker that accepts and
// then says nothing is given up on (and ranked last) after this.
constexpr auto kBrokerConnectTimeout = 2000ms;
// A lane that ended is opened again after this, growing to 1 s while it
// keeps failing.
constexpr auto kLaneRetry = 100ms;

}  // namespace

std::shared_ptr<BrokerSet> BrokerSet::start(asio::any_io_executor ex, const config::v1::RelayClient& cfg,
                                            prometheus::Registry* metrics, std::chrono::seconds file_check_interval) {
  auto self = std::make_shared<BrokerSet>();
  auto& bs = *self;
  bs.ex = ex;
  bs.cfg = cfg;
  if (!cfg.address().empty()) bs.names.push_back(cfg.address());
  for (const auto& a : cfg.addresses()) bs.names.push_back(a);
  if (bs.names.empty()) throw std::runtime_error("broker.address is required (or broker.addresses)");
  for (std::size_t i = 0; i < bs.names.size(); ++i) {
    const auto& n = bs.names[i];
    const auto colon = n.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == n.size()) {
      const std::string field =
          !cfg.address().empty() && i == 0
              ? "broker.address"
              : "broker.addresses[" + std::to_string(i - (cfg.address().empty() ? 0 : 1)) + "]";
      throw std::runtime_error(field + ": expected host:port, got '" + n + "'");
    }
    if (!bs.names_text.empty()) bs.names_text += ", ";
    bs.names_text += n;
  }
  grpc::ChannelArguments unused;
  bs.creds = gb::client_credentials(cfg.has_tls() ? &cfg.tls() : nullptr, "broker", unused, file_check_interval);
  bs.resolve_interval = config::duration_or(cfg.resolve_interval(), 30s);
  bs.lanes_per_broker = cfg.lanes() ? cfg.lanes() : 1;
  bs.lane_options.receive_window = cfg.receive_window() ? cfg.receive_window() : (4u << 20);
  bs.resolved = std::make_unique<Event>(ex);
  bs.resolve_now = std::make_unique<Event>(ex);
  bs.pump = std::make_unique<gb::Pump>(std::make_unique<grpc::CompletionQueue>(), "cq-relay");
  if (metrics) {
    bs.known = &prometheus::BuildGauge()
                    .Name("postern_edge_brokers")
                    .Help("Broker addresses known (every address the broker names resolve to)")
                    .Register(*metrics)
                    .Add({});
    bs.lanes_gauge = &prometheus::BuildGauge()
                          .Name("postern_edge_lanes")
                          .Help("Lanes open to brokers (each carries many exchanges)")
                          .Register(*metrics)
                          .Add({});
    bs.frames_per_message = &prometheus::BuildHistogram()
                                 .Name("postern_edge_lane_frames_per_message")
                                 .Help("Frames in each lane message written: how many exchanges share a gRPC message")
                                 .Register(*metrics)
                                 .Add({}, prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128, 256,
                                                                                 512});
  }
  asio::co_spawn(ex, resolve_loop(self), asio::detached);
  return self;
}


void BrokerSet::stop() {
  stopped = true;
  resolve_now->set();
  for (auto& b : brokers) b->stop();
}

// ------------------------------------------------------------ plans

std::vector<std::shared_ptr<BrokerLink>> BrokerSet::plan() {
  std::vector<std::shared_ptr<BrokerLink>> out;
  const std::size_t n = brokers.size();
  if (n == 0) return out;
  const std::size_t first = cursor++ % n;
  const auto now = Clock::now();
  std::vector<int> rank(n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto& b = *brokers[i];
    rank[i] = b.draining() ? 3 : down(b) ? 2 : !b.usable_lane() || now < b.avoid_until ? 1 : 0;
  }
  out.reserve(n);
  for (int r = 0; r <= 3; ++r) {
    for (std::size_t k = 0; k < n; ++k) {
      const std::size_t i = (first + k) % n;
      if (rank[i] == r) out.push_back(brokers[i]);
    }
  }
  return out;
}

bool BrokerSet::down(const BrokerLink& b) {
  const auto st = b.channel->GetState(false);
  return st == GRPC_CHANNEL_TRANSIENT_FAILURE || st == GRPC_CHANNEL_SHUTDOWN;
}

void BrokerSet::avoid(BrokerLink& b, Clock::duration d) {
  b.avoid_until = Clock::now() + d;
  resolve_now->set();
}

void BrokerSet::throw_unresolved() const {
  throw ExchangeError(tv1::ERROR_CODE_UPSTREAM_UNREACHABLE,
                      "cannot reach the broker at " + names_text + ": " +
                          (resolve_error.empty() ? std::string("no address resolved yet") : resolve_error));
}

// ------------------------------------------------------------ lanes

// One lane slot of a broker: opened, run until it ends, opened again
// (waiting for the broker's channel meanwhile), until the broker is
// forgotten or the client stops.
asio::awaitable<void> BrokerSet::keep_lane(std::shared_ptr<BrokerSet> self, std::shared_ptr<BrokerLink> b) {
  auto& bs = *self;
  asio::steady_timer pause(bs.ex);
  Clock::duration retry = kLaneRetry;
  while (!b->stopped && !bs.stopped) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_wait_for_ready(true);           // a lane waits for its broker
    ctx->set_initial_metadata_corked(true);  // the headers go with the LaneHello
    auto stream = b->stub->PrepareAsyncLane(ctx.get(), bs.pump->cq());
    auto options = bs.lane_options;
    options.on_drain = [w = std::weak_ptr<BrokerLink>(b)] {
      if (auto link = w.lock()) link->lane_changed->set();
    };
    auto endpoint = std::make_shared<tunnel::Endpoint>(
        bs.ex, std::make_unique<tunnel::ClientLaneIo>(std::move(ctx), std::move(stream)), options, nullptr,
        bs.frames_per_message);
    b->lanes.push_back(endpoint);
    // Wake whoever waits for a lane of this broker when it comes up.
    asio::co_spawn(
        bs.ex,
        [endpoint, b]() -> asio::awaitable<void> {
          co_await endpoint->lane().changed().wait();
          if (endpoint->lane().up() && !endpoint->draining()) b->drained = false;  // back
          b->lane_changed->set();
        },
        asio::detached);
    tv1::LaneMessage hello;
    hello.mutable_hello()->set_peer("edge");
    const auto opened = Clock::now();
    if (bs.lanes_gauge) bs.lanes_gauge->Increment();
    co_await endpoint->run(std::move(hello));
    if (endpoint->draining()) b->drained = true;
    if (bs.lanes_gauge) bs.lanes_gauge->Decrement();
    std::erase(b->lanes, endpoint);
    b->lane_changed->set();
    if (b->stopped || bs.stopped) break;
    retry = Clock::now() - opened > 2s ? kLaneRetry : std::min<Clock::duration>(retry * 2, 1s);
    pause.expires_after(retry);
    co_await pause.async_wait(use_nothrow);
  }
}

asio::awaitable<std::shared_ptr<tunnel::Endpoint>> BrokerSet::lane_of(BrokerLink& b, bool wait) {
  auto lane = b.usable_lane();
  // A broker refusing now is not waited for; one that drained and went
  // may be restarting: it is.
  if (lane || !wait || b.draining_now()) co_return lane;
  const auto until = Clock::now() + kWaitForBroker;
  while (!lane && Clock::now() < until && !b.stopped) {
    b.lane_changed->reset();
    co_await b.lane_changed->wait_for(until - Clock::now());
    lane = b.usable_lane();
    if (!lane && b.draining_now()) break;  // it began to drain meanwhile: try another
  }
  co_return lane;
}

// ------------------------------------------------------------ resolution

namespace {

std::string address_of(const asio::ip::tcp::endpoint& ep) {
  const std::string a = ep.address().to_string(), port = std::to_string(ep.port());
  return ep.address().is_v6() ? "[" + a + "]:" + port : a + ":" + port;
}

}  // namespace

std::shared_ptr<BrokerLink> BrokerSet::make_link(const std::string& name, const std::string& host,
                                      const asio::ip::tcp::endpoint& ep, const std::string& target) {
  auto l = std::make_shared<BrokerLink>();
  l->name = name;
  const std::string addr = address_of(ep);
  l->target = target;
  l->shown = addr == name ? name : name + " (" + addr + ")";
  grpc::ChannelArguments args = gb::client_channel_args(kBrokerConnectTimeout);
  gb::apply_dmz_link_args(args);
  // The channel dials an address; the certificate names the host.
  if (cfg.has_tls()) args.SetSslTargetNameOverride(cfg.tls().server_name().empty() ? host : cfg.tls().server_name());
  l->channel = grpc::CreateCustomChannel(l->target, creds, args);
  l->stub = tv1::Relay::NewStub(l->channel);
  l->lane_changed = std::make_unique<Event>(ex);
  return l;
}

asio::awaitable<void> BrokerSet::resolve_once(std::shared_ptr<BrokerSet> self, asio::ip::tcp::resolver& resolver) {
  std::vector<std::shared_ptr<BrokerLink>> next;
  std::set<std::string> seen;
  std::string error;
  for (const auto& name : names) {
    const auto colon = name.rfind(':');
    std::string host = name.substr(0, colon), port = name.substr(colon + 1);
    if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
    auto [ec, results] = co_await resolver.async_resolve(host, port, use_nothrow);
    if (stopped) co_return;
    if (ec) {
      POSTERN_LOG(warn, "cannot resolve broker").kv("broker", name).kv("error", ec.message());
      error = "cannot resolve " + name + ": " + ec.message();
      // DNS failing is no news about the brokers: keep what this name had.
      for (const auto& b : brokers) {
        if (b->name == name && seen.insert(b->target).second) next.push_back(b);
      }
      continue;
    }
    for (const auto& r : results) {
      const std::string target = (r.endpoint().address().is_v6() ? "ipv6:" : "ipv4:") + address_of(r.endpoint());
      if (!seen.insert(target).second) continue;
      auto known_link = std::find_if(brokers.begin(), brokers.end(), [&](const auto& b) { return b->target == target; });
      if (known_link != brokers.end()) {
        next.push_back(*known_link);  // the same channel and lanes
        continue;
      }
      auto l = make_link(name, host, r.endpoint(), target);
      POSTERN_LOG(info, "broker address added").kv("broker", l->shown).kv("target", l->target);
      for (std::size_t i = 0; i < lanes_per_broker; ++i) asio::co_spawn(ex, keep_lane(self, l), asio::detached);
      next.push_back(std::move(l));
    }
  }
  resolve_error = error;
  if (next.empty()) co_return;  // never forget every broker at once
  for (const auto& b : brokers) {
    if (!seen.contains(b->target)) {
      POSTERN_LOG(info, "broker address gone").kv("broker", b->shown);
      b->stop();
    }
  }
  brokers = std::move(next);
  if (known) known->Set(static_cast<double>(brokers.size()));
  resolved->set();
}

asio::awaitable<void> BrokerSet::resolve_loop(std::shared_ptr<BrokerSet> self) {
  auto& bs = *self;
  asio::ip::tcp::resolver resolver(bs.ex);
  while (!bs.stopped) {
    co_await bs.resolve_once(self, resolver);
    if (bs.stopped) break;
    const auto resolved_at = Clock::now();
    bs.resolve_now->reset();
    const auto wait = bs.brokers.empty() ? Clock::duration(kMinResolveGap) : bs.resolve_interval;
    co_await bs.resolve_now->wait_for(wait);
    if (bs.stopped) break;
    const auto since = Clock::now() - resolved_at;
    if (since < kMinResolveGap) {
      asio::steady_timer gap(bs.ex, kMinResolveGap - since);
      co_await gap.async_wait(use_nothrow);
    }
  }
}

}  // namespace postern::edge
