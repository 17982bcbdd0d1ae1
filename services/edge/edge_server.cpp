#include "edge/edge_server.hpp"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <map>
#include <random>

#include "common/config/yaml_proto.hpp"
#include "common/event.hpp"
#include "common/file_watch.hpp"
#include "common/net/beast_ws_port.hpp"
#include "common/net/body_reader.hpp"
#include "common/net/http_client.hpp"
#include "common/net/http_headers.hpp"
#include "common/net/listen.hpp"
#include "common/net/request_target.hpp"
#include "common/net/tls.hpp"
#include "common/net/trailers.hpp"
#include "common/observability/log.hpp"
#include "common/policy/basic_verifier.hpp"
#include "common/policy/decision_metrics.hpp"
#include "common/policy/engine.hpp"
#include "common/policy/invocation.hpp"
#include "common/policy/signed_snapshot.hpp"
#include "common/policy/ws_policies.hpp"
#include "edge/forwarding.hpp"
#include "edge/relay_client.hpp"
#include "edge/router.hpp"

namespace postern::edge {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace ssl = asio::ssl;
namespace tv1 = tunnel::v1;
namespace pv1 = policy::v1;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

// How long a connection that arrives before the broker's first snapshot
// waits for it; then it is served as it is (503: no configuration yet).
constexpr auto kFirstConfigWait = 2s;
// How long a draining edge waits for the first request of connections it
// accepted before the drain (or took from the listener's backlog at the
// drain) before closing the silent ones.
constexpr auto kDrainFirstRequestGrace = 1s;

const prometheus::Histogram::BucketBoundaries kLatencyBuckets{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                              0.25,  0.5,    1,     2.5,  5,     10,   30, 60};

struct Metrics {
  prometheus::Family<prometheus::Counter>& requests;
  prometheus::Family<prometheus::Histogram>& duration;
  prometheus::Counter& bytes_in;
  prometheus::Counter& bytes_out;
  prometheus::Gauge& connections;
  prometheus::Gauge& in_flight;
  prometheus::Gauge& ws_sessions;
  prometheus::Family<prometheus::Counter>& ws_sessions_total;
  prometheus::Family<prometheus::Counter>& ws_messages;
  prometheus::Family<prometheus::Counter>& ws_bytes;

  explicit Metrics(prometheus::Registry& r)
      : requests(prometheus::BuildCounter()
                     .Name("postern_edge_requests_total")
                     .Help("Requests by API and status class")
                     .Register(r)),
        duration(prometheus::BuildHistogram()
                     .Name("postern_edge_request_duration_seconds")
                     .Help("Time from request head to the end of the response, by API")
                     .Register(r)),
        bytes_in(prometheus::BuildCounter()
                     .Name("postern_edge_request_bytes_total")
                     .Help("Request body bytes received from clients")
                     .Register(r)
                     .Add({})),
        bytes_out(prometheus::BuildCounter()
                      .Name("postern_edge_response_bytes_total")
                      .Help("Response body bytes sent to clients")
                      .Register(r)
                      .Add({})),
        connections(prometheus::BuildGauge()
                        .Name("postern_edge_connections")
                        .Help("Open client connections")
                        .Register(r)
                        .Add({})),
        in_flight(prometheus::BuildGauge()
                      .Name("postern_edge_requests_in_flight")
                      .Help("Requests being served right now")
                      .Register(r)
                      .Add({})),
        ws_sessions(prometheus::BuildGauge()
                        .Name("postern_edge_websocket_sessions")
                        .Help("WebSocket sessions open right now")
                        .Register(r)
                        .Add({})),
        ws_sessions_total(prometheus::BuildCounter()
                              .Name("postern_edge_websocket_sessions_total")
                              .Help("WebSocket sessions ended, by API and the close code the client got")
                              .Register(r)),
        ws_messages(prometheus::BuildCounter()
                        .Name("postern_edge_websocket_messages_total")
                        .Help("WebSocket messages relayed, by API and direction")
                        .Register(r)),
        ws_bytes(prometheus::BuildCounter()
                     .Name("postern_edge_websocket_bytes_total")
                     .Help("WebSocket message bytes passed on (to the client, or into the tunnel), by API and "
                           "direction")
                     .Register(r)) {}
};

std::string new_request_id() {
  static std::mt19937_64 rng{std::random_device{}()};
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(rng()),
                static_cast<unsigned long long>(rng()));
  return buf;
}

std::string status_class(unsigned s) { return std::to_string(s / 100) + "xx"; }

// A request id from a client is kept only if it is short and printable.
bool acceptable_request_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (unsigned char c : id) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

}  // namespace

struct EdgeServer::Impl {
  asio::io_context& ioc;
  asio::any_io_executor ex;
  config::v1::EdgeConfig cfg;
  std::shared_ptr<prometheus::Registry> prom;
  Metrics metrics;
  std::unique_ptr<Router> router;
  std::unique_ptr<RelayClient> relay;
  net::HttpClient http;
  std::map<std::string, net::Origin> direct_origins;  // by URL + CA file

  // Policies: the newest snapshot from the broker, compiled. A request keeps
  // the version it started with.
  std::shared_ptr<const policy::Catalog> catalog;
  // The public keys a snapshot must be signed by (trusted_config_keys).
  std::shared_ptr<const policy::SnapshotKeys> trusted_keys;
  std::shared_ptr<const pv1::SignedSnapshot> catalog_wire;  // the signed bytes `catalog` came from
  prometheus::Family<prometheus::Counter>& config_updates;
  bool config_received = false;
  std::unique_ptr<Event> first_config;  // set with config_received
  policy::Limiter limiter;
  policy::BasicVerifier basic_verifier;
  // Peers whose X-Forwarded-For and Forwarded are believed (trusted_proxies).
  policy::IpRanges trusted_proxies;
  std::chrono::seconds file_check_interval{10};
  policy::DecisionMetrics decision_metrics;
  std::unique_ptr<policy::InvocationLog> invocations;
  prometheus::Gauge& config_version;
  struct Listener {
    std::unique_ptr<tcp::acceptor> acceptor;
    // Replaced when the files change; a connection keeps the one it began with.
    std::shared_ptr<ssl::context> tls;
    std::string name;
    std::string cert_file, key_file;
  };
  std::vector<Listener> listeners;

  Clock::duration upstream_timeout, idle_timeout, header_timeout, drain_timeout;
  std::uint32_t max_header_bytes = 65536;
  bool draining = false;
  std::size_t in_flight = 0;
  std::unique_ptr<Event> idle_event;
  // Closers for connections waiting between requests, so a drain can end them.
  std::map<std::uint64_t, std::function<void()>> idle_connections;
  // New connections whose first request has not been read yet, counted from
  // the accept, and closers for those waiting for it. A drain serves what
  // such a connection sends within kDrainFirstRequestGrace (its client chose
  // this edge before the drain) and only then closes the silent ones.
  std::size_t fresh = 0;
  std::unique_ptr<Event> fresh_event;  // set while fresh == 0
  std::map<std::uint64_t, std::function<void()>> fresh_connections;
  // Counts one new connection as fresh until done() or destruction.
  class Fresh {
   public:
    explicit Fresh(Impl& i) : impl_(&i) {
      if (impl_->fresh++ == 0) impl_->fresh_event->reset();
    }
    Fresh(Fresh&& o) noexcept : impl_(std::exchange(o.impl_, nullptr)) {}
    Fresh& operator=(Fresh&&) = delete;
    ~Fresh() { done(); }
    void done() {
      if (impl_ && --impl_->fresh == 0) impl_->fresh_event->set();
      impl_ = nullptr;
    }

   private:
    Impl* impl_;
  };
  std::uint64_t next_conn = 1;
  // Open WebSocket sessions, so a drain can close them with 1001.
  net::WsSessions ws_sessions;
  std::size_t max_ws_message_bytes = 16u << 20;
  policy::TransformClient transforms{ex};

  Impl(asio::io_context& io, config::v1::EdgeConfig c, std::shared_ptr<prometheus::Registry> p)
      : ioc(io), ex(io.get_executor()), cfg(std::move(c)), prom(std::move(p)), metrics(*prom), http(ex),
        config_updates(prometheus::BuildCounter()
                           .Name("postern_edge_config_updates_total")
                           .Help("Policy snapshots received from the broker, by result: applied, unchanged, empty, "
                                 "untrusted (no valid signature by a trusted key), invalid")
                           .Register(*prom)),
        decision_metrics(*prom, "edge"),
        config_version(prometheus::BuildGauge()
                           .Name("postern_edge_config_version")
                           .Help("Version of the policy snapshot in force (0: none)")
                           .Register(*prom)
                           .Add({})) {
    upstream_timeout = config::duration_or(cfg.upstream_timeout(), 60s);
    idle_timeout = config::duration_or(cfg.idle_timeout(), 60s);
    header_timeout = config::duration_or(cfg.header_timeout(), 10s);
    drain_timeout = config::duration_or(cfg.drain_timeout(), 20s);
    if (cfg.max_header_bytes()) max_header_bytes = cfg.max_header_bytes();
    if (cfg.max_ws_message_bytes()) max_ws_message_bytes = cfg.max_ws_message_bytes();
    idle_event = std::make_unique<Event>(ex);
    idle_event->set();
    fresh_event = std::make_unique<Event>(ex);
    fresh_event->set();
    first_config = std::make_unique<Event>(ex);
  }

  void start() {
    try {
      router = std::make_unique<Router>(cfg.apis(), cfg.default_alias());
    } catch (const std::invalid_argument& e) {
      throw std::runtime_error(e.what());
    }
    const std::vector<std::string> key_files(cfg.trusted_config_keys().begin(), cfg.trusted_config_keys().end());
    trusted_keys = policy::SnapshotKeys::load(key_files, "trusted_config_keys");
    for (int i = 0; i < cfg.trusted_proxies_size(); ++i) {
      if (std::string why = trusted_proxies.add(cfg.trusted_proxies(i)); !why.empty()) {
        throw std::runtime_error("trusted_proxies[" + std::to_string(i) + "]: " + why);
      }
    }
    file_check_interval = std::chrono::duration_cast<std::chrono::seconds>(
        config::duration_or(cfg.file_check_interval(), std::chrono::seconds(10)));
    if (file_check_interval < 1s) file_check_interval = 1s;
    invocations = std::make_unique<policy::InvocationLog>(cfg.invocation_log_file());
    relay = std::make_unique<RelayClient>(ex, cfg.broker(), prom.get(), file_check_interval);
    asio::co_spawn(ex,
                   relay->watch_config(
                       cfg.id().empty() ? "edge" : cfg.id(),
                       [this] { return catalog ? catalog->version() : std::uint64_t{0}; },
                       [this](policy::v1::SignedSnapshot&& s) { apply_snapshot(std::move(s)); }),
                   asio::detached);
    asio::co_spawn(ex, watch_files(key_files, file_check_interval, [this, key_files] { return reload_keys(key_files); },
                                   &draining),
                   asio::detached);
    if (cfg.listeners().empty()) throw std::runtime_error("listeners: at least one external listener is required");
    for (int i = 0; i < cfg.listeners_size(); ++i) {
      const auto& l = cfg.listeners(i);
      Listener L;
      L.name = i == 0 ? "external" : "external-" + std::to_string(i);
      if (l.has_tls()) {
        try {
          L.tls = net::make_server_tls(l.tls().cert_file(), l.tls().key_file());
        } catch (const std::exception& e) {
          throw std::runtime_error("listeners[" + std::to_string(i) + "].tls: " + e.what());
        }
        L.name = i == 0 ? "external-tls" : L.name + "-tls";
        L.cert_file = l.tls().cert_file();
        L.key_file = l.tls().key_file();
      }
      tcp::endpoint ep;
      try {
        ep = net::parse_listen(l.listen());
      } catch (const std::exception& e) {
        throw std::runtime_error("listeners[" + std::to_string(i) + "].listen: " + e.what());
      }
      L.acceptor = std::make_unique<tcp::acceptor>(ex);
      boost::system::error_code ec;
      L.acceptor->open(ep.protocol(), ec);
      if (!ec) L.acceptor->set_option(tcp::acceptor::reuse_address(true), ec);
      if (!ec) L.acceptor->bind(ep, ec);
      if (!ec) L.acceptor->listen(asio::socket_base::max_listen_connections, ec);
      if (ec) throw std::runtime_error("listeners[" + std::to_string(i) + "]: cannot listen on " + l.listen() + ": " + ec.message());
      POSTERN_LOG(info, "listening")
          .kv("listener", L.name)
          .kv("address", ep.address().to_string())
          .kv("port", static_cast<unsigned>(L.acceptor->local_endpoint().port()))
          .kv("tls", static_cast<bool>(L.tls));
      listeners.push_back(std::move(L));
    }
    for (auto& l : listeners) {
      asio::co_spawn(ex, accept_loop(l), asio::detached);
      if (l.tls) {
        asio::co_spawn(ex, watch_files({l.cert_file, l.key_file}, file_check_interval,
                                       [this, &l] { return reload_listener_tls(l); }, &draining),
                       asio::detached);
      }
    }
    if (!cfg.public_url().empty()) POSTERN_LOG(info, "public url").kv("url", cfg.public_url());
  }

  // The broker's current snapshot replaces ours atomically, whatever its
  // version: the broker serves what the green zone holds now, so an edge
  // follows it back as well as forward. Only with a valid signature by a
  // trusted key; one that does not compile is refused, and the current one
  // keeps serving.
  void apply_snapshot(policy::v1::SignedSnapshot&& s) {
    policy::SnapshotOutcome outcome;
    auto got = policy::open_snapshot(*trusted_keys, std::make_shared<const policy::v1::SignedSnapshot>(std::move(s)),
                                     catalog.get(), "broker", outcome);
    config_updates.Add({{"result", policy::outcome_label(outcome)}}).Increment();
    if (!config_received && outcome != policy::SnapshotOutcome::untrusted) {
      config_received = true;
      first_config->set();
      POSTERN_LOG(info, "config received from broker").kv("version", got ? got->catalog->version() : 0);
    }
    if (!got) return;
    catalog = std::move(got->catalog);
    catalog_wire = std::move(got->wire);
    config_version.Set(static_cast<double>(catalog->version()));
  }

  // New trusted keys (a rotation): the snapshot in force must still carry a
  // signature by one of them, or it is dropped (the edge answers 503 until
  // the broker sends one that does).
  bool reload_keys(const std::vector<std::string>& files) {
    try {
      trusted_keys = policy::SnapshotKeys::load(files, "trusted_config_keys");
    } catch (const std::exception& e) {
      POSTERN_LOG(error, "trusted keys not reloaded; the old ones stay").kv("error", e.what());
      return true;
    }
    POSTERN_LOG(info, "trusted keys reloaded").kv("keys", trusted_keys->ids());
    if (catalog && !catalog_wire_trusted()) {
      POSTERN_LOG(warn, "policy snapshot dropped: its signing key is no longer trusted")
          .kv("version", catalog->version());
      catalog.reset();
      catalog_wire.reset();
      config_version.Set(0);
      relay->restart_watch();
    }
    return true;
  }

  bool catalog_wire_trusted() const {
    pv1::Snapshot ignored;
    return catalog_wire && trusted_keys->open(*catalog_wire, ignored).empty();
  }

  // A renewed certificate serves every connection from now on.
  bool reload_listener_tls(Listener& l) {
    try {
      l.tls = net::make_server_tls(l.cert_file, l.key_file);
      POSTERN_LOG(info, "tls certificate reloaded").kv("listener", l.name).kv("cert_file", l.cert_file);
    } catch (const std::exception& e) {
      POSTERN_LOG(error, "tls certificate not reloaded; the old one stays").kv("listener", l.name).kv("error", e.what());
    }
    return true;
  }

  const net::Origin& direct_origin(const Route& r) {
    const std::string key = r.url + '\n' + r.ca_file;
    auto it = direct_origins.find(key);
    if (it == direct_origins.end()) {
      try {
        it = direct_origins.emplace(key, net::Origin::parse(r.url, r.ca_file)).first;
      } catch (const std::exception& e) {
        throw ExchangeError(tv1::ERROR_CODE_UPSTREAM_UNREACHABLE, "API '" + r.api + "': " + e.what());
      }
    }
    return it->second;
  }

  asio::awaitable<void> accept_loop(Listener& l) {
    for (;;) {
      auto [ec, socket] = co_await l.acceptor->async_accept(use_nothrow);
      if (ec) {
        if (!l.acceptor->is_open()) co_return;
        // EMFILE and friends: back off a little rather than spin.
        asio::steady_timer t(ex, 50ms);
        co_await t.async_wait(use_nothrow);
        continue;
      }
      start_session(l, std::move(socket));
    }
  }

  void start_session(Listener& l, tcp::socket socket) {
    boost::system::error_code ec;
    socket.set_option(tcp::no_delay(true), ec);
    auto peer = socket.remote_endpoint(ec);
    if (l.tls) {
      // This connection's context, whatever a reload brings (a copy: the
      // arguments may be evaluated in any order).
      const auto tls = l.tls;
      asio::co_spawn(ex,
                     tls_session(beast::ssl_stream<beast::tcp_stream>(std::move(socket), *tls), tls, peer, Fresh(*this)),
                     [](std::exception_ptr e) { log_session_failure(e); });
    } else {
      asio::co_spawn(ex, plain_session(beast::tcp_stream(std::move(socket)), peer, Fresh(*this)),
                     [](std::exception_ptr e) { log_session_failure(e); });
    }
  }

  // Takes every connection the kernel has completed for `l` but nobody has
  // accepted yet (closing the listener would reset them) and starts their
  // sessions. Returns how many.
  std::size_t accept_backlog(Listener& l) {
    std::size_t n = 0;
    boost::system::error_code ec;
    l.acceptor->non_blocking(true, ec);
    while (!ec) {
      tcp::socket socket(ex);
      l.acceptor->accept(socket, ec);
      if (ec) break;
      start_session(l, std::move(socket));
      ++n;
    }
    return n;
  }

  static void log_session_failure(std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      POSTERN_LOG(error, "session failed").kv("error", ex.what());
    }
  }

  // `tls` is the stream's context, kept for as long as the stream lives.
  asio::awaitable<void> tls_session(beast::ssl_stream<beast::tcp_stream> stream,
                                    [[maybe_unused]] std::shared_ptr<ssl::context> tls, tcp::endpoint peer,
                                    Fresh fresh) {
    beast::get_lowest_layer(stream).expires_after(header_timeout);
    auto [ec] = co_await stream.async_handshake(ssl::stream_base::server, use_nothrow);
    if (ec) {
      POSTERN_LOG(debug, "tls handshake failed").kv("client", peer.address().to_string()).kv("error", ec.message());
      co_return;
    }
    co_await session(stream, peer, true, fresh);
  }

  asio::awaitable<void> plain_session(beast::tcp_stream stream, tcp::endpoint peer, Fresh fresh) {
    co_await session(stream, peer, false, fresh);
  }

  // ------------------------------------------------------------ session

  template <class Stream>
  struct ClientBody final : BodySource {
    Stream& stream;
    beast::flat_buffer& buffer;
    http::request_parser<http::buffer_body>& parser;
    Clock::duration timeout;
    Metrics& metrics;
    net::PieceBuffer buf;
    net::HeadCounts head_fields;
    Trailers trailers_;
    ClientBody(Stream& s, beast::flat_buffer& b, http::request_parser<http::buffer_body>& p, Clock::duration t,
               Metrics& m)
        : stream(s), buffer(b), parser(p), timeout(t), metrics(m), buf(p.content_length_remaining()),
          head_fields(net::count_fields(p.get())) {}

    const Trailers& trailers() const override { return trailers_; }

    asio::awaitable<bool> next(std::string_view& chunk) override {
      // Beast sizes each socket read by the buffer's spare room (512 bytes
      // at least): give a streaming body 64 KiB, idle connections none.
      if (buffer.capacity() < kWsPieceBytes) buffer.reserve(kWsPieceBytes);
      while (!parser.is_done()) {
        beast::get_lowest_layer(stream).expires_after(timeout);
        char* room = buf.prepare();
        auto [ec, got] = co_await net::read_body_piece(stream, buffer, parser, room, buf.capacity());
        buf.got(got);
        if (ec) {
          if (ec == http::error::end_of_stream || ec == asio::error::connection_reset || ec == beast::error::timeout ||
              ec == asio::error::eof || ec == asio::ssl::error::stream_truncated) {
            throw ExchangeError(tv1::ERROR_CODE_CLIENT_GONE, "client went away while sending the body");
          }
          throw ExchangeError(tv1::ERROR_CODE_BAD_REQUEST, "malformed request body: " + ec.message());
        }
        if (got > 0) {
          metrics.bytes_in.Increment(static_cast<double>(got));
          chunk = std::string_view(room, got);
          co_return true;
        }
      }
      if (parser.chunked()) trailers_ = net::trailers_after(parser.get(), head_fields);
      co_return false;
    }
  };

  template <class Stream>
  struct ClientSink final : ResponseSink {
    Stream& stream;
    unsigned version;
    bool keep_alive;
    bool head_request;
    std::string request_id;
    Clock::duration timeout;
    Metrics& metrics;
    std::optional<http::response<http::buffer_body>> res;
    std::optional<http::response_serializer<http::buffer_body>> sr;
    unsigned status = 0;
    bool no_body = false;
    bool head_pending = false;

    ClientSink(Stream& s, unsigned v, bool ka, bool head_req, std::string rid, Clock::duration t, Metrics& m)
        : stream(s), version(v), keep_alive(ka), head_request(head_req), request_id(std::move(rid)), timeout(t),
          metrics(m) {}

    asio::awaitable<void> head(tv1::ResponseHead& h) override {
      started_ = true;
      status = h.status();
      res.emplace();
      res->version(version);
      res->result(h.status());
      if (!h.reason().empty()) res->reason(h.reason());
      bool has_request_id = false;
      for (const auto& hd : h.headers()) {
        if (net::is_hop_by_hop(hd.name())) continue;
        if (net::iequals(hd.name(), "x-request-id")) has_request_id = true;
        res->insert(hd.name(), hd.value());
      }
      if (!has_request_id) res->set("X-Request-Id", request_id);
      no_body = head_request || status == 204 || status == 304 || status < 200;
      if (h.content_length() >= 0) {
        if (!(status == 204 || status == 304 || status < 200)) res->content_length(static_cast<std::uint64_t>(h.content_length()));
      } else if (!no_body) {
        if (version >= 11) {
          res->chunked(true);
        } else {
          keep_alive = false;
        }
      }
      res->keep_alive(keep_alive);
      res->body().data = nullptr;
      res->body().size = 0;
      res->body().more = !no_body;
      sr.emplace(*res);
      // Held until the first body piece (the serializer writes both in one
      // go), the end, or idle().
      head_pending = true;
      co_return;
    }

    asio::awaitable<void> idle() override {
      if (!head_pending) co_return;
      head_pending = false;
      beast::get_lowest_layer(stream).expires_after(timeout);
      auto [ec, n] = co_await http::async_write_header(stream, *sr, use_nothrow);
      if (ec) throw ExchangeError(tv1::ERROR_CODE_CLIENT_GONE, "client went away: " + ec.message());
    }

    asio::awaitable<void> body(std::string_view chunk) override {
      if (no_body || chunk.empty()) co_return;
      head_pending = false;  // the serializer writes it with this piece
      res->body().data = const_cast<char*>(chunk.data());
      res->body().size = chunk.size();
      res->body().more = true;
      beast::get_lowest_layer(stream).expires_after(timeout);
      auto [ec, n] = co_await http::async_write(stream, *sr, use_nothrow);
      if (ec && ec != http::error::need_buffer) {
        throw ExchangeError(tv1::ERROR_CODE_CLIENT_GONE, "client went away: " + ec.message());
      }
      metrics.bytes_out.Increment(static_cast<double>(chunk.size()));
    }

    asio::awaitable<void> end(const Trailers& trailers) override {
      // A hand-written last chunk (with trailers) cannot carry the head.
      if (no_body || (res->chunked() && !trailers.empty())) co_await idle();
      if (no_body) co_return;
      head_pending = false;  // the serializer writes it with the body's end
      beast::get_lowest_layer(stream).expires_after(timeout);
      const auto ec = co_await net::write_body_end(stream, *sr, *res, trailers);
      if (ec && ec != http::error::need_buffer) {
        throw ExchangeError(tv1::ERROR_CODE_CLIENT_GONE, "client went away: " + ec.message());
      }
    }
  };

  // Writes a problem+json error response; the caller decides on keep-alive.
  template <class Stream>
  // Non-trivial arguments by reference: GCC 12 destroys temporaries in a
  // co_await full-expression twice, so callers pass named values.
  asio::awaitable<bool> write_problem(Stream& stream, unsigned version, int status, std::string_view type_error,
                                      std::string& body, std::string_view request_id, bool keep_alive,
                                      std::string_view detail, std::string_view upgrade = {}) {
    http::response<http::string_body> res;
    // 426 names the protocol to switch to (RFC 9110 15.5.22).
    if (!upgrade.empty()) res.set(http::field::upgrade, upgrade);
    res.version(version);
    res.result(status);
    res.set(http::field::content_type, "application/problem+json");
    res.set(http::field::cache_control, "no-store");
    std::string ps = "postern-edge; error=" + std::string(type_error) + "; details=\"";
    for (char c : detail) {
      if (c == '"' || c == '\\') ps += '\\';
      if (static_cast<unsigned char>(c) >= 0x20) ps += c;
    }
    ps += '"';
    res.set("Proxy-Status", ps);
    if (!request_id.empty()) res.set("X-Request-Id", request_id);
    res.keep_alive(keep_alive);
    res.body() = std::move(body);
    res.prepare_payload();
    beast::get_lowest_layer(stream).expires_after(10s);
    auto [ec, n] = co_await http::async_write(stream, res, use_nothrow);
    co_return !ec;
  }

  template <class Stream>
  asio::awaitable<bool> write_error(Stream& stream, unsigned version, const ExchangeError& e,
                                    std::string_view request_id, bool keep_alive, std::string_view alias = {}) {
    std::string body = problem_json(e.code(), e.what(), request_id, alias.empty() ? "" : "alias", alias);
    const std::string_view detail = e.what();
    const bool written = co_await write_problem(stream, version, http_status(e.code()), proxy_status_error(e.code()),
                                                body, request_id, keep_alive, detail);
    co_return written;
  }

  template <class Stream>
  asio::awaitable<void> close(Stream& stream) {
    if constexpr (std::is_same_v<Stream, beast::tcp_stream>) {
      boost::system::error_code ec;
      stream.socket().shutdown(tcp::socket::shutdown_send, ec);
      stream.close();
    } else {
      beast::get_lowest_layer(stream).expires_after(2s);
      co_await stream.async_shutdown(use_nothrow);
      beast::get_lowest_layer(stream).close();
    }
    co_return;
  }

  template <class Stream>
  asio::awaitable<void> session(Stream& stream, tcp::endpoint peer, bool tls, Fresh& fresh) {
    metrics.connections.Increment();
    struct ConnGauge {
      Metrics& m;
      ~ConnGauge() { m.connections.Decrement(); }
    } gauge{metrics};
    const std::string client_ip = peer.address().to_string();
    beast::flat_buffer buffer;
    const std::uint64_t conn_id = next_conn++;
    // Set once a WebSocket session took the stream over (it is moved from).
    bool upgraded = false;
    // A restarted edge listens at once but serves nothing before the
    // broker's first snapshot, normally a moment away: a client that comes
    // meanwhile waits for it (bounded) instead of getting a 503 for no API.
    if (!config_received) co_await first_config->wait_for(kFirstConfigWait);
    for (bool first = true;; first = false) {
      // A draining edge still answers a new connection's first request
      // (with Connection: close): its client picked this edge before the
      // drain, and a connection closed unanswered would be a failed request.
      if (draining && !first) break;
      http::request_parser<http::buffer_body> parser;
      parser.header_limit(max_header_bytes);
      parser.body_limit(boost::none);
      beast::get_lowest_layer(stream).expires_after(first ? header_timeout : idle_timeout);
      auto& waiting = first ? fresh_connections : idle_connections;
      waiting[conn_id] = [&stream] { beast::get_lowest_layer(stream).cancel(); };
      auto [ec, n] = co_await http::async_read_header(stream, buffer, parser, use_nothrow);
      waiting.erase(conn_id);
      fresh.done();
      if (ec) {
        if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == asio::error::operation_aborted ||
            ec == asio::error::connection_reset || ec == asio::error::eof || ec == asio::ssl::error::stream_truncated) {
          break;
        }
        const bool too_big = ec == http::error::header_limit;
        const int status = too_big ? 431 : 400;
        const std::string detail = too_big ? "request head exceeds " + std::to_string(max_header_bytes) + " bytes"
                                           : "malformed HTTP request: " + ec.message();
        POSTERN_LOG(info, "bad request").kv("client", client_ip).kv("status", status).kv("error", detail);
        metrics.requests.Add({{"api", ""}, {"code", status_class(status)}}).Increment();
        std::string body = "{\"type\":\"https://postern.dev/problems/bad-request\",\"title\":\"" +
                           std::string(too_big ? "Request Header Fields Too Large" : "Bad Request") +
                           "\",\"status\":" + std::to_string(status) + ",\"detail\":\"";
        log::json_escape(body, detail);
        body += "\"}\n";
        co_await write_problem(stream, 11, status, "http_request_error", body, {}, false, detail);
        break;
      }
      begin_in_flight();
      bool keep = false;
      try {
        keep = co_await handle(stream, buffer, parser, client_ip, tls, upgraded);
      } catch (const std::exception& e) {
        POSTERN_LOG(error, "request failed").kv("error", e.what());
      }
      end_in_flight();
      if (!keep) break;
    }
    if (!upgraded) co_await close(stream);
  }

  // Every value of header `name`, joined with ", " (RFC 9110 5.3).
  static std::string joined_field(const http::request<http::buffer_body>& req, std::string_view name) {
    std::string out;
    for (const auto& f : req) {
      if (!net::iequals(f.name_string(), name)) continue;
      if (!out.empty()) out += ", ";
      out += f.value();
    }
    return out;
  }

  // What makes a request unsafe to pass on whatever its API: framing that
  // two HTTP parsers could read differently (RFC 9112 6.3), a missing,
  // repeated or malformed Host (RFC 9112 3.2), a target that is not a plain
  // normalised path. Returns the reason ("" when fine) and sets the
  // normalised target and the Host.
  static std::string check_request(const http::request<http::buffer_body>& req, std::string& target,
                                   std::string& host) {
    std::size_t te = 0, cl = 0, hosts = 0;
    std::string te_value;
    for (const auto& f : req) {
      if (f.name() == http::field::transfer_encoding) {
        ++te;
        te_value = std::string(f.value());
      } else if (f.name() == http::field::content_length) {
        ++cl;
      } else if (f.name() == http::field::host) {
        ++hosts;
        host = std::string(f.value());
      }
    }
    if (te > 0) {
      if (req.version() < 11) return "Transfer-Encoding in an HTTP/1.0 request";
      std::string_view v = te_value;
      while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
      while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
      if (te > 1 || !net::iequals(v, "chunked")) {
        return "Transfer-Encoding '" + (te > 1 ? std::string("(repeated)") : std::string(v)) +
               "': only a single 'chunked' is accepted";
      }
      if (cl > 0) return "both Content-Length and Transfer-Encoding";
    }
    if (hosts > 1) return "more than one Host header";
    if (hosts == 0 && req.version() >= 11) return "no Host header (HTTP/1.1 requires one)";
    if (hosts == 1) {
      if (auto why = host_problem(host)) return *why;
    }
    auto n = net::normalize_target(req.target());
    if (!n.ok()) return n.error;
    target = std::move(n.target);
    return {};
  }

  // An exchange in flight: a drain waits until none is.
  void begin_in_flight() {
    ++in_flight;
    idle_event->reset();
    metrics.in_flight.Increment();
  }
  void end_in_flight() {
    metrics.in_flight.Decrement();
    if (--in_flight == 0) idle_event->set();
  }

  // The end of an exchange: request metrics, policy decisions, the log line.
  void finish_exchange(Clock::time_point started, unsigned status, const std::string& api,
                       const policy::Decisions& decisions, const std::string& request_id, const std::string& client_ip,
                       const std::string& method, const std::string& path, const std::string& application) {
    const double secs = std::chrono::duration<double>(Clock::now() - started).count();
    metrics.requests.Add({{"api", api}, {"code", status_class(status)}}).Increment();
    metrics.duration.Add({{"api", api}}, kLatencyBuckets).Observe(secs);
    decision_metrics.count(api, decisions);
    POSTERN_LOG(info, "request")
        .kv("request_id", request_id)
        .kv("client", client_ip)
        .kv("method", method)
        .kv("path", path)
        .kv("api", api)
        .kv("application", application)
        .kv("status", status)
        .kv("duration_ms", secs * 1000.0);
  }

  template <class Stream>
  asio::awaitable<bool> handle(Stream& stream, beast::flat_buffer& buffer,
                               http::request_parser<http::buffer_body>& parser, const std::string& peer_ip,
                               bool tls, bool& upgraded) {
    const auto started = Clock::now();
    auto& req = parser.get();
    const unsigned version = req.version();
    std::string request_id(req["X-Request-Id"]);
    if (!acceptable_request_id(request_id)) request_id = new_request_id();
    const bool body_expected = parser.chunked() || (parser.content_length() && *parser.content_length() > 0);
    bool keep_alive = req.keep_alive() && !draining;

    // Framing, Host and the target, before anything routes or looks at them.
    std::string target, host;
    if (const std::string bad = check_request(req, target, host); !bad.empty()) {
      POSTERN_LOG(info, "bad request").kv("request_id", request_id).kv("client", peer_ip).kv("error", bad);
      std::string body =
          "{\"type\":\"https://postern.dev/problems/bad-request\",\"title\":\"Bad Request\",\"status\":400,\"detail\":\"";
      log::json_escape(body, bad);
      body += "\",\"request_id\":\"" + request_id + "\"}\n";
      co_await write_problem(stream, version, 400, "http_request_error", body, request_id, false, bad);
      finish_exchange(started, 400, "", {}, request_id, peer_ip, std::string(req.method_string()), "", "");
      co_return false;
    }
    req.target(target);  // what was routed is what is sent on, and logged
    const std::string path = policy::log_path(target);  // for logs: no query, no path-parameter values
    const ClientAddress who = client_address(peer_ip, trusted_proxies, joined_field(req, "x-forwarded-for"),
                                             joined_field(req, "forwarded"), tls ? "https" : "http", host);
    const std::string& client_ip = who.client_ip;

    const auto cat = catalog;  // this request's snapshot, whatever arrives meanwhile
    auto route = router->route(cat.get(), target);
    const policy::CompiledApi* papi = route ? route->policy_api : nullptr;
    const std::string api_name = route ? route->api : std::string();
    // The API's threat rules, or the global ones when no API matches.
    const policy::ThreatRules& threats = papi ? papi->threats : cat ? cat->threats() : policy::kNoThreatRules;
    policy::Decisions decisions;
    policy::Identity identity;
    auto finish = [&](unsigned status, const std::string& api) {
      finish_exchange(started, status, api, decisions, request_id, client_ip, std::string(req.method_string()), path,
                      identity.application);
    };

    // Threat protection first, for every request.
    {
      policy::RequestShape shape;
      shape.url_length = req.target().size();
      for (const auto& f : req) {
        ++shape.header_count;
        shape.header_bytes += f.name_string().size() + f.value().size();
      }
      if (!parser.chunked()) shape.content_length = parser.content_length() ? *parser.content_length() : 0;
      shape.client_ip = client_ip;
      const auto verdict = policy::check_threats(threats, shape, decisions);
      if (!verdict.allowed()) {
        const bool ka = keep_alive && !body_expected;
        co_await write_rejection(stream, version, verdict, request_id, ka);
        finish(verdict.status, api_name);
        co_return ka;
      }
    }

    if (!route && !cat) {
      // Nothing has come from the green zone yet: the API may well exist.
      std::string body =
          "{\"type\":\"https://postern.dev/problems/no-config\",\"title\":\"No API configuration yet\",\"status\":503,"
          "\"detail\":\"no policy snapshot has reached this edge yet (no connector has attached to the broker "
          "since it started); retry shortly\",\"request_id\":\"" + request_id + "\"}\n";
      const bool ka = keep_alive && !body_expected;
      co_await write_problem(stream, version, 503, "destination_unavailable", body, request_id, ka,
                             "no policy snapshot yet");
      finish(503, "");
      co_return ka;
    }
    if (!route) {
      std::string body = "{\"type\":\"https://postern.dev/problems/no-api\",\"title\":\"No API matches\",\"status\":404,"
                         "\"detail\":\"no API is registered for path '";
      log::json_escape(body, path);
      body += "'\",\"request_id\":\"" + request_id + "\"}\n";
      // An unread body would be taken for the next request.
      const bool ka = keep_alive && !body_expected;
      co_await write_problem(stream, version, 404, "destination_not_found", body, request_id, ka, "no API for path");
      finish(404, "");
      co_return ka;
    }
    const bool upgrade = websocket::is_upgrade(req);
    // A WebSocket API takes upgrades only; a REST API (or a DMZ-local one
    // from the edge's own list) none. An API from the default alias is the
    // green zone's to judge.
    const bool ws_api = papi ? papi->websocket : false;
    const bool knows_type = papi || route->kind == Route::Kind::direct;
    if (upgrade && body_expected) {
      std::string body =
          "{\"type\":\"https://postern.dev/problems/bad-request\",\"title\":\"Bad Request\",\"status\":400,"
          "\"detail\":\"a WebSocket upgrade request carries no body\",\"request_id\":\"" + request_id + "\"}\n";
      co_await write_problem(stream, version, 400, "http_request_error", body, request_id, false,
                             "upgrade with a body");
      finish(400, api_name);
      co_return false;
    }
    if (knows_type && upgrade != ws_api) {
      const int status = ws_api ? 426 : 400;
      std::string body = "{\"type\":\"https://postern.dev/problems/" + std::string(ws_api ? "upgrade-required" : "not-websocket") +
                         "\",\"title\":\"" + (ws_api ? "Upgrade Required" : "Bad Request") + "\",\"status\":" +
                         std::to_string(status) + ",\"detail\":\"";
      const std::string detail = ws_api ? "API '" + api_name + "' is a WebSocket API: connect with a WebSocket client"
                                        : "API '" + api_name + "' is a REST API; it takes no WebSocket upgrade";
      log::json_escape(body, detail);
      body += "\",\"request_id\":\"" + request_id + "\"}\n";
      const bool ka = keep_alive && !body_expected && !upgrade;
      const std::string_view offer = ws_api ? "websocket" : "";
      co_await write_problem(stream, version, status, "http_request_error", body, request_id, ka, detail, offer);
      finish(static_cast<unsigned>(status), api_name);
      co_return ka;
    }

    tv1::RequestHead head;
    head.set_request_id(request_id);
    head.set_alias(route->alias);
    head.set_api(route->api);
    head.set_method(std::string(req.method_string()));
    head.set_target(route->target);
    head.set_client_ip(client_ip);
    head.set_http_version(version);
    const auto connection = req[http::field::connection];
    for (const auto& f : req) {
      const auto name = f.name_string();
      if (net::is_hop_by_hop(name) || net::listed_in_connection(connection, name)) continue;
      // Written by the edge itself below (client_address() decided what of
      // the client's own to keep).
      static constexpr std::string_view kOwn[] = {"host",           "expect",           "x-request-id",
                                                  "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
                                                  "forwarded",      "x-real-ip"};
      if (std::any_of(std::begin(kOwn), std::end(kOwn), [&](std::string_view n) { return net::iequals(name, n); })) {
        continue;
      }
      auto* h = head.add_headers();
      h->set_name(std::string(name));
      h->set_value(std::string(f.value()));
    }
    auto add = [&](std::string name, std::string value) {
      auto* h = head.add_headers();
      h->set_name(std::move(name));
      h->set_value(std::move(value));
    };
    add("X-Forwarded-For", who.x_forwarded_for);
    add("X-Forwarded-Proto", tls ? "https" : "http");
    if (!host.empty()) add("X-Forwarded-Host", host);
    add("Forwarded", who.forwarded);
    add("X-Request-Id", request_id);
    if (parser.chunked()) {
      head.set_content_length(-1);
    } else {
      head.set_content_length(parser.content_length() ? static_cast<std::int64_t>(*parser.content_length()) : 0);
    }
    const auto head_timeout = route->timeout_ms ? std::chrono::milliseconds(route->timeout_ms)
                                                : std::chrono::duration_cast<std::chrono::milliseconds>(upstream_timeout);
    head.set_timeout_ms(static_cast<std::uint32_t>(head_timeout.count()));

    // DMZ enforcement (scenario 1): identification, authorisation,
    // throttling and mediation here. Green APIs get them at the connector.
    const bool enforce = papi && !papi->green;
    const policy::v1::Policies* pol = enforce ? &papi->def->policies() : nullptr;
    policy::Limiter::Hold hold;
    if (enforce) {
      co_await basic_verifier.prepare(cat, *papi, head);
      auto verdict = policy::identify(*cat, *papi, head, host, std::chrono::system_clock::now(), identity, decisions);
      if (verdict.allowed() && upgrade) verdict = policy::check_origin(*papi, req[http::field::origin], decisions);
      if (verdict.allowed()) verdict = limiter.admit(*papi, identity, client_ip, Clock::now(), hold, decisions);
      if (!verdict.allowed()) {
        const bool ka = keep_alive && !body_expected;
        co_await write_rejection(stream, version, verdict, request_id, ka);
        finish(verdict.status, api_name);
        co_return ka;
      }
      policy::transform_request(pol->transform(), head);
    }

    if (upgrade) {
      // A session that opened goes on in a coroutine of its own, which
      // records the exchange when it ends (0 here).
      WsKeep keep{cat, std::move(hold), started};
      const unsigned status = co_await websocket_exchange(stream, req, head, *route, pol, threats, identity, decisions,
                                                          request_id, client_ip, head_timeout, upgraded, keep);
      if (status != 0) finish(status, api_name);
      co_return false;
    }

    // 100-continue is the edge's to answer: the body is read as it streams.
    if (body_expected && net::iequals(req[http::field::expect], "100-continue") && version >= 11) {
      static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      auto [ec, n] = co_await asio::async_write(stream, asio::buffer(kContinue), use_nothrow);
      if (ec) co_return false;
    }

    const auto capture = policy::capture_limits(pol);
    ClientBody<Stream> client_body(stream, buffer, parser, idle_timeout, metrics);
    policy::PolicedBody body(client_body, threats, policy::is_json_content_type(req[http::field::content_type]),
                             capture.request);
    if (enforce) body.filter_trailers_for(papi);
    ClientSink<Stream> client_sink(stream, version, keep_alive, req.method() == http::verb::head, request_id,
                                   idle_timeout, metrics);
    policy::PolicedSink sink(client_sink, pol ? &pol->transform() : nullptr, capture.response);
    std::optional<ExchangeError> failure;
    const auto upstream_started = Clock::now();
    try {
      if (body.wants_prefetch()) {
        const auto verdict = co_await body.prefetch(decisions);
        if (!verdict.allowed()) {
          const bool ka = keep_alive && parser.is_done();
          co_await write_rejection(stream, version, verdict, request_id, ka);
          finish(verdict.status, api_name);
          co_return ka;
        }
      }
      if (route->kind == Route::Kind::reverse_invoke) {
        co_await relay->invoke(head, body, sink, head_timeout);
      } else {
        co_await http.exchange(direct_origin(*route), head, body, sink, head_timeout);
      }
    } catch (const ExchangeError& e) {
      failure = e;
    }
    if (body.reported_over_limit()) decisions.push_back({"threat_protection", "reported", "body_too_large"});
    if (failure && failure->code() == tv1::ERROR_CODE_PAYLOAD_TOO_LARGE) {
      decisions.push_back({"threat_protection", "rejected", "body_too_large"});
    }
    if (pol && pol->has_log_invocation()) {
      if (auto r = policy::exchange_record(pol->log_invocation(), body, sink, failure)) {
        r->request_id = request_id;
        r->api = api_name;
        r->application = identity.application;
        r->client_ip = client_ip;
        r->method = std::string(req.method_string());
        r->path = path;
        r->enforced_by = "edge";
        r->total_ms = std::chrono::duration<double, std::milli>(Clock::now() - started).count();
        if (sink.started()) {
          r->upstream_ms = std::chrono::duration<double, std::milli>(sink.head_at() - upstream_started).count();
        }
        r->decisions = decisions;
        invocations->write(*r, pol->log_invocation().compress_payload());
      }
    }
    if (failure) {
      POSTERN_LOG(warn, "exchange failed")
          .kv("request_id", request_id)
          .kv("api", route->api)
          .kv("alias", route->alias)
          .kv("code", std::string(error_slug(failure->code())))
          .kv("error", failure->what());
      if (failure->code() == tv1::ERROR_CODE_CLIENT_GONE) {
        finish(499, route->api);
        co_return false;
      }
      if (sink.started()) {
        // Too late for an error response: cut the connection so the client
        // sees a truncated response, never a complete-looking one.
        finish(sink.status(), route->api);
        co_return false;
      }
      const bool ka = keep_alive && parser.is_done();
      const std::string_view alias =
          route->kind == Route::Kind::reverse_invoke ? std::string_view(route->alias) : std::string_view();
      const bool written = co_await write_error(stream, version, *failure, request_id, ka, alias);
      finish(static_cast<unsigned>(http_status(failure->code())), route->api);
      co_return written && ka;
    }
    finish(sink.status(), route->api);
    // A body the upstream did not read would be taken for the next request.
    co_return client_sink.keep_alive && parser.is_done() && !draining;
  }

  // ------------------------------------------------------------ WebSocket

  // What a WebSocket session keeps of its upgrade request: the catalog
  // snapshot its policies point into, its concurrency-limit slots, and when
  // the exchange started (for the request log line).
  struct WsKeep {
    std::shared_ptr<const policy::Catalog> catalog;
    policy::Limiter::Hold hold;
    Clock::time_point started;
  };

  // An upgrade: the far side (the native service through the tunnel, or a
  // DMZ-local one) answers first; the client gets its 101 only after a 101
  // from there, else the refusal as the native service gave it. Returns the
  // status the client got.
  template <class Stream>
  asio::awaitable<unsigned> websocket_exchange(Stream& stream, http::request<http::buffer_body>& req,
                                               tv1::RequestHead& head, const Route& route, const pv1::Policies* pol,
                                               const policy::ThreatRules& threats, const policy::Identity& identity,
                                               const policy::Decisions& decisions, const std::string& request_id,
                                               const std::string& client_ip, std::chrono::milliseconds head_timeout,
                                               bool& upgraded, WsKeep& keep) {
    head.set_websocket(true);
    head.set_content_length(0);
    const unsigned version = req.version();
    net::WsStreamOptions client_opts;
    client_opts.max_message_bytes = threats.ws_message_bytes.max > 0 && !threats.ws_message_bytes.report_only
                                        ? threats.ws_message_bytes.max
                                        : max_ws_message_bytes;
    client_opts.ping_interval = policy::WsSessionPolicies::ping_interval(pol);
    std::unique_ptr<WsTunnel> tunnel;
    net::HttpClient::WsUpgrade direct;
    tv1::ResponseHead answer;
    std::string refusal;
    net::WsPort* server = nullptr;
    std::optional<ExchangeError> failure;
    try {
      if (route.kind == Route::Kind::reverse_invoke) {
        tunnel = co_await relay->open_websocket(head, head_timeout, max_ws_message_bytes);
        answer = tunnel->head();
        refusal = tunnel->body();
        if (answer.status() == 101) server = &tunnel->port();
      } else {
        net::WsStreamOptions o;
        o.max_message_bytes = max_ws_message_bytes;
        o.ping_interval = client_opts.ping_interval;
        o.handshake_timeout = head_timeout;
        direct = co_await http.websocket(direct_origin(route), head, o);
        answer = direct.head;
        refusal = direct.body;
        server = direct.port.get();
      }
    } catch (const ExchangeError& e) {
      failure = e;
    }
    if (failure) {
      POSTERN_LOG(warn, "websocket upgrade failed")
          .kv("request_id", request_id)
          .kv("api", route.api)
          .kv("code", std::string(error_slug(failure->code())))
          .kv("error", failure->what());
      const std::string_view alias =
          route.kind == Route::Kind::reverse_invoke ? std::string_view(route.alias) : std::string_view();
      co_await write_error(stream, version, *failure, request_id, false, alias);
      co_return static_cast<unsigned>(http_status(failure->code()));
    }
    if (answer.status() != 101 || !server) {
      // The native service's refusal, written as any response is.
      const unsigned status = answer.status();
      answer.set_content_length(static_cast<std::int64_t>(refusal.size()));
      ClientSink<Stream> sink(stream, version, false, false, request_id, idle_timeout, metrics);
      try {
        co_await sink.head(answer);
        co_await sink.body(refusal);
        const Trailers none;
        co_await sink.end(none);
      } catch (const ExchangeError&) {
        // The client went away: nothing more is owed.
      }
      co_return status;
    }

    const std::string subprotocol(policy::header_value(answer.headers(), "sec-websocket-protocol"));
    websocket::stream<Stream> ws(std::move(stream));
    upgraded = true;
    net::configure_ws(ws, client_opts);
    ws.set_option(websocket::stream_base::decorator([subprotocol, request_id](websocket::response_type& res) {
      if (!subprotocol.empty()) res.set(http::field::sec_websocket_protocol, subprotocol);
      res.set("X-Request-Id", request_id);
      res.set(http::field::server, "postern-edge");
    }));
    auto [aec] = co_await ws.async_accept(req, use_nothrow);
    if (aec) {
      POSTERN_LOG(info, "websocket client handshake failed").kv("request_id", request_id).kv("error", aec.message());
      const auto bye = net::WsMessage::close(1001, "client handshake failed");
      co_await server->write(bye);
      if (tunnel) co_await tunnel->close();
      co_return 400;
    }
    // The session runs on in a coroutine of its own, so that the HTTP
    // connection's coroutines (request parser, exchange state: about 10 KiB)
    // end now rather than stay suspended under it for its whole life.
    policy::WsSessionInfo info{request_id, route.api, identity.application, client_ip, policy::log_path(req.target()),
                               subprotocol, "edge"};
    begin_in_flight();  // until the session ends: a drain waits for it
    asio::co_spawn(ex,
                   ws_session(std::move(ws), std::move(tunnel), std::move(direct), pol, std::move(info),
                              policy::Decisions(decisions), std::string(req.method_string()), std::move(keep)),
                   [this](std::exception_ptr e) {
                     log_session_failure(e);
                     end_in_flight();
                   });
    co_return 0;
  }

  // An open WebSocket session, relayed until either side closes; then the
  // exchange is recorded as any other (status 101).
  template <class Stream>
  asio::awaitable<void> ws_session(websocket::stream<Stream> ws, std::unique_ptr<WsTunnel> tunnel,
                                   net::HttpClient::WsUpgrade direct, const pv1::Policies* pol,
                                   policy::WsSessionInfo info, policy::Decisions decisions, std::string method,
                                   WsKeep keep) {
    net::BeastWsPort<Stream> client(std::move(ws));
    net::WsPort& server = tunnel ? tunnel->port() : *direct.port;
    policy::WsSessionPolicies hooks(pol, std::move(info), *invocations, &transforms);
    const policy::WsSessionInfo& info_ref = hooks.info();
    const std::string &api = info_ref.api, &request_id = info_ref.request_id, &client_ip = info_ref.client_ip,
                      &path = info_ref.path, &application = info_ref.application,
                      &subprotocol = info_ref.subprotocol;
    auto& bytes = metrics.ws_bytes;
    net::WsRelay session(ex, client, server, &hooks,
                         policy::WsSessionPolicies::relay_options(
                             pol, bytes.Add({{"api", api}, {"direction", "client_to_server"}}),
                             bytes.Add({{"api", api}, {"direction", "server_to_client"}})));
    hooks.opened();
    POSTERN_LOG(info, "websocket open").kv("request_id", request_id).kv("api", api).kv("subprotocol", subprotocol);
    metrics.ws_sessions.Increment();
    co_await ws_sessions.run(session);
    metrics.ws_sessions.Decrement();
    const auto& st = session.stats();
    metrics.ws_messages.Add({{"api", api}, {"direction", "client_to_server"}})
        .Increment(static_cast<double>(st.messages[0]));
    metrics.ws_messages.Add({{"api", api}, {"direction", "server_to_client"}})
        .Increment(static_cast<double>(st.messages[1]));
    // What the client was sent: the far side's close passed on, or ours.
    const std::uint16_t client_got = st.closed_by == "gateway" ? st.gateway_close_code
                                     : st.closed_by == "server" ? net::forwardable_close_code(st.server_close_code)
                                                                : st.client_close_code;
    metrics.ws_sessions_total.Add({{"api", api}, {"close_code", std::to_string(client_got)}}).Increment();
    if (tunnel) co_await tunnel->close();
    hooks.closed(st, decisions);
    POSTERN_LOG(info, "websocket closed")
        .kv("request_id", request_id)
        .kv("api", api)
        .kv("closed_by", st.closed_by)
        .kv("client_close", static_cast<unsigned>(st.client_close_code))
        .kv("server_close", static_cast<unsigned>(st.server_close_code))
        .kv("messages_in", st.messages[0])
        .kv("messages_out", st.messages[1]);
    finish_exchange(keep.started, 101, api, decisions, request_id, client_ip, method, path, application);
  }

  // A response a policy decided on: head and problem+json body.
  template <class Stream>
  asio::awaitable<void> write_rejection(Stream& stream, unsigned version, const policy::Verdict& verdict,
                                        const std::string& request_id, bool keep_alive) {
    std::string body;
    const auto h = policy::rejection(verdict, request_id, body);
    http::response<http::string_body> res;
    res.version(version);
    res.result(h.status());
    for (const auto& f : h.headers()) res.insert(f.name(), f.value());
    res.set("X-Request-Id", request_id);
    res.keep_alive(keep_alive);
    res.body() = std::move(body);
    res.prepare_payload();
    beast::get_lowest_layer(stream).expires_after(10s);
    auto [ec, n] = co_await http::async_write(stream, res, use_nothrow);
    (void)ec;
  }

  // ------------------------------------------------------------ drain

  asio::awaitable<void> drain() {
    draining = true;
    relay->stop_watch();
    std::size_t backlog = 0;
    for (auto& l : listeners) {
      backlog += accept_backlog(l);
      boost::system::error_code ec;
      l.acceptor->close(ec);
    }
    auto closers = std::move(idle_connections);
    idle_connections.clear();
    for (auto& [_, close] : closers) close();
    // New connections get a moment for their first request; then the silent
    // ones are closed like idle ones.
    if (!co_await fresh_event->wait_for(kDrainFirstRequestGrace)) {
      auto silent = std::move(fresh_connections);
      fresh_connections.clear();
      for (auto& [_, close] : silent) close();
    }
    if (backlog > 0) POSTERN_LOG(info, "accepted connections waiting at drain").kv("connections", backlog);
    ws_sessions.stop_all(1001, "server draining");
    co_await idle_event->wait_for(drain_timeout);
    POSTERN_LOG(info, "edge drained").kv("in_flight", static_cast<std::uint64_t>(in_flight));
  }
};

EdgeServer::EdgeServer(asio::io_context& ioc, config::v1::EdgeConfig config,
                       std::shared_ptr<prometheus::Registry> metrics)
    : impl_(std::make_unique<Impl>(ioc, std::move(config), std::move(metrics))) {}
EdgeServer::~EdgeServer() = default;
void EdgeServer::start() { impl_->start(); }
asio::awaitable<void> EdgeServer::drain() { return impl_->drain(); }
bool EdgeServer::ready() const { return impl_->config_received; }

}  // namespace postern::edge
