#pragma once
// Log Invocation: one JSON record per exchange, to stdout and a file sink,
// plus the body/response wrappers that enforce body limits and capture
// payloads on the way through without buffering the stream (except where
// the JSON depth rule must see the whole body before it is forwarded).

#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "common/exchange.hpp"
#include "common/policy/catalog.hpp"
#include "common/policy/engine.hpp"

namespace postern::policy {

/// The first bytes of a body, as kept for the log.
struct Payload {
  std::string data;
  std::uint64_t total = 0;  ///< bytes seen in all
  bool truncated = false;
};

struct InvocationRecord {
  std::string request_id, api, application, client_ip, method, path;
  std::string trace_id;
  std::string enforced_by;  ///< "edge" or "connector"
  std::string error;        ///< exchange error slug, if any
  unsigned status = 0;
  std::uint64_t request_bytes = 0, response_bytes = 0;
  /// Milliseconds: the whole exchange at this hop; until the response head
  /// arrived from the next hop; the native service alone (-1: unknown).
  double total_ms = 0, upstream_ms = -1, native_ms = -1;
  Decisions decisions;
  std::optional<Payload> request_payload, response_payload;
};

/// JSON record building: `"key":"value"` (escaped) and `"key":<json>`,
/// each appended with a comma when `out` is not empty.
void json_member(std::string& out, std::string_view key, std::string_view value);
void json_member_raw(std::string& out, std::string_view key, std::string_view json);
/// [{"policy","outcome","reason"}, ...]
std::string decisions_json(const Decisions& decisions);

/// {"bytes","truncated","encoding","data"}: gzip+base64 when `compress`,
/// else text if valid UTF-8, else base64.
std::string payload_json(const Payload& p, bool compress);

/// Whether the API's frequency setting wants a record for this outcome.
bool should_log(const pv1::LogInvocation& li, unsigned status, bool failed);

/// Bytes of each payload Log Invocation keeps for an API's policies (0: not
/// stored; both 0 when `pol` is null or has no log_invocation).
struct CaptureLimits {
  std::size_t request = 0, response = 0;
};
CaptureLimits capture_limits(const pv1::Policies* pol);

/// The record's JSON members (no braces). Payloads are gzip+base64 when
/// `compress`, else text if valid UTF-8, else base64.
std::string invocation_fields(const InvocationRecord& r, bool compress);

/// Writes records to stdout (as log records with msg "invocation") and,
/// when a path is given, appends them to that file. Single-threaded.
class InvocationLog {
 public:
  /// Throws std::runtime_error naming the path if it cannot be opened.
  explicit InvocationLog(const std::string& path);
  ~InvocationLog();
  void write(const InvocationRecord& r, bool compress);
  /// A record from its JSON members (no braces), e.g. a WebSocket event.
  void write_fields(const std::string& fields);

 private:
  std::FILE* file_ = nullptr;
};

/// A request body under threat protection and Log Invocation: enforces the
/// body limit while streaming (PAYLOAD_TOO_LARGE), keeps the first bytes
/// for the log, and for the JSON depth rule reads the body whole first.
class PolicedBody final : public BodySource {
 public:
  PolicedBody(BodySource& inner, const ThreatRules& rules, bool json, std::size_t capture_bytes);
  /// JSON depth rule: reads the whole body (bounded) before anything is
  /// forwarded. Returns a refusal verdict (400/413) or an allowed one.
  asio::awaitable<Verdict> prefetch(Decisions& decisions);
  bool wants_prefetch() const;
  asio::awaitable<bool> next(std::string_view& chunk) override;
  /// The inner body's trailers, less what `api`'s policies take from a head
  /// (set by filter_trailers_for: the API key field, transform removals).
  const Trailers& trailers() const override;
  /// The API whose policies this body's trailers answer to (null: none).
  void filter_trailers_for(const CompiledApi* api) { trailer_api_ = api; }

  std::uint64_t bytes() const { return total_; }
  std::optional<Payload> payload() const;
  /// Set when the body limit was crossed in report-only mode.
  bool reported_over_limit() const { return reported_; }

 private:
  BodySource& inner_;
  const ThreatRules& rules_;
  bool json_;
  std::size_t capture_;
  Payload captured_;
  std::uint64_t total_ = 0;
  bool reported_ = false;
  std::string prefetched_;
  bool prefetched_done_ = false;
  bool served_prefetch_ = false;
  const CompiledApi* trailer_api_ = nullptr;
  mutable Trailers filtered_;
  void account(std::string_view chunk);
};

/// A response on its way back: applies the response transformation to the
/// head, counts bytes, keeps the first bytes for the log.
class PolicedSink final : public ResponseSink {
 public:
  PolicedSink(ResponseSink& inner, const pv1::Transform* transform, std::size_t capture_bytes);
  asio::awaitable<void> head(tunnel::v1::ResponseHead& head) override;
  asio::awaitable<void> body(std::string_view chunk) override;
  asio::awaitable<void> end(const Trailers& trailers) override;
  asio::awaitable<void> idle() override;

  /// Connector: stamp the head with the native service's time to the head
  /// (measured from `start`) and the application identified.
  void stamp_native(std::chrono::steady_clock::time_point start, std::string application) {
    native_start_ = start;
    application_ = std::move(application);
  }

  /// Headers the policies set on the response (RateLimit-*), replacing
  /// any the service sent by those names. Kept by the caller.
  void set_headers(const std::vector<std::pair<std::string, std::string>>* headers) { extra_ = headers; }

  unsigned status() const { return status_; }
  std::uint64_t bytes() const { return total_; }
  std::optional<Payload> payload() const;
  /// From the head: the native service's time to the response head (0: unknown).
  std::uint64_t native_us() const { return native_us_; }
  std::chrono::steady_clock::time_point head_at() const { return head_at_; }

 private:
  ResponseSink& inner_;
  const pv1::Transform* transform_;
  std::size_t capture_;
  Payload captured_;
  std::uint64_t total_ = 0;
  unsigned status_ = 0;
  std::uint64_t native_us_ = 0;
  std::chrono::steady_clock::time_point head_at_{};
  std::optional<std::chrono::steady_clock::time_point> native_start_;
  std::string application_;
  const std::vector<std::pair<std::string, std::string>>* extra_ = nullptr;
};

/// The record for one exchange as far as every enforcement point fills it
/// alike: status and error from the outcome; bytes and stored payloads from
/// the policed body and sink; native time from the response head. Nothing
/// when the API's frequency setting does not want this outcome. The caller
/// adds who, what and when.
std::optional<InvocationRecord> exchange_record(const pv1::LogInvocation& li, const PolicedBody& body,
                                                const PolicedSink& sink, const std::optional<ExchangeError>& failure);

/// True if a Content-Type names JSON (application/json, application/*+json).
bool is_json_content_type(std::string_view content_type);

}  // namespace postern::policy
