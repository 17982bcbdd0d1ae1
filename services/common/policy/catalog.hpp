#pragma once
// One compiled policy snapshot: the API route table, each API's policies in
// a form that is quick to apply, and the application index. Built once per
// snapshot at every hop (policy service, connector, edge); immutable after
// that, so a request holds a shared_ptr to the version it started with while
// a newer one is swapped in.

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/policy/ip_ranges.hpp"
#include "postern/policy/v1/policy.pb.h"

namespace postern::policy {

class Jwks;
namespace pv1 = ::postern::policy::v1;

/// A threat-protection rule after merging the API's rules over the global ones.
struct LimitRule {
  std::uint64_t max = 0;  ///< 0: off
  bool report_only = false;
};
struct IpRule {
  IpRanges ranges;
  bool on = false;
  bool report_only = false;
};
struct ThreatRules {
  LimitRule url_length, header_count, header_bytes, body_bytes, json_depth, ws_message_bytes;
  IpRule deny, allow;
};
/// No rule at all: before any snapshot, and at the connector (threat
/// protection is the edge's).
inline const ThreatRules kNoThreatRules{};

struct CompiledApi {
  const pv1::Api* def = nullptr;  ///< points into the catalog's snapshot
  std::string name;
  std::string base_path;  ///< no trailing slash ("/" for the root)
  bool reverse_invoke = true;
  std::string alias;   ///< reverse invoke: the registration alias
  std::string prefix;  ///< reverse invoke: path prefix on the native side ("" or "/x")
  std::string url;     ///< direct: the upstream URL (http(s)://, or ws(s):// for a websocket API)
  bool green = false;  ///< policies enforced by the connector
  bool websocket = false;  ///< type: websocket
  /// The routing endpoint's path ends with '/': a websocket API's context
  /// reaches the native path as written, with or without the client's
  /// trailing slash.
  bool trailing_slash = false;
  std::uint32_t timeout_ms = 0;
  ThreatRules threats;
  std::shared_ptr<const Jwks> jwks;  ///< when identify lists JWT
};

struct RouteMatch {
  const CompiledApi* api = nullptr;
  /// Origin-form target on the far side: the API's prefix + the rest + query.
  std::string target;
};

/// A problem found while compiling: the field path (`apis[2].routing`) and
/// what is wrong with it.
struct Issue {
  std::string path;
  std::string message;
};

class Catalog {
 public:
  /// Checks and compiles a snapshot. Every problem goes to `issues`; returns
  /// nullptr if there was any. Files are not read here: API keys must be
  /// hashes and JWKS inline (the policy service resolves key_file and
  /// jwks_file before publishing; see resolve_files()).
  static std::shared_ptr<const Catalog> compile(pv1::Snapshot snapshot, std::vector<Issue>& issues);

  const pv1::Snapshot& snapshot() const { return snapshot_; }
  std::uint64_t version() const { return snapshot_.version(); }
  const std::vector<CompiledApi>& apis() const { return apis_; }
  /// Global threat rules (before an API is known).
  const ThreatRules& threats() const { return threats_; }

  /// Longest base-path match on whole path segments.
  std::optional<RouteMatch> route(std::string_view target) const;
  const CompiledApi* api(std::string_view name) const;

  /// Application lookups; nullptr when none matches.
  const pv1::Application* application(std::string_view name) const;
  const pv1::Application* by_key_hash(std::string_view sha256_hex) const;
  const pv1::Application* by_ip(std::string_view ip) const;
  const pv1::Application* by_host(std::string_view host) const;
  const pv1::Application* by_jwt_subject(std::string_view subject) const;
  /// Basic credentials. Stored hashes are slow on purpose (PBKDF2), so each
  /// result is cached for the catalog's life (bounded): verify_basic() does
  /// the slow part (thread-safe: meant for a worker thread), and
  /// cached_basic() answers from the cache alone. A user name nobody has is
  /// `no_match` at once.
  enum class BasicResult { match, no_match, unchecked };
  BasicResult cached_basic(std::string_view user, std::string_view password, const pv1::Application*& app) const;
  void verify_basic(std::string_view user, std::string_view password) const;
  /// True if `app` lists API `api`.
  static bool allows(const pv1::Application& app, std::string_view api);

  /// Things compile() accepted but a user should hear of (an overlap
  /// allowed with allow_overlap), as "field.path: message".
  const std::vector<std::string>& warnings() const { return warnings_; }

 private:
  pv1::Snapshot snapshot_;
  std::vector<CompiledApi> apis_;
  std::vector<std::size_t> by_length_;  // indices into apis_, longest base path first
  ThreatRules threats_;
  std::map<std::string, const pv1::Application*, std::less<>> apps_, keys_, hosts_, subjects_;
  std::vector<std::pair<IpRanges, const pv1::Application*>> ip_apps_;
  std::vector<std::string> warnings_;
  // user -> (application, stored hash) for Basic credentials.
  std::multimap<std::string, std::pair<const pv1::Application*, std::string>, std::less<>> basic_users_;
  // Verified Basic results by a keyed hash of user and password (never the
  // password itself); nullptr: no match.
  struct BasicCache;
  std::shared_ptr<BasicCache> basic_cache_;
};

/// Policy service only: replaces each ApiKey.key_file with the SHA-256 of
/// the file's content (trailing newline stripped) and fills JwtRule.jwks
/// from jwks_file, paths relative to `base_dir`. Problems go to `issues`.
void resolve_files(pv1::PolicyConfig& config, const std::string& base_dir, std::vector<Issue>& issues);

/// Default base path: /gateway/{name}/{version} (version "1.0" if empty).
std::string default_base_path(const pv1::Api& api);

}  // namespace postern::policy
