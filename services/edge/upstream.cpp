#include "edge/upstream.hpp"

#include "edge/relay_client.hpp"

namespace postern::edge {

namespace tv1 = tunnel::v1;

namespace {

// A DMZ-local service's answer to an upgrade; the session's port goes with
// it.
class DirectWs final : public WsUpstream {
 public:
  explicit DirectWs(net::HttpClient::WsUpgrade up) : up_(std::move(up)) {}
  const tv1::ResponseHead& head() const override { return up_.head; }
  const std::string& body() const override { return up_.body; }
  net::WsPort* port() override { return up_.port.get(); }
  asio::awaitable<void> close() override { co_return; }

 private:
  net::HttpClient::WsUpgrade up_;
};

}  // namespace

asio::awaitable<void> TunnelUpstream::invoke(const tv1::RequestHead& head, BodySource& body, ResponseSink& sink,
                                             std::chrono::milliseconds head_timeout) {
  co_await relay_.invoke(head, body, sink, head_timeout);
}

asio::awaitable<std::unique_ptr<WsUpstream>> TunnelUpstream::open_websocket(const tv1::RequestHead& head,
                                                                            const net::WsStreamOptions& options) {
  std::unique_ptr<WsUpstream> tunnel =
      co_await relay_.open_websocket(head, options.handshake_timeout, options.max_message_bytes);
  co_return tunnel;
}

asio::awaitable<void> DirectUpstream::invoke(const tv1::RequestHead& head, BodySource& body, ResponseSink& sink,
                                             std::chrono::milliseconds head_timeout) {
  co_await http_.exchange(origin_, head, body, sink, head_timeout);
}

asio::awaitable<std::unique_ptr<WsUpstream>> DirectUpstream::open_websocket(const tv1::RequestHead& head,
                                                                            const net::WsStreamOptions& options) {
  auto up = co_await http_.websocket(origin_, head, options);
  co_return std::make_unique<DirectWs>(std::move(up));
}

policy::RewriteRules DirectUpstream::rewrite_rules(const Route& route) const {
  if (!route.matched) return {.off = true};
  return policy::RewriteRules::of(*route.matched, origin_.tls, origin_.host, origin_.port, origin_.base_path, "");
}

Upstream& Upstreams::of(const Route& route) {
  if (route.kind == Route::Kind::reverse_invoke) return tunnel_;
  const bool preserve_host = route.matched && route.matched->def && route.matched->def->preserve_host();
  const std::string key = route.url + '\n' + route.ca_file + (preserve_host ? "\nhost" : "");
  auto it = direct_.find(key);
  if (it == direct_.end()) {
    try {
      auto origin = net::Origin::parse(route.url, route.ca_file);
      origin.preserve_host = preserve_host;
      it = direct_.try_emplace(key, http_, std::move(origin)).first;
    } catch (const std::exception& e) {
      throw ExchangeError(tv1::ERROR_CODE_UPSTREAM_UNREACHABLE, "API '" + route.api + "': " + e.what());
    }
  }
  return it->second;
}

}  // namespace postern::edge
