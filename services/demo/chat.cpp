#include "demo/chat.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include <ctime>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "common/asio.hpp"
#include "common/event.hpp"
#include "common/observability/log.hpp"
#include "demo/target.hpp"

namespace postern::demo {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using namespace std::chrono_literals;

// GCC 12: every co_await stands in a statement of its own (see demo_server.cpp).

constexpr std::size_t kMaxQueued = 4096;          // a slower client is dropped
constexpr std::size_t kMaxMessage = 64u << 20;    // demo limit per message
constexpr std::uint64_t kMaxFloodMessages = 1'000'000;

struct Msg {
  bool binary = false;
  std::shared_ptr<const std::string> data;
};

// One connected client, owned by its session; the hub holds weak references.
struct Client {
  explicit Client(asio::any_io_executor e, std::string r, std::string u)
      : ex(e), room(std::move(r)), user(std::move(u)), wake(e, asio::steady_timer::time_point::max()) {}
  asio::any_io_executor ex;  // the connection's strand
  std::string room, user;
  std::deque<Msg> queue;     // touched on ex only
  asio::steady_timer wake;
  bool closed = false;
  std::optional<std::pair<std::uint16_t, std::string>> close_request;
  // "/flood N SIZE": N binary messages of SIZE bytes still to send, as fast
  // as the connection takes them.
  std::uint64_t flood_left = 0;
  std::shared_ptr<const std::string> flood_message;

  void push(Msg m) {
    if (closed) return;
    if (queue.size() >= kMaxQueued) {
      close_request = {1008, "too slow: message queue full"};
    } else {
      queue.push_back(std::move(m));
    }
    wake.cancel();
  }
};

std::string utc_now() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

class Hub {
 public:
  static Hub& get() {
    static Hub hub;
    return hub;
  }

  void join(const std::shared_ptr<Client>& c) {
    std::lock_guard lock(mu_);
    rooms_.emplace(c->room, c);
    if (!ticking_ && c->room.find("broadcast") != std::string::npos) {
      ticking_ = true;
      asio::co_spawn(c->ex, tick(c->ex), asio::detached);
    }
  }

  void leave(const Client* c) {
    std::lock_guard lock(mu_);
    auto [b, e] = rooms_.equal_range(c->room);
    for (auto it = b; it != e;) {
      auto sp = it->second.lock();
      if (!sp || sp.get() == c) {
        it = rooms_.erase(it);
      } else {
        ++it;
      }
    }
  }

  void broadcast(const std::string& room, Msg m) {
    std::lock_guard lock(mu_);
    auto [b, e] = rooms_.equal_range(room);
    for (auto it = b; it != e; ++it) {
      if (auto c = it->second.lock()) asio::post(c->ex, [c, m] { c->push(m); });
    }
  }

 private:
  // "Server time" each second to every room whose path contains "broadcast".
  asio::awaitable<void> tick(asio::any_io_executor ex) {
    asio::steady_timer t(ex);
    for (;;) {
      t.expires_after(1s);
      co_await t.async_wait(use_nothrow);
      Msg m;
      m.data = std::make_shared<const std::string>("Server time: " + utc_now());
      std::vector<std::string> rooms;
      {
        std::lock_guard lock(mu_);
        for (auto it = rooms_.begin(); it != rooms_.end(); it = rooms_.upper_bound(it->first)) {
          if (it->first.find("broadcast") != std::string::npos) rooms.push_back(it->first);
        }
      }
      for (const auto& r : rooms) broadcast(r, m);
    }
  }

  std::mutex mu_;
  std::multimap<std::string, std::weak_ptr<Client>> rooms_;
  bool ticking_ = false;
};

// Of the offered subprotocols, the demo's own preference wins.
std::string pick_subprotocol(std::string_view offered) {
  for (std::string_view want : {"chat.v2", "chat.v1"}) {
    std::size_t pos = 0;
    while (pos <= offered.size()) {
      auto comma = offered.find(',', pos);
      if (comma == std::string_view::npos) comma = offered.size();
      auto item = offered.substr(pos, comma - pos);
      while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
      while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
      if (item == want) return std::string(want);
      pos = comma + 1;
    }
  }
  return {};
}

template <class Stream>
asio::awaitable<void> writer(websocket::stream<Stream>& ws, Client& c, Event& done) {
  for (;;) {
    if (c.queue.empty() && !c.close_request && !c.closed && c.flood_left == 0) {
      c.wake.expires_at(asio::steady_timer::time_point::max());
      co_await c.wake.async_wait(use_nothrow);
      continue;
    }
    if (c.closed) break;
    if (c.close_request) {
      websocket::close_reason cr;
      cr.code = c.close_request->first;
      cr.reason = c.close_request->second.substr(0, 123).c_str();
      auto [ec] = co_await ws.async_close(cr, use_nothrow);
      (void)ec;
      break;
    }
    Msg m;
    if (c.queue.empty()) {
      --c.flood_left;
      m.data = c.flood_message;
      m.binary = true;
    } else {
      m = std::move(c.queue.front());
      c.queue.pop_front();
    }
    ws.binary(m.binary);
    auto [ec, n] = co_await ws.async_write(asio::buffer(*m.data), use_nothrow);
    if (ec) break;
  }
  done.set();
}

template <class Stream>
asio::awaitable<void> chat(Stream& stream, const http::request<http::buffer_body>& req) {
  websocket::stream<Stream> ws(std::move(stream));
  beast::get_lowest_layer(ws).expires_never();
  ws.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
  ws.read_message_max(kMaxMessage);
  const auto target = Target::parse(std::string_view(req.target().data(), req.target().size()));
  std::string path = target ? target->path() : "/";
  // "/x/" and "/x" are one room.
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  std::string user = "anonymous";
  if (target) {
    if (auto u = target->param("user"); u && !u->empty()) user = std::string(*u);
  }
  const std::string proto = pick_subprotocol(req[http::field::sec_websocket_protocol]);
  ws.set_option(websocket::stream_base::decorator([proto](websocket::response_type& res) {
    if (!proto.empty()) res.set(http::field::sec_websocket_protocol, proto);
    res.set(http::field::server, "postern-demo");
  }));
  auto [aec] = co_await ws.async_accept(req, use_nothrow);
  if (aec) {
    POSTERN_LOG(info, "websocket accept failed").kv("error", aec.message());
    co_return;
  }
  const auto ex = ws.get_executor();
  auto c = std::make_shared<Client>(ex, path, user);
  POSTERN_LOG(info, "websocket open").kv("path", path).kv("user", user).kv("subprotocol", proto);
  Hub& hub = Hub::get();
  hub.join(c);
  Event done(ex);
  asio::co_spawn(ex, writer(ws, *c, done), asio::detached);
  beast::flat_buffer buffer;
  std::uint16_t code = 0;
  for (;;) {
    buffer.clear();
    auto [ec, n] = co_await ws.async_read(buffer, use_nothrow);
    if (ec) {
      code = ec == websocket::error::closed ? static_cast<std::uint16_t>(ws.reason().code) : 1006;
      break;
    }
    Msg m;
    m.binary = !ws.got_text();
    std::string text = beast::buffers_to_string(buffer.data());
    if (!m.binary && text.starts_with("/close ")) {
      std::string rest = text.substr(7);
      const auto sp = rest.find(' ');
      const auto num = parse_uint(rest.substr(0, sp));
      c->close_request = {num && *num >= 1000 && *num <= 4999 ? static_cast<std::uint16_t>(*num) : 1000,
                          sp == std::string::npos ? std::string() : rest.substr(sp + 1)};
      c->wake.cancel();
      continue;
    }
    if (!m.binary && text.starts_with("/flood ")) {
      const std::string rest = text.substr(7);
      const auto sp = rest.find(' ');
      const auto count = parse_uint(rest.substr(0, sp));
      const auto size = sp == std::string::npos ? std::nullopt : parse_uint(rest.substr(sp + 1));
      if (count && size && *count <= kMaxFloodMessages && *size <= kMaxMessage) {
        c->flood_message = std::make_shared<const std::string>(static_cast<std::size_t>(*size), 'f');
        c->flood_left = *count;
        c->wake.cancel();
      } else {
        Msg usage;
        usage.data = std::make_shared<const std::string>("usage: /flood COUNT SIZE (COUNT <= " +
                                                         std::to_string(kMaxFloodMessages) +
                                                         ", SIZE <= " + std::to_string(kMaxMessage) + ")");
        c->push(std::move(usage));
      }
      continue;
    }
    if (m.binary) {
      m.data = std::make_shared<const std::string>(std::move(text));
    } else {
      m.data = std::make_shared<const std::string>("Message Received from " + user + ": " + text);
    }
    hub.broadcast(path, std::move(m));
  }
  c->closed = true;
  c->wake.cancel();
  co_await done.wait();
  hub.leave(c.get());
  POSTERN_LOG(info, "websocket closed").kv("path", path).kv("user", user).kv("code", static_cast<unsigned>(code));
}

}  // namespace

asio::awaitable<void> run_chat(beast::tcp_stream& stream, const http::request<http::buffer_body>& req) {
  co_await chat(stream, req);
}

asio::awaitable<void> run_chat(beast::ssl_stream<beast::tcp_stream>& stream,
                               const http::request<http::buffer_body>& req) {
  co_await chat(stream, req);
}

}  // namespace postern::demo
