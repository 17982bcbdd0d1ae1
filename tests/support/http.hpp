#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

/// HTTP clients for integration tests: real curl as a subprocess, raw bytes
/// over a socket for malformed requests, and a Prometheus text parser.
/// All calls are blocking and bounded by their timeouts; all are thread-safe.
namespace postern::testing {

/// What one curl run produced.
struct CurlResult {
  int exit_code = -1;         ///< curl's exit status (0 = transfer OK; 28 = timeout; 7 = cannot connect)
  int status = 0;             ///< %{http_code} of the last response; 0 if none
  std::string headers;        ///< everything curl -D wrote: every response head (1xx, redirects, final)
  std::string body;           ///< the body, unless it went to a file
  std::string stderr_text;    ///< curl's stderr (-sS: only error messages, or -v output)

  /// Value of header `name` (case-insensitive) in the LAST response head of
  /// `headers`, trimmed; the first one if repeated; empty if absent.
  std::string header(std::string_view name) const;
  /// Every value of header `name` in the last response head, in order.
  std::vector<std::string> header_values(std::string_view name) const;
};

/// Runs `curl -q -sS --max-time T -D <tmp> -o <tmp or body_path> -w %{http_code} <args...>`
/// (no ~/.curlrc, proxy variables removed from its environment) and collects
/// the result. `args` hold the URL and any further options; they must not set
/// -o, -D or -w. With a non-empty `body_path` the body goes to that file and
/// CurlResult::body stays empty (for large downloads).
/// Throws std::runtime_error only if curl cannot be started.
CurlResult curl(const std::vector<std::string>& args, std::chrono::seconds max_time = std::chrono::seconds(60),
                const std::string& body_path = "");

/// Connects to 127.0.0.1:port, sends `request` verbatim, and reads until the
/// peer closes, resets, or `timeout` (for the whole exchange) passes. Returns
/// the bytes received; empty if the connect failed. For malformed-request tests.
std::string raw_exchange(std::uint16_t port, std::string_view request,
                         std::chrono::milliseconds timeout = std::chrono::seconds(5));

/// One HTTP/1.x response taken apart.
struct RawResponse {
  int status = 0;         ///< 0 if there was no parsable status line
  std::string head;       ///< status line and header lines, without the blank line
  std::string body;       ///< de-chunked if Transfer-Encoding: chunked; cut at Content-Length
  /// First value of header `name` (case-insensitive), trimmed; empty if absent.
  std::string header(std::string_view name) const;
};

/// Parses the first final (non-1xx) response in `raw`, e.g. raw_exchange()'s result.
RawResponse parse_response(std::string_view raw);

/// Sum of all samples of metric `name` in the Prometheus text `exposition`
/// whose labels include every given label=value (other labels may be present).
/// NaN samples are skipped; 0 if none matches. For histograms, name the series
/// itself: "x_bucket" (with {"le","0.5"}), "x_sum", "x_count".
double metric_value(const std::string& exposition, const std::string& name,
                    const std::map<std::string, std::string>& labels = {});

/// GETs http://127.0.0.1:port/metrics over a raw socket and returns the body.
/// Throws std::runtime_error if the response is missing or not 200.
std::string scrape(std::uint16_t port);

}  // namespace postern::testing
