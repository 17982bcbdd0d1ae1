#include "common/net/ws_relay.hpp"

#include <optional>

#include "common/event.hpp"
#include "common/observability/log.hpp"

namespace postern::net {

std::uint16_t forwardable_close_code(std::uint16_t code) {
  // RFC 6455 7.4: 1000-1003, 1007-1014 are defined for the wire; 3000-4999
  // are for libraries and applications. 1004-1006 and 1015 are reserved.
  if ((code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999)) return code;
  return 1011;
}

std::string close_reason(std::string_view reason) {
  if (reason.size() <= 123) return std::string(reason);
  std::size_t n = 123;
  // Back off continuation bytes so a multi-byte character is not split.
  while (n > 0 && (static_cast<unsigned char>(reason[n]) & 0xC0) == 0x80) --n;
  return std::string(reason.substr(0, n));
}

struct WsRelay::State {
  asio::any_io_executor ex;
  WsPort* port[2];  // 0: client, 1: server
  std::unique_ptr<AsyncMutex> write_lock[2];
  WsHooks* hooks;
  WsRelayOptions options;
  WsRelayStats stats;
  bool closing = false;
  bool stopper_running = false;
  std::unique_ptr<Event> done[3];  // two pumps and the stopper
  std::optional<Deadline> idle, lifetime, close_limit;

  State(asio::any_io_executor e, WsPort& c, WsPort& s, WsHooks* h, WsRelayOptions o)
      : ex(e), port{&c, &s}, hooks(h), options(o) {
    for (auto& l : write_lock) l = std::make_unique<AsyncMutex>(ex);
    for (auto& d : done) d = std::make_unique<Event>(ex);
    done[2]->set();
  }

  asio::awaitable<bool> send(int side, const WsMessage& m) {
    co_await write_lock[side]->lock();
    bool ok = false;
    try {
      ok = co_await port[side]->write(m);
    } catch (...) {
      write_lock[side]->unlock();
      throw;
    }
    write_lock[side]->unlock();
    co_return ok;
  }

  // Once one side has closed, the other gets close_timeout to answer.
  void start_closing(std::string_view by) {
    if (closing) return;
    closing = true;
    stats.closed_by = std::string(by);
    idle.reset();
    lifetime.reset();
    close_limit.emplace(ex, options.close_timeout, [this] {
      port[0]->abort();
      port[1]->abort();
    });
  }

  void stop(std::uint16_t code, std::string reason, const std::shared_ptr<State>& self) {
    if (closing) return;
    stats.gateway_close_code = code;
    stats.gateway_close_reason = reason;
    start_closing("gateway");
    done[2]->reset();
    asio::co_spawn(
        ex,
        [self, code, reason]() -> asio::awaitable<void> {
          const auto m = WsMessage::close(code, close_reason(reason));
          co_await self->send(0, m);
          co_await self->send(1, m);
        },
        [self](std::exception_ptr) { self->done[2]->set(); });
  }

  asio::awaitable<void> pump(int from, std::shared_ptr<State> self) {
    const int to = 1 - from;
    const auto dir = from == 0 ? WsDirection::client_to_server : WsDirection::server_to_client;
    for (;;) {
      WsMessage m;
      co_await port[from]->read(m);
      if (m.is_close()) {
        if (from == 0) {
          stats.client_close_code = m.code;
          stats.client_close_reason = m.data;
        } else {
          stats.server_close_code = m.code;
          stats.server_close_reason = m.data;
        }
        start_closing(from == 0 ? "client" : "server");
        const auto out = WsMessage::close(forwardable_close_code(m.code), close_reason(m.data));
        co_await send(to, out);
        co_return;
      }
      if (idle) idle->rearm(options.idle_timeout);
      const auto i = static_cast<int>(dir);
      stats.messages[i]++;
      stats.bytes[i] += m.data.size();
      if (closing) continue;  // the session is ending: nothing more goes on
      bool keep = true;
      if (hooks) {
        std::optional<WsStop> halt;
        try {
          keep = co_await hooks->on_message(dir, m);
        } catch (const WsStop& s) {
          halt = s;
        }
        if (halt) {
          stop(halt->code, halt->reason, self);
          continue;
        }
      }
      if (!keep) continue;
      const bool sent = co_await send(to, m);
      if (sent && options.on_sent) options.on_sent(dir, m.data.size());
    }
  }
};

WsRelay::WsRelay(asio::any_io_executor ex, WsPort& client, WsPort& server, WsHooks* hooks, WsRelayOptions options)
    : state_(std::make_shared<State>(ex, client, server, hooks, options)), stats_(state_->stats) {}

WsRelay::~WsRelay() {
  state_->idle.reset();
  state_->lifetime.reset();
  state_->close_limit.reset();
}

asio::awaitable<void> WsRelay::run() {
  auto s = state_;
  if (s->options.idle_timeout.count() > 0) {
    s->idle.emplace(s->ex, s->options.idle_timeout, [w = std::weak_ptr<State>(s)] {
      if (auto p = w.lock()) p->stop(1001, "idle timeout", p);
    });
  }
  if (s->options.max_lifetime.count() > 0) {
    s->lifetime.emplace(s->ex, s->options.max_lifetime, [w = std::weak_ptr<State>(s)] {
      if (auto p = w.lock()) p->stop(1001, "maximum session lifetime reached", p);
    });
  }
  for (int side = 0; side < 2; ++side) {
    asio::co_spawn(s->ex, s->pump(side, s), [s, side](std::exception_ptr e) {
      if (e) {
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          POSTERN_LOG(error, "websocket relay failed")
              .kv("request_id", s->hooks ? s->hooks->request_id() : std::string_view())
              .kv("trace_id", s->hooks ? s->hooks->trace_id() : std::string_view())
              .kv("error", ex.what());
        }
        s->port[0]->abort();
        s->port[1]->abort();
      }
      s->done[side]->set();
    });
  }
  co_await s->done[0]->wait();
  co_await s->done[1]->wait();
  co_await s->done[2]->wait();
  s->close_limit.reset();
}

void WsRelay::stop(std::uint16_t code, std::string reason) { state_->stop(code, std::move(reason), state_); }

asio::awaitable<void> WsSessions::run(WsRelay& relay) {
  const auto id = next_++;
  open_[id] = &relay;
  if (stopping_) relay.stop(stopping_->first, stopping_->second);
  co_await relay.run();
  open_.erase(id);
}

void WsSessions::stop_all(std::uint16_t code, std::string reason) {
  stopping_.emplace(code, std::move(reason));
  for (auto& [_, relay] : open_) relay->stop(code, stopping_->second);
}

}  // namespace postern::net
