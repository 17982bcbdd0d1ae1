#pragma once
// Applying an API's policies to one request: threat protection, Identify &
// Authorize Application, throttling and header/query transformation. Pure
// logic on the tunnel's RequestHead/ResponseHead, so the edge (DMZ
// enforcement) and the connector (green enforcement) run the same code.
//
// Single-threaded: call from the service's executor.

#include <chrono>
#include <cstdint>
#include <list>
#include <map>
#include <unordered_map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/policy/catalog.hpp"
#include "postern/tunnel/v1/tunnel.pb.h"

namespace postern::policy {

/// One policy decision a request met, for the invocation log and metrics.
struct Decision {
  std::string policy;   ///< threat_protection | identify | throttling
  std::string outcome;  ///< allowed | rejected | reported (report-only rule)
  std::string reason;   ///< slug: "ok", "missing_credential", "rate_limited", ...
};
using Decisions = std::vector<Decision>;

/// The answer to a request a policy refused. status 0: allowed.
struct Verdict {
  unsigned status = 0;
  std::string policy;
  std::string reason;  ///< slug, also the metric label
  std::string detail;  ///< for the client and the log; never holds a credential
  /// For the client: on a refusal, with the refusal; once allowed, on the
  /// response (RateLimit-*).
  std::vector<std::pair<std::string, std::string>> headers;
  bool allowed() const { return status == 0; }

  /// A refusal with no extra headers.
  static Verdict refuse(unsigned status, std::string policy, std::string reason, std::string detail) {
    return {status, std::move(policy), std::move(reason), std::move(detail), {}};
  }
};

/// What threat protection needs to know about a request head.
struct RequestShape {
  std::size_t url_length = 0;
  std::size_t header_count = 0;
  std::size_t header_bytes = 0;
  std::optional<std::uint64_t> content_length;  ///< nullopt: chunked
  std::string client_ip;
};

/// URL length, header count/size, declared body size and IP lists.
Verdict check_threats(const ThreatRules& rules, const RequestShape& shape, Decisions& decisions);

/// Who a request was identified as.
struct Identity {
  std::string application;  ///< "" when anonymous or not identified
  bool anonymous = false;
};

/// Identify & Authorize Application for `api` (no-op when it has no identify
/// policy). Removes the API key (header and query parameter) from `head`
/// whatever the outcome. `host`: the Host the client asked for.
Verdict identify(const Catalog& catalog, const CompiledApi& api, tunnel::v1::RequestHead& head, std::string_view host,
                 std::chrono::system_clock::time_point now, Identity& identity, Decisions& decisions);

/// The user name and password of an `Authorization: Basic` value, or
/// nullopt when it is not one (bad base64, no ':').
std::optional<std::pair<std::string, std::string>> decode_basic(std::string_view authorization);

/// The Basic credentials identify() will need for `api` that `catalog` has
/// not checked yet (Catalog::verify_basic), or nullopt. Without a check
/// identify() answers 503 (Retry-After) for them: the caller runs the slow
/// check off its thread first (BasicVerifier).
std::optional<std::pair<std::string, std::string>> basic_to_check(const Catalog& catalog, const CompiledApi& api,
                                                                  const tunnel::v1::RequestHead& head);

/// Request-rate buckets and concurrency counts. Lives as long as the
/// process, across snapshot changes; counts are per replica.
class Limiter {
 public:
  using Clock = std::chrono::steady_clock;

  /// Concurrency slots taken by one exchange; released on destruction.
  class Hold {
   public:
    Hold() = default;
    Hold(Hold&&) noexcept;
    Hold& operator=(Hold&&) noexcept;
    ~Hold();
    /// Releases the slots now.
    void reset();

   private:
    friend class Limiter;
    Limiter* limiter_ = nullptr;
    std::vector<std::string> keys_;
  };

  /// Rate limits, then concurrency limits, of `api`. On success `hold`
  /// keeps the concurrency slots until it is destroyed.
  Verdict admit(const CompiledApi& api, const Identity& identity, std::string_view client_ip, Clock::time_point now,
                Hold& hold, Decisions& decisions);

  std::size_t in_use(const std::string& key) const;
  /// Rate-limit buckets held (bounded by kMaxBuckets).
  std::size_t buckets() const { return buckets_.size(); }
  static constexpr std::size_t kMaxBuckets = 100000;
  static constexpr std::chrono::minutes kIdleForget{10};

 private:
  struct Bucket;
  std::unordered_map<std::string, std::unique_ptr<Bucket>> buckets_;
  std::list<std::string> lru_;  // bucket keys, most recently used first
  std::map<std::string, std::uint32_t> in_use_;
  void release(const std::string& key);
  void forget_idle(Clock::time_point now);
  void forget(const std::string& key);

 public:
  Limiter();
  ~Limiter();
};

/// Header and query operations on the request head, header operations on
/// the response head.
void transform_request(const pv1::Transform& t, tunnel::v1::RequestHead& head);
void transform_response(const pv1::Transform& t, tunnel::v1::ResponseHead& head);

/// Request trailers for `api` (null: none) lose what its policies take from
/// the head: the API key header, and the fields the transform removes or
/// renames. (Forbidden names are gone already: net::trailers_after.)
void filter_request_trailers(const CompiledApi* api, google::protobuf::RepeatedPtrField<tunnel::v1::Header>& trailers);

/// The response for a refused request: head and problem+json body.
tunnel::v1::ResponseHead rejection(const Verdict& v, std::string_view request_id, std::string& body);

/// `target` with the query parameter `name` removed (every occurrence); the
/// removed value (percent-decoded, the first one) goes to `value`.
std::string remove_query_param(std::string_view target, std::string_view name, std::string* value = nullptr);

/// The first field `name` (case-insensitive) of a request or response
/// head's headers, or nullptr.
const tunnel::v1::Header* find_header(const google::protobuf::RepeatedPtrField<tunnel::v1::Header>& headers,
                                      std::string_view name);
/// Its value, or "" when there is none.
std::string_view header_value(const google::protobuf::RepeatedPtrField<tunnel::v1::Header>& headers,
                              std::string_view name);

/// The target with credentials (the API key query parameter) blanked, for logs.
std::string redact_target(std::string_view target, std::string_view key_param);

/// The path of `target` as logs show it: no query, and every path
/// parameter's value (";name=value", where a client may put an API key)
/// replaced by "REDACTED".
std::string log_path(std::string_view target);

}  // namespace postern::policy
