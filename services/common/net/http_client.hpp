#pragma once
// HTTP/1.1 client for native services (connector) and DMZ-local upstreams
// (edge): keep-alive pool per origin, connect/read timeouts, https with CA
// and host name verification, bodies streamed both ways in chunks.

#include <chrono>
#include <memory>
#include <string>

#include "common/exchange.hpp"
#include "common/net/ws_relay.hpp"

namespace boost::asio::ssl {
class context;
}

namespace postern::net {

/// Where an alias (or a DMZ-local API) points: parsed from a URL once.
struct Origin {
  bool tls = false;
  std::string host;
  std::string port;
  /// Path prefix prepended to every target ("" or "/base", no trailing slash).
  std::string base_path;
  /// Built from ca_file; replaced when the bundle changes on disk (a
  /// connection keeps the context it began with).
  std::shared_ptr<boost::asio::ssl::context> tls_context;
  std::string ca_file;
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds read_timeout{60000};
  std::size_t max_idle = 32;
  /// Send the client's Host (the request's X-Forwarded-Host) instead of
  /// host[:port]: an API's preserve_host.
  bool preserve_host = false;
  /// What error messages call it.
  std::string peer = "native service";

  /// Parses http(s)://host[:port][/path] (ws:// and wss:// count as http://
  /// and https://). Throws std::invalid_argument naming
  /// what is wrong. TLS origins verify against `ca_file` (system CAs if empty).
  static Origin parse(std::string_view url, const std::string& ca_file = {});
  /// "http://host:port", the pool key.
  std::string key() const;
};

/// One per executor; not thread-safe.
class HttpClient {
 public:
  explicit HttpClient(asio::any_io_executor ex);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  /// Sends the request to `origin` (target appended to its base path),
  /// streaming `body`, and streams the response into `sink`. `head_timeout`
  /// bounds the wait for the response head (0: origin.read_timeout).
  /// Throws ExchangeError (UPSTREAM_*), or whatever body/sink throw.
  asio::awaitable<void> exchange(const Origin& origin, const tunnel::v1::RequestHead& head, BodySource& body,
                                 ResponseSink& sink, std::chrono::milliseconds head_timeout = {});

  /// Opens a WebSocket to `origin` for the upgrade in `head` (its headers,
  /// Origin and Sec-WebSocket-Protocol among them, go along). On a 101 the
  /// result holds the port and the native service's response head; on a
  /// refusal, its status, headers and body and no port. Throws ExchangeError
  /// (UPSTREAM_*) when the service cannot be reached.
  struct WsUpgrade {
    tunnel::v1::ResponseHead head;
    std::string body;
    std::unique_ptr<WsPort> port;
  };
  asio::awaitable<WsUpgrade> websocket(const Origin& origin, const tunnel::v1::RequestHead& head,
                                       const WsStreamOptions& options);

  /// Idle connections currently pooled, over all origins.
  std::size_t idle_connections() const;

 private:
  struct Pool;
  std::unique_ptr<Pool> pool_;
};

}  // namespace postern::net
