#pragma once
// One error vocabulary for every hop: a tunnel ErrorCode maps to an HTTP
// status, an RFC 9209 Proxy-Status error type and a gRPC status code.

#include <stdexcept>
#include <string>
#include <string_view>

#include "postern/tunnel/v1/tunnel.pb.h"

namespace postern {

using ErrorCode = tunnel::v1::ErrorCode;

/// An exchange failed. Thrown by upstream/downstream code, caught where an
/// error response can still be written (or the connection must be cut).
class ExchangeError : public std::runtime_error {
 public:
  ExchangeError(ErrorCode code, std::string message) : std::runtime_error(std::move(message)), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

int http_status(ErrorCode code);
/// RFC 9209 error type, e.g. "destination_unavailable".
std::string_view proxy_status_error(ErrorCode code);
/// Short human title for problem+json.
std::string_view error_title(ErrorCode code);
/// grpc::StatusCode value (as int, to keep gRPC headers out of here).
int grpc_status(ErrorCode code);
/// "no-connector", used in problem type URIs.
std::string_view error_slug(ErrorCode code);
/// "no_connector": the slug as a metric label value or log result
/// (snake_case, as every label value).
std::string error_label(ErrorCode code);

/// An RFC 9457 application/problem+json body.
std::string problem_json(ErrorCode code, std::string_view detail, std::string_view request_id,
                         std::string_view extra_name = {}, std::string_view extra_value = {});

}  // namespace postern
