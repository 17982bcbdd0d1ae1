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

/// Sets `headers` on a response head (replacing the native service's
/// fields of those names; Vary is added to).
void set_cors_headers(const CorsHeaders& headers, tunnel::v1::ResponseHead& head);

/// A ResponseSink that sets `headers` on the head and passes everything on.
class HeaderAddingSink final : public HeadEditingSink {
 public:
  HeaderAddingSink(ResponseSink& next, const CorsHeaders& headers) : HeadEditingSink(next), headers_(headers) {}

 private:
  void edit(tunnel::v1::ResponseHead& head) override { set_cors_headers(headers_, head); }
  const CorsHeaders& headers_;
};

}  // namespace postern::policy
