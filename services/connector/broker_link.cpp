#include "connector/broker_link.hpp"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <boost/asio/steady_timer.hpp>

#include "common/grpc/bridge.hpp"
#include "common/grpc/channel.hpp"
#include "common/observability/log.hpp"
#include "common/service_main.hpp"
#include "common/tunnel/lane_io.hpp"
#include "postern/tunnel/v1/tunnel.grpc.pb.h"

namespace postern::connector {

namespace tv1 = tunnel::v1;
namespace gb = grpc_bridge;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using AttachStream = grpc::ClientAsyncReaderWriter<tv1::ConnectorMessage, tv1::BrokerMessage>;

struct BrokerLink::Stub {
  std::unique_ptr<tv1::Registration::Stub> stub;
};

BrokerLink::BrokerLink(asio::any_io_executor ex, std::string name, const std::string& host, std::string target,
                       std::shared_ptr<grpc::ChannelCredentials> creds, grpc::CompletionQueue* cq,
                       Settings settings, Hooks hooks, Metrics& metrics)
    : ex_(ex), name_(std::move(name)), host_(host), target_(std::move(target)), creds_(std::move(creds)),
      stub_(std::make_unique<Stub>()), cq_(cq), settings_(std::move(settings)), hooks_(std::move(hooks)),
      metrics_(metrics), wake_(ex), stopped_(ex), lanes_gone_(ex) {
  new_channel();
}

void BrokerLink::new_channel() {
  grpc::ChannelArguments args = gb::client_channel_args(settings_.connect_timeout);
  args.SetSslTargetNameOverride(settings_.server_name.empty() ? host_ : settings_.server_name);
  // One subchannel per link: two links to one address must not share it.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  channel_ = grpc::CreateCustomChannel(target_, creds_, args);
  stub_->stub = tv1::Registration::NewStub(channel_);
}

BrokerLink::~BrokerLink() = default;

void BrokerLink::start() { asio::co_spawn(ex_, run(), asio::detached); }

void BrokerLink::stop() {
  stopping_ = true;
  if (cancel_attach_) cancel_attach_();
  for (auto& l : lanes_) l->lane().abort();
  wake_.set();
}

void BrokerLink::request_drain() {
  drain_requested_ = true;
  wake_.set();
}

void BrokerLink::close_lanes() {
  lanes_closing_ = true;
  for (auto& l : lanes_) l->lane().close();
}

std::size_t BrokerLink::lanes_up() const {
  return lanes_.size();
}

bool BrokerLink::lanes_drained() const {
  return std::all_of(lanes_.begin(), lanes_.end(), [](const auto& l) { return l->over() || l->draining(); });
}

asio::awaitable<void> BrokerLink::run() {
  Clock::duration backoff = 100ms;
  asio::steady_timer timer(ex_);
  bool first = true, redialled = false;
  while (!stopping_ && !hooks_.draining()) {
    // A redial (looking for another broker behind a load balancer) is not
    // a reconnect.
    if (!first && !redialled) metrics_.reconnects.Increment();
    first = false;
    redialled = false;
    const bool welcomed = co_await attach_once();
    failed_attaches_ = welcomed ? 0 : failed_attaches_ + 1;
    if (stopping_ || hooks_.draining()) break;
    std::uniform_real_distribution<double> jitter(0.5, 1.5);
    if (redial_) {
      // The broker reached is held by another link: a new connection, so
      // that a load balancer may pick another one.
      // stop() ends the wait (it sets wake_).
      redial_ = false;
      new_channel();
      redial_backoff_ = std::clamp<Clock::duration>(redial_backoff_ * 2, 100ms, 5s);
      wake_.reset();
      if (stopping_) break;
      co_await wake_.wait_for(std::chrono::duration_cast<Clock::duration>(redial_backoff_ * jitter(rng_)));
      redialled = true;
      continue;
    }
    if (welcomed) backoff = 100ms;
    if (hooks_.lost) hooks_.lost();
    auto wait = std::chrono::duration_cast<Clock::duration>(backoff * jitter(rng_));
    if (wait > settings_.reconnect_max) wait = settings_.reconnect_max;
    co_await wait_before_attach(timer, wait);
    backoff = std::min<Clock::duration>(backoff * 2, settings_.reconnect_max);
  }
  // The lanes were aborted (stop(), or the session's end); their
  // coroutines resume once gRPC has finished them.
  while (lanes_running_ > 0) {
    lanes_gone_.reset();
    co_await lanes_gone_.wait();
  }
  stopped_.set();
}

// Waits `wait` before the next attach. When the broker could not be
// reached, the wait also ends as soon as the channel connects, so a
// restarted broker is attached to when gRPC reaches it (its reconnect
// backoff is capped at 1 s), not that plus this backoff. A broker that was
// reached and refused gets the whole wait.
asio::awaitable<void> BrokerLink::wait_before_attach(asio::steady_timer& timer, Clock::duration wait) {
  auto state = channel_->GetState(/*try_to_connect=*/true);
  if (state == GRPC_CHANNEL_READY) {
    timer.expires_after(wait);
    co_await timer.async_wait(use_nothrow);
    co_return;
  }
  const auto until = std::chrono::system_clock::now() + wait;
  while (state != GRPC_CHANNEL_READY && !stopping_ && !hooks_.draining()) {
    const bool changed = co_await gb::op([&](void* tag) { channel_->NotifyOnStateChange(state, until, cq_, tag); });
    if (!changed) break;  // the wait is over
    state = channel_->GetState(/*try_to_connect=*/true);
  }
}

// One Attach session, start to end. Returns true if the broker welcomed it.
asio::awaitable<bool> BrokerLink::attach_once() {
  grpc::ClientContext ctx;
  cancel_attach_ = [&ctx] { ctx.TryCancel(); };
  std::unique_ptr<AttachStream> stream = stub_->stub->PrepareAsyncAttach(&ctx, cq_);
  bool ok = co_await gb::op([&](void* tag) { stream->StartCall(tag); });
  tv1::BrokerMessage msg;
  if (ok) {
    tv1::ConnectorMessage hello;
    auto* h = hello.mutable_hello();
    h->set_connector_id(settings_.connector_id);
    for (const auto& a : settings_.aliases) h->add_aliases(a);
    h->set_capacity(settings_.capacity);
    h->set_version("postern-connector/" + std::string(version()));
    h->set_lanes(settings_.lanes);
    ok = co_await gb::write(*stream, hello);
  }
  if (ok) {
    Deadline d(ex_, 10s, [&ctx] { ctx.TryCancel(); });
    ok = co_await gb::read(*stream, msg);
  }
  if (!ok || !msg.has_welcome()) {
    grpc::Status st;
    co_await gb::op([&](void* tag) { stream->Finish(&st, tag); });
    cancel_attach_ = nullptr;
    if (st.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
      metrics_.refusals.Increment();
      POSTERN_LOG(error, "registration refused by broker")
          .kv("broker", name_)
          .kv("target", target_)
          .kv("error", st.error_message());
    } else if (!stopping_) {
      POSTERN_LOG(warn, "attach failed")
          .kv("broker", name_)
          .kv("target", target_)
          .kv("code", static_cast<int>(st.error_code()))
          .kv("error", st.error_message());
    }
    co_return false;
  }

  const auto& w = msg.welcome();
  if (hooks_.welcomed && !hooks_.welcomed(*this, w.broker_instance(), w.broker_count())) {
    POSTERN_LOG(debug, stopping_ ? "broker already held by another link; this one is not needed"
                                 : "broker already held by another link; dialling again")
        .kv("broker", name_)
        .kv("target", target_)
        .kv("broker_id", w.broker_id())
        .kv("broker_instance", w.broker_instance());
    redial_ = true;
    ctx.TryCancel();
    grpc::Status st;
    co_await gb::op([&](void* tag) { stream->Finish(&st, tag); });
    cancel_attach_ = nullptr;
    co_return false;
  }
  redial_backoff_ = {};
  session_id_ = w.session_id();
  instance_ = w.broker_instance();
  const std::string label = w.session_label();
  attached_ = true;
  drain_requested_ = false;
  const auto hb_interval = std::chrono::milliseconds(w.heartbeat_interval_ms() ? w.heartbeat_interval_ms() : 5000);
  const auto hb_timeout = std::chrono::milliseconds(w.heartbeat_timeout_ms() ? w.heartbeat_timeout_ms() : 15000);
  if (hooks_.attached_changed) hooks_.attached_changed();
  POSTERN_LOG(info, "attached")
      .kv("broker", name_)
      .kv("target", target_)
      .kv("broker_id", w.broker_id())
      .kv("broker_instance", instance_)
      .kv("session", label);
  if (hooks_.draining()) request_drain();
  for (std::uint32_t i = 0; i < std::max<std::uint32_t>(1, settings_.lanes); ++i) {
    ++lanes_running_;
    asio::co_spawn(ex_, run_lane(session_id_, label), asio::detached);
  }

  // Writer: heartbeats, the signed config when it changes, the drain
  // request when asked.
  Event writer_done(ex_);
  wake_.reset();
  asio::co_spawn(
      ex_,
      [&]() -> asio::awaitable<void> {
        std::uint64_t seq = 0;
        bool drain_sent = false;
        std::shared_ptr<const policy::v1::SignedSnapshot> config_sent;
        while (attached_ && !stopping_) {
          const auto config = hooks_.config();
          const bool due = (config && config != config_sent) || (drain_requested_ && !drain_sent);
          if (!due) {
            co_await wake_.wait_for(hb_interval);
            wake_.reset();
          }
          if (!attached_ || stopping_) break;
          tv1::ConnectorMessage m;
          if (drain_requested_ && !drain_sent) {
            m.mutable_drain()->set_reason("connector shutting down");
            drain_sent = true;
          } else if (const auto now = hooks_.config(); now && now != config_sent) {
            *m.mutable_config() = *now;
            config_sent = now;
          } else {
            m.mutable_heartbeat()->set_seq(++seq);
          }
          const bool sent = co_await gb::write(*stream, m);
          if (!sent) break;
        }
      },
      [&](std::exception_ptr) { writer_done.set(); });

  // Reader: a broker silent past the timeout is gone.
  {
    Deadline silence(ex_, hb_timeout, [&ctx, this] {
      POSTERN_LOG(warn, "broker silent, reconnecting").kv("broker", name_).kv("target", target_);
      ctx.TryCancel();
    });
    for (;;) {
      tv1::BrokerMessage m;
      const bool got = co_await gb::read(*stream, m);
      if (!got) break;
      silence.rearm(hb_timeout);
    }
  }
  attached_ = false;
  session_id_.clear();
  instance_.clear();
  if (hooks_.attached_changed) hooks_.attached_changed();
  // Its lanes end with the session: their exchanges are cut.
  for (auto& l : lanes_) l->lane().abort();
  ctx.TryCancel();
  wake_.set();
  co_await writer_done.wait();
  grpc::Status st;
  co_await gb::op([&](void* tag) { stream->Finish(&st, tag); });
  cancel_attach_ = nullptr;
  if (!stopping_ && !hooks_.draining()) {
    POSTERN_LOG(warn, "detached").kv("broker", name_).kv("target", target_).kv("error", st.error_message());
  }
  co_return true;
}

// One lane of the session, opened again (after a moment) if it ends while
// the session lives on.
asio::awaitable<void> BrokerLink::run_lane(std::string session_id, std::string session_label) {
  // Counted from its spawn (attach_once), so that no lane coroutine can
  // start after the link was let go.
  struct Ended {
    BrokerLink& link;
    ~Ended() {
      if (--link.lanes_running_ == 0) link.lanes_gone_.set();
    }
  } ended{*this};
  asio::steady_timer pause(ex_);
  while (attached_ && session_id_ == session_id && !stopping_ && !lanes_closing_) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_initial_metadata_corked(true);  // the headers go with the LaneHello
    auto stream = stub_->stub->PrepareAsyncLane(ctx.get(), cq_);
    auto endpoint = std::make_shared<tunnel::Endpoint>(
        ex_, std::make_unique<tunnel::ClientLaneIo>(std::move(ctx), std::move(stream)), settings_.lane_options,
        hooks_.serve, &metrics_.frames_per_message);
    lanes_.push_back(endpoint);
    metrics_.lanes.Increment();
    tv1::LaneMessage hello;
    hello.mutable_hello()->set_session_id(session_id);
    hello.mutable_hello()->set_peer(settings_.connector_id);
    co_await endpoint->run(std::move(hello));
    metrics_.lanes.Decrement();
    std::erase(lanes_, endpoint);
    if (!attached_ || session_id_ != session_id || stopping_ || lanes_closing_) break;
    POSTERN_LOG(warn, "lane ended, opening it again").kv("broker", name_).kv("session", session_label);
    pause.expires_after(100ms);
    co_await pause.async_wait(use_nothrow);
  }
}

}  // namespace postern::connector
