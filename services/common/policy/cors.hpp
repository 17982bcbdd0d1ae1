#pragma once
// CORS at the edge (policy.proto, Cors): preflights answered there, and the
// allowance fields on the responses to an allowed origin. Pure logic.

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/exchange.hpp"

namespace postern::policy {

namespace v1 {
class Cors;
}

using CorsHeaders = std::vector<std::pair<std::string, std::string>>;

/// A preflight's answer: 204 with `headers`, or 403 with `problem` (what was
/// not allowed).
struct PreflightAnswer {
  int status = 204;
  CorsHeaders headers;
  std::string problem;
};

/// True for a CORS preflight: OPTIONS with Origin and
/// Access-Control-Request-Method.
bool is_preflight(std::string_view method, std::string_view origin, std::string_view request_method);

PreflightAnswer preflight(const v1::Cors& cors, std::string_view origin, std::string_view request_method,
                          std::string_view request_headers);

/// The fields for a response to a request from `origin` (empty when the
/// origin is not allowed, or there is none).
CorsHeaders response_headers(const v1::Cors& cors, std::string_view origin);

/// A ResponseSink that adds `headers` to the head and passes everything on.
class HeaderAddingSink final : public ResponseSink {
 public:
  HeaderAddingSink(ResponseSink& next, const CorsHeaders& headers) : next_(next), headers_(headers) {}
  asio::awaitable<void> head(tunnel::v1::ResponseHead& head) override;
  asio::awaitable<void> body(std::string_view chunk) override { co_await next_.body(chunk); }
  asio::awaitable<void> end(const Trailers& trailers) override { co_await next_.end(trailers); }
  asio::awaitable<void> idle() override { co_await next_.idle(); }

 private:
  ResponseSink& next_;
  const CorsHeaders& headers_;
};

}  // namespace postern::policy
