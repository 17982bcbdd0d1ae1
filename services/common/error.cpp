#include "common/error.hpp"

#include <algorithm>

#include "common/observability/log.hpp"

namespace postern {

using tunnel::v1::ErrorCode;

int http_status(ErrorCode code) {
  switch (code) {
    case tunnel::v1::ERROR_CODE_NO_CONNECTOR:
    case tunnel::v1::ERROR_CODE_NO_CAPACITY:
    case tunnel::v1::ERROR_CODE_DRAINING: return 503;
    case tunnel::v1::ERROR_CODE_UPSTREAM_UNREACHABLE:
    case tunnel::v1::ERROR_CODE_UPSTREAM_PROTOCOL:
    case tunnel::v1::ERROR_CODE_CONNECTOR_LOST:
    case tunnel::v1::ERROR_CODE_UNKNOWN_ALIAS: return 502;
    case tunnel::v1::ERROR_CODE_UPSTREAM_TIMEOUT: return 504;
    case tunnel::v1::ERROR_CODE_BAD_REQUEST: return 400;
    case tunnel::v1::ERROR_CODE_CLIENT_GONE: return 499;
    case tunnel::v1::ERROR_CODE_PAYLOAD_TOO_LARGE: return 413;
    default: return 500;
  }
}

std::string_view proxy_status_error(ErrorCode code) {
  switch (code) {
    case tunnel::v1::ERROR_CODE_NO_CONNECTOR:
    case tunnel::v1::ERROR_CODE_NO_CAPACITY:
    case tunnel::v1::ERROR_CODE_DRAINING: return "destination_unavailable";
    case tunnel::v1::ERROR_CODE_UPSTREAM_UNREACHABLE: return "connection_refused";
    case tunnel::v1::ERROR_CODE_UPSTREAM_PROTOCOL: return "http_protocol_error";
    case tunnel::v1::ERROR_CODE_CONNECTOR_LOST: return "connection_terminated";
    case tunnel::v1::ERROR_CODE_UNKNOWN_ALIAS: return "destination_not_found";
    case tunnel::v1::ERROR_CODE_UPSTREAM_TIMEOUT: return "http_response_timeout";
    case tunnel::v1::ERROR_CODE_BAD_REQUEST: return "http_request_error";
    case tunnel::v1::ERROR_CODE_PAYLOAD_TOO_LARGE: return "http_request_error";
    default: return "proxy_internal_error";
  }
}

std::string_view error_title(ErrorCode code) {
  switch (code) {
    case tunnel::v1::ERROR_CODE_NO_CONNECTOR: return "No connector serves this API";
    case tunnel::v1::ERROR_CODE_NO_CAPACITY: return "No connector capacity";
    case tunnel::v1::ERROR_CODE_DRAINING: return "Gateway draining";
    case tunnel::v1::ERROR_CODE_UPSTREAM_UNREACHABLE: return "Native service unreachable";
    case tunnel::v1::ERROR_CODE_UPSTREAM_PROTOCOL: return "Native service protocol error";
    case tunnel::v1::ERROR_CODE_CONNECTOR_LOST: return "Connector lost";
    case tunnel::v1::ERROR_CODE_UNKNOWN_ALIAS: return "No native service for this API";
    case tunnel::v1::ERROR_CODE_UPSTREAM_TIMEOUT: return "Upstream timeout";
    case tunnel::v1::ERROR_CODE_BAD_REQUEST: return "Bad request";
    case tunnel::v1::ERROR_CODE_CLIENT_GONE: return "Client closed request";
    case tunnel::v1::ERROR_CODE_PAYLOAD_TOO_LARGE: return "Content Too Large";
    default: return "Internal error";
  }
}

std::string error_label(ErrorCode code) {
  std::string label(error_slug(code));
  std::replace(label.begin(), label.end(), '-', '_');
  return label;
}

std::string_view error_slug(ErrorCode code) {
  switch (code) {
    case tunnel::v1::ERROR_CODE_NO_CONNECTOR: return "no-connector";
    case tunnel::v1::ERROR_CODE_NO_CAPACITY: return "no-capacity";
    case tunnel::v1::ERROR_CODE_DRAINING: return "draining";
    case tunnel::v1::ERROR_CODE_UPSTREAM_UNREACHABLE: return "upstream-unreachable";
    case tunnel::v1::ERROR_CODE_UPSTREAM_PROTOCOL: return "upstream-protocol";
    case tunnel::v1::ERROR_CODE_CONNECTOR_LOST: return "connector-lost";
    case tunnel::v1::ERROR_CODE_UNKNOWN_ALIAS: return "unknown-alias";
    case tunnel::v1::ERROR_CODE_UPSTREAM_TIMEOUT: return "upstream-timeout";
    case tunnel::v1::ERROR_CODE_BAD_REQUEST: return "bad-request";
    case tunnel::v1::ERROR_CODE_CLIENT_GONE: return "client-gone";
    case tunnel::v1::ERROR_CODE_PAYLOAD_TOO_LARGE: return "body-too-large";
    default: return "internal";
  }
}

int grpc_status(ErrorCode code) {
  // Values of grpc::StatusCode.
  switch (code) {
    case tunnel::v1::ERROR_CODE_NO_CONNECTOR:
    case tunnel::v1::ERROR_CODE_NO_CAPACITY:
    case tunnel::v1::ERROR_CODE_DRAINING:
    case tunnel::v1::ERROR_CODE_UPSTREAM_UNREACHABLE: return 14;  // UNAVAILABLE
    case tunnel::v1::ERROR_CODE_UPSTREAM_TIMEOUT: return 4;       // DEADLINE_EXCEEDED
    case tunnel::v1::ERROR_CODE_BAD_REQUEST: return 3;            // INVALID_ARGUMENT
    case tunnel::v1::ERROR_CODE_UNKNOWN_ALIAS: return 5;          // NOT_FOUND
    case tunnel::v1::ERROR_CODE_CONNECTOR_LOST: return 10;        // ABORTED
    case tunnel::v1::ERROR_CODE_CLIENT_GONE: return 1;            // CANCELLED
    case tunnel::v1::ERROR_CODE_PAYLOAD_TOO_LARGE: return 8;      // RESOURCE_EXHAUSTED
    default: return 13;                                           // INTERNAL
  }
}

std::string problem_json(ErrorCode code, std::string_view detail, std::string_view request_id,
                         std::string_view extra_name, std::string_view extra_value) {
  std::string out = "{\"type\":\"https://postern.dev/problems/";
  out += error_slug(code);
  out += "\",\"title\":\"";
  log::json_escape(out, error_title(code));
  out += "\",\"status\":";
  out += std::to_string(http_status(code));
  out += ",\"detail\":\"";
  log::json_escape(out, detail);
  out += '"';
  if (!extra_name.empty()) {
    out += ",\"";
    log::json_escape(out, extra_name);
    out += "\":\"";
    log::json_escape(out, extra_value);
    out += '"';
  }
  if (!request_id.empty()) {
    out += ",\"request_id\":\"";
    log::json_escape(out, request_id);
    out += '"';
  }
  out += "}\n";
  return out;
}

}  // namespace postern
