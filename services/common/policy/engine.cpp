#include "common/policy/engine.hpp"

#include <algorithm>
#include <cctype>

#include "common/config/yaml_proto.hpp"
#include "common/net/http_headers.hpp"
#include "common/observability/log.hpp"
#include "common/policy/codec.hpp"
#include "common/policy/jwt.hpp"
#include "common/policy/token_bucket.hpp"

namespace postern::policy {

namespace tv1 = tunnel::v1;
using namespace std::chrono_literals;

namespace {

constexpr std::string_view kDefaultKeyName = "x-Gateway-APIKey";

// Applies one limit: enforce -> a verdict, report-only -> a decision only.
bool over(const LimitRule& rule, std::uint64_t value, const char* reason, Decisions& d) {
  if (rule.max == 0 || value <= rule.max) return false;
  if (rule.report_only) {
    d.push_back({"threat_protection", "reported", reason});
    return false;
  }
  return true;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 && hex_value(s[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
      i += 2;
    } else if (s[i] == '+') {
      out += ' ';
    } else {
      out += s[i];
    }
  }
  return out;
}

struct QueryParam {
  std::string raw_name, raw_value;
  bool has_value = false;
};

std::vector<QueryParam> split_query(std::string_view query) {
  std::vector<QueryParam> out;
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view part = query.substr(0, amp);
    if (!part.empty()) {
      QueryParam p;
      const auto eq = part.find('=');
      p.raw_name = std::string(part.substr(0, eq));
      if (eq != std::string_view::npos) {
        p.raw_value = std::string(part.substr(eq + 1));
        p.has_value = true;
      }
      out.push_back(std::move(p));
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return out;
}

std::string join_target(std::string_view path, const std::vector<QueryParam>& params) {
  std::string out(path);
  char sep = '?';
  for (const auto& p : params) {
    out += sep;
    sep = '&';
    out += p.raw_name;
    if (p.has_value) {
      out += '=';
      out += p.raw_value;
    }
  }
  return out;
}

template <class Headers>
void remove_headers(Headers& headers, std::string_view name) {
  for (int i = headers.size() - 1; i >= 0; --i) {
    if (net::iequals(headers.Get(i).name(), name)) headers.DeleteSubrange(i, 1);
  }
}

template <class Headers>
void apply_header_ops(const pv1::FieldOps& ops, Headers& headers) {
  for (const auto& name : ops.remove()) remove_headers(headers, name);
  for (const auto& [from, to] : ops.rename()) {
    for (auto& h : headers) {
      if (net::iequals(h.name(), from)) h.set_name(to);
    }
  }
  for (const auto& [name, value] : ops.replace()) {
    for (auto& h : headers) {
      if (net::iequals(h.name(), name)) h.set_value(value);
    }
  }
  for (const auto& [name, value] : ops.add()) {
    auto* h = headers.Add();
    h->set_name(name);
    h->set_value(value);
  }
}

std::string realm_of(const pv1::Identify& id) { return id.realm().empty() ? "postern" : id.realm(); }

std::string quoted_param(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) out += c;
  }
  out += '"';
  return out;
}

// One WWW-Authenticate challenge per credential type the API accepts.
std::vector<std::pair<std::string, std::string>> challenges(const pv1::Identify& id, std::string_view jwt_error) {
  std::vector<std::pair<std::string, std::string>> out;
  const std::string realm = "realm=" + quoted_param(realm_of(id));
  bool credential = false;
  for (int t : id.identifiers()) {
    switch (t) {
      case pv1::IDENTIFIER_TYPE_API_KEY: {
        const std::string header = id.api_key_header().empty() ? std::string(kDefaultKeyName) : id.api_key_header();
        const std::string query = id.api_key_query().empty() ? std::string(kDefaultKeyName) : id.api_key_query();
        out.emplace_back("WWW-Authenticate",
                         "APIKey " + realm + ", header=" + quoted_param(header) + ", query=" + quoted_param(query));
        credential = true;
        break;
      }
      case pv1::IDENTIFIER_TYPE_JWT: {
        std::string v = "Bearer " + realm;
        if (!jwt_error.empty()) v += ", error=\"invalid_token\", error_description=" + quoted_param(jwt_error);
        out.emplace_back("WWW-Authenticate", v);
        credential = true;
        break;
      }
      case pv1::IDENTIFIER_TYPE_BASIC:
        out.emplace_back("WWW-Authenticate", "Basic " + realm + ", charset=\"UTF-8\"");
        credential = true;
        break;
      default:
        break;
    }
  }
  // IP and host identification have no credential to ask for; a 401 still
  // names the scheme that refused it.
  if (!credential) out.emplace_back("WWW-Authenticate", "Postern " + realm);
  return out;
}

enum class Found { absent, invalid, app };

struct Attempt {
  Found found = Found::absent;
  const pv1::Application* app = nullptr;
  std::string error;  // for invalid: safe to show
};

std::string strip_port(std::string_view host) {
  if (!host.empty() && host.front() == '[') {
    const auto end = host.find(']');
    return std::string(host.substr(1, end == std::string_view::npos ? std::string_view::npos : end - 1));
  }
  const auto colon = host.rfind(':');
  if (colon != std::string_view::npos && host.find(':') == colon) return std::string(host.substr(0, colon));
  return std::string(host);
}

}  // namespace

// ---------------------------------------------------------------- threats

Verdict check_threats(const ThreatRules& rules, const RequestShape& shape, Decisions& decisions) {
  auto done = [&](Verdict v) {
    decisions.push_back({"threat_protection", v.allowed() ? "allowed" : "rejected", v.allowed() ? "ok" : v.reason});
    return v;
  };
  if (rules.deny.on && rules.deny.ranges.contains(shape.client_ip)) {
    if (!rules.deny.report_only) {
      return done(Verdict::refuse(403, "threat_protection", "ip_denied", "client address " + shape.client_ip + " is denied"));
    }
    decisions.push_back({"threat_protection", "reported", "ip_denied"});
  }
  if (rules.allow.on && !rules.allow.ranges.contains(shape.client_ip)) {
    if (!rules.allow.report_only) {
      return done(Verdict::refuse(403, "threat_protection", "ip_not_allowed",
                         "client address " + shape.client_ip + " is not in the allow list"));
    }
    decisions.push_back({"threat_protection", "reported", "ip_not_allowed"});
  }
  if (over(rules.url_length, shape.url_length, "url_too_long", decisions)) {
    return done(Verdict::refuse(414, "threat_protection", "url_too_long",
                       "request target is " + std::to_string(shape.url_length) + " bytes; the limit is " +
                           std::to_string(rules.url_length.max)));
  }
  if (over(rules.header_count, shape.header_count, "too_many_headers", decisions)) {
    return done(Verdict::refuse(431, "threat_protection", "too_many_headers",
                       "request has " + std::to_string(shape.header_count) + " header fields; the limit is " +
                           std::to_string(rules.header_count.max)));
  }
  if (over(rules.header_bytes, shape.header_bytes, "headers_too_large", decisions)) {
    return done(Verdict::refuse(431, "threat_protection", "headers_too_large",
                       "request header fields are " + std::to_string(shape.header_bytes) +
                           " bytes; the limit is " + std::to_string(rules.header_bytes.max)));
  }
  if (shape.content_length && over(rules.body_bytes, *shape.content_length, "body_too_large", decisions)) {
    return done(Verdict::refuse(413, "threat_protection", "body_too_large",
                       "request body is " + std::to_string(*shape.content_length) + " bytes; the limit is " +
                           std::to_string(rules.body_bytes.max)));
  }
  return done(Verdict{});
}

// ---------------------------------------------------------------- identify

std::optional<std::pair<std::string, std::string>> decode_basic(std::string_view authorization) {
  if (authorization.size() <= 6 || !net::iequals(authorization.substr(0, 6), "basic ")) return std::nullopt;
  std::string_view b64 = authorization.substr(6);
  while (!b64.empty() && b64.front() == ' ') b64.remove_prefix(1);
  std::string decoded;
  try {
    decoded = base64_decode(b64);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  const auto colon = decoded.find(':');
  if (colon == std::string::npos) return std::nullopt;
  return std::make_pair(decoded.substr(0, colon), decoded.substr(colon + 1));
}

std::optional<std::pair<std::string, std::string>> basic_to_check(const Catalog& catalog, const CompiledApi& api,
                                                                  const tv1::RequestHead& head) {
  const auto& pol = api.def->policies();
  if (!pol.has_identify()) return std::nullopt;
  const auto& ids = pol.identify().identifiers();
  if (std::find(ids.begin(), ids.end(), pv1::IDENTIFIER_TYPE_BASIC) == ids.end()) return std::nullopt;
  const auto* auth = find_header(head.headers(), "authorization");
  if (!auth) return std::nullopt;
  auto creds = decode_basic(auth->value());
  const pv1::Application* app = nullptr;
  if (!creds || catalog.cached_basic(creds->first, creds->second, app) != Catalog::BasicResult::unchecked) {
    return std::nullopt;
  }
  return creds;
}

Verdict identify(const Catalog& catalog, const CompiledApi& api, tv1::RequestHead& head, std::string_view host,
                 std::chrono::system_clock::time_point now, Identity& identity, Decisions& decisions) {
  identity = {};
  const auto& pol = api.def->policies();
  if (!pol.has_identify()) return {};
  const auto& id = pol.identify();
  const std::string key_header = id.api_key_header().empty() ? std::string(kDefaultKeyName) : id.api_key_header();
  const std::string key_query = id.api_key_query().empty() ? std::string(kDefaultKeyName) : id.api_key_query();

  // The key never travels further, whatever happens next.
  std::string header_key, query_key;
  if (const auto* h = find_header(head.headers(), key_header)) header_key = h->value();
  remove_headers(*head.mutable_headers(), key_header);
  {
    std::string value;
    const std::string stripped = remove_query_param(head.target(), key_query, &value);
    if (stripped.size() != head.target().size()) {
      query_key = std::move(value);
      head.set_target(stripped);
    }
  }

  std::string jwt_error;
  bool password_busy = false;  // Basic credentials nobody could check yet
  std::vector<Attempt> attempts;
  for (int t : id.identifiers()) {
    Attempt a;
    switch (t) {
      case pv1::IDENTIFIER_TYPE_API_KEY: {
        const std::string& key = !header_key.empty() ? header_key : query_key;
        if (key.empty()) break;
        a.app = catalog.by_key_hash(sha256_hex(key));
        a.found = a.app ? Found::app : Found::invalid;
        if (!a.app) a.error = "unknown API key";
        break;
      }
      case pv1::IDENTIFIER_TYPE_IP:
        a.app = catalog.by_ip(head.client_ip());
        a.found = a.app ? Found::app : Found::absent;
        break;
      case pv1::IDENTIFIER_TYPE_HOST:
        a.app = catalog.by_host(strip_port(host));
        a.found = a.app ? Found::app : Found::absent;
        break;
      case pv1::IDENTIFIER_TYPE_JWT:
      case pv1::IDENTIFIER_TYPE_BASIC: {
        const auto* auth = find_header(head.headers(), "authorization");
        if (!auth) break;
        const std::string_view v = auth->value();
        const bool bearer = v.size() > 7 && net::iequals(v.substr(0, 7), "bearer ");
        const bool basic = v.size() > 6 && net::iequals(v.substr(0, 6), "basic ");
        if (t == pv1::IDENTIFIER_TYPE_JWT && bearer && api.jwks) {
          JwtExpectations ex;
          ex.issuer = id.jwt().issuer();
          ex.audiences.assign(id.jwt().audiences().begin(), id.jwt().audiences().end());
          ex.leeway = std::chrono::duration_cast<std::chrono::seconds>(config::duration_or(id.jwt().leeway(), 30s));
          if (!id.jwt().claim().empty()) ex.claim = id.jwt().claim();
          std::string_view token = v.substr(7);
          while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
          const auto r = verify_jwt(token, *api.jwks, ex, now);
          if (!r.ok) {
            a.found = Found::invalid;
            a.error = r.error;
            jwt_error = r.error;
          } else {
            a.app = catalog.by_jwt_subject(r.subject);
            a.found = a.app ? Found::app : Found::invalid;
            if (!a.app) {
              a.error = "token subject is not a known application";
              jwt_error = a.error;
            }
          }
        } else if (t == pv1::IDENTIFIER_TYPE_BASIC && basic) {
          const auto creds = decode_basic(v);
          if (!creds) {
            a.found = Found::invalid;
            a.error = "malformed Basic credentials";
          } else {
            switch (catalog.cached_basic(creds->first, creds->second, a.app)) {
              case Catalog::BasicResult::match:
                a.found = Found::app;
                break;
              case Catalog::BasicResult::no_match:
                a.found = Found::invalid;
                a.error = "unknown user name or password";
                break;
              case Catalog::BasicResult::unchecked:
                password_busy = true;
                break;
            }
          }
        }
        break;
      }
      default:
        break;
    }
    attempts.push_back(std::move(a));
  }

  const bool all = id.condition() == pv1::Identify::CONDITION_ALL;
  const pv1::Application* app = nullptr;
  std::string invalid;
  bool missing = false;
  for (const auto& a : attempts) {
    if (a.found == Found::invalid && invalid.empty()) invalid = a.error;
    if (a.found == Found::absent) missing = true;
    if (a.found == Found::app) {
      if (!app) {
        app = a.app;
      } else if (all && app != a.app) {
        invalid = "credentials identify different applications";
      }
    }
  }
  auto unauthorized = [&](std::string reason, std::string detail) {
    Verdict v = Verdict::refuse(401, "identify", std::move(reason), std::move(detail));
    v.headers = challenges(id, jwt_error);
    decisions.push_back({"identify", "rejected", v.reason});
    return v;
  };
  if (!invalid.empty()) return unauthorized("invalid_credential", invalid);
  if (password_busy && !app) {
    Verdict v = Verdict::refuse(503, "identify", "password_check_busy",
                                "too many password checks are under way; retry shortly");
    v.headers.emplace_back("Retry-After", "1");
    decisions.push_back({"identify", "rejected", v.reason});
    return v;
  }
  // "all": a request with some identifiers but not every one is refused;
  // one with none at all may still pass as anonymous.
  if (all && missing && app) {
    return unauthorized("missing_credential", "every one of the API's identifiers is required");
  }
  if (!app) {
    if (id.allow_anonymous()) {
      identity.anonymous = true;
      decisions.push_back({"identify", "allowed", "anonymous"});
      return {};
    }
    return unauthorized("missing_credential", "no credential identifies an application for API '" + api.name + "'");
  }
  identity.application = app->name();
  if (!Catalog::allows(*app, api.name)) {
    decisions.push_back({"identify", "rejected", "not_authorized"});
    return Verdict::refuse(403, "identify", "not_authorized",
                  "application '" + app->name() + "' may not use API '" + api.name + "'");
  }
  decisions.push_back({"identify", "allowed", "ok"});
  return {};
}

void filter_request_trailers(const CompiledApi* api, google::protobuf::RepeatedPtrField<tv1::Header>& trailers) {
  if (!api || trailers.empty()) return;
  const auto& pol = api->def->policies();
  if (pol.has_identify()) {
    const auto& id = pol.identify();
    remove_headers(trailers, id.api_key_header().empty() ? kDefaultKeyName : std::string_view(id.api_key_header()));
  }
  const auto& ops = pol.transform().request_headers();
  for (const auto& name : ops.remove()) remove_headers(trailers, name);
  for (const auto& [from, to] : ops.rename()) remove_headers(trailers, from);
}

// ---------------------------------------------------------------- throttling

struct Limiter::Bucket {
  TokenBucket bucket;
  std::uint32_t rate;
  Clock::duration per;
  std::uint32_t burst;
  Clock::time_point last;
  std::list<std::string>::iterator pos;  // in lru_
};

// The least recently used buckets go first: those idle past kIdleForget are
// full again and forgetting them changes nothing; beyond kMaxBuckets the
// oldest is forgotten whatever its state, so the table stays bounded. Each
// key is added once and removed once: O(1) per request, amortised.
void Limiter::forget_idle(Clock::time_point now) {
  while (!lru_.empty() && now - buckets_.at(lru_.back())->last > kIdleForget) forget(lru_.back());
}

void Limiter::forget(const std::string& key) {
  const auto it = buckets_.find(key);
  if (it == buckets_.end()) return;
  lru_.erase(it->second->pos);
  buckets_.erase(it);
}

Limiter::Limiter() = default;
Limiter::~Limiter() = default;

Limiter::Hold::Hold(Hold&& o) noexcept : limiter_(o.limiter_), keys_(std::move(o.keys_)) { o.limiter_ = nullptr; }
Limiter::Hold& Limiter::Hold::operator=(Hold&& o) noexcept {
  if (this != &o) {
    reset();
    limiter_ = o.limiter_;
    keys_ = std::move(o.keys_);
    o.limiter_ = nullptr;
    o.keys_.clear();
  }
  return *this;
}
Limiter::Hold::~Hold() { reset(); }
void Limiter::Hold::reset() {
  if (limiter_) {
    for (const auto& k : keys_) limiter_->release(k);
  }
  keys_.clear();
  limiter_ = nullptr;
}

void Limiter::release(const std::string& key) {
  auto it = in_use_.find(key);
  if (it == in_use_.end()) return;
  if (--it->second == 0) in_use_.erase(it);
}

std::size_t Limiter::in_use(const std::string& key) const {
  auto it = in_use_.find(key);
  return it == in_use_.end() ? 0 : it->second;
}

namespace {

std::string throttle_key(const std::string& api, const char* kind, int index, pv1::ThrottleKey key,
                         const Identity& identity, std::string_view ip) {
  std::string k = api + '|' + kind + std::to_string(index) + '|';
  switch (key) {
    case pv1::THROTTLE_KEY_APPLICATION:
      k += "app:" + (identity.application.empty() ? std::string("(anonymous)") : identity.application);
      break;
    case pv1::THROTTLE_KEY_IP:
      k += "ip:";
      k += ip;
      break;
    default:
      k += "api";
      break;
  }
  return k;
}

const char* key_label(pv1::ThrottleKey key) {
  switch (key) {
    case pv1::THROTTLE_KEY_APPLICATION: return "application";
    case pv1::THROTTLE_KEY_IP: return "client address";
    default: return "API";
  }
}

}  // namespace

Verdict Limiter::admit(const CompiledApi& api, const Identity& identity, std::string_view client_ip,
                       Clock::time_point now, Hold& hold, Decisions& decisions) {
  const auto& th = api.def->policies().throttling();
  if (th.rate_size() == 0 && th.concurrency_size() == 0) return {};
  forget_idle(now);
  // RateLimit-* (draft-ietf-httpapi-ratelimit-headers) on every response
  // of a rate-limited API: the rule closest to refusing.
  Verdict allowed;
  std::optional<std::uint32_t> least;
  for (int i = 0; i < th.rate_size(); ++i) {
    const auto& r = th.rate(i);
    const auto per = std::chrono::duration_cast<Clock::duration>(config::duration_or(r.per(), 1000ms));
    const std::uint32_t burst = r.burst() ? r.burst() : r.requests();
    const std::string key = throttle_key(api.name, "rate", i, r.key(), identity, client_ip);
    auto& b = buckets_[key];
    if (!b) {
      lru_.push_front(key);
      b = std::make_unique<Bucket>(
          Bucket{TokenBucket(r.requests(), per, burst, now), r.requests(), per, burst, now, lru_.begin()});
      if (buckets_.size() > kMaxBuckets) forget(lru_.back());
    } else if (b->rate != r.requests() || b->per != per || b->burst != burst) {
      b->bucket.reconfigure(r.requests(), per, burst, now);
      b->rate = r.requests();
      b->per = per;
      b->burst = burst;
    }
    b->last = now;
    lru_.splice(lru_.begin(), lru_, b->pos);
    const auto res = b->bucket.take(now);
    if (!res.allowed) {
      Verdict v = Verdict::refuse(429, "throttling", "rate_limited",
                         "more than " + std::to_string(r.requests()) + " requests per " +
                             std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(per).count()) +
                             " ms for this " + key_label(r.key()));
      v.headers.emplace_back("Retry-After", std::to_string(res.retry_after.count()));
      v.headers.emplace_back("RateLimit-Limit", std::to_string(burst));
      v.headers.emplace_back("RateLimit-Remaining", std::to_string(res.remaining));
      v.headers.emplace_back("RateLimit-Reset", std::to_string(res.reset.count()));
      decisions.push_back({"throttling", "rejected", v.reason});
      return v;
    }
    if (!least || res.remaining < *least) {
      least = res.remaining;
      allowed.headers = {{"RateLimit-Limit", std::to_string(burst)},
                         {"RateLimit-Remaining", std::to_string(res.remaining)},
                         {"RateLimit-Reset", std::to_string(res.reset.count())}};
    }
  }
  Hold h;
  h.limiter_ = this;
  for (int i = 0; i < th.concurrency_size(); ++i) {
    const auto& c = th.concurrency(i);
    const std::string key = throttle_key(api.name, "conc", i, c.key(), identity, client_ip);
    auto& n = in_use_[key];
    if (n >= c.max()) {
      if (n == 0) in_use_.erase(key);
      const auto retry = std::chrono::duration_cast<std::chrono::seconds>(config::duration_or(c.retry_after(), 1000ms));
      Verdict v = Verdict::refuse(503, "throttling", "concurrency_limit",
                         "more than " + std::to_string(c.max()) + " requests in progress for this " +
                             key_label(c.key()));
      v.headers.emplace_back("Retry-After", std::to_string(std::max<long long>(1, retry.count())));
      decisions.push_back({"throttling", "rejected", v.reason});
      return v;  // h releases what it took
    }
    ++n;
    h.keys_.push_back(key);
  }
  hold = std::move(h);
  decisions.push_back({"throttling", "allowed", "ok"});
  return allowed;
}

// ---------------------------------------------------------------- transform

void transform_request(const pv1::Transform& t, tv1::RequestHead& head) {
  apply_header_ops(t.request_headers(), *head.mutable_headers());
  const auto& q = t.request_query();
  if (q.add().empty() && q.remove().empty() && q.rename().empty() && q.replace().empty()) return;
  const std::string& target = head.target();
  const auto qm = target.find('?');
  const std::string path = target.substr(0, qm);
  auto params = split_query(qm == std::string::npos ? std::string_view{} : std::string_view(target).substr(qm + 1));
  auto named = [](const QueryParam& p, std::string_view name) { return percent_decode(p.raw_name) == name; };
  for (const auto& name : q.remove()) {
    std::erase_if(params, [&](const QueryParam& p) { return named(p, name); });
  }
  for (const auto& [from, to] : q.rename()) {
    for (auto& p : params) {
      if (named(p, from)) p.raw_name = net::percent_encode(to);
    }
  }
  for (const auto& [name, value] : q.replace()) {
    for (auto& p : params) {
      if (named(p, name)) {
        p.raw_value = net::percent_encode(value);
        p.has_value = true;
      }
    }
  }
  for (const auto& [name, value] : q.add()) {
    params.push_back({net::percent_encode(name), net::percent_encode(value), true});
  }
  head.set_target(join_target(path, params));
}

void transform_response(const pv1::Transform& t, tv1::ResponseHead& head) {
  apply_header_ops(t.response_headers(), *head.mutable_headers());
}

// ---------------------------------------------------------------- helpers

tv1::ResponseHead rejection(const Verdict& v, std::string_view request_id, std::string& body) {
  tv1::ResponseHead h;
  h.set_status(v.status);
  body = "{\"type\":\"https://postern.dev/problems/";
  for (char c : v.reason) body += c == '_' ? '-' : c;
  body += "\",\"title\":\"";
  log::json_escape(body, v.policy == "identify" ? (v.status == 401 ? "Unauthorized" : "Forbidden")
                         : v.policy == "throttling" ? (v.status == 429 ? "Too Many Requests" : "Service Unavailable")
                                                    : "Request refused by threat protection");
  body += "\",\"status\":" + std::to_string(v.status) + ",\"detail\":\"";
  log::json_escape(body, v.detail);
  body += "\",\"policy\":\"" + v.policy + "\"";
  if (!request_id.empty()) {
    body += ",\"request_id\":\"";
    log::json_escape(body, request_id);
    body += '"';
  }
  body += "}\n";
  auto add = [&](std::string name, std::string value) {
    auto* x = h.add_headers();
    x->set_name(std::move(name));
    x->set_value(std::move(value));
  };
  add("Content-Type", "application/problem+json");
  add("Cache-Control", "no-store");
  for (const auto& [n, val] : v.headers) add(n, val);
  h.set_content_length(static_cast<std::int64_t>(body.size()));
  return h;
}

std::string remove_query_param(std::string_view target, std::string_view name, std::string* value) {
  const auto qm = target.find('?');
  if (qm == std::string_view::npos || name.empty()) return std::string(target);
  auto params = split_query(target.substr(qm + 1));
  bool first = true;
  std::erase_if(params, [&](const QueryParam& p) {
    if (percent_decode(p.raw_name) != name) return false;
    if (first && value) *value = percent_decode(p.raw_value);
    first = false;
    return true;
  });
  if (first) return std::string(target);  // nothing removed
  return join_target(target.substr(0, qm), params);
}

std::string redact_target(std::string_view target, std::string_view key_param) {
  const auto qm = target.find('?');
  if (qm == std::string_view::npos) return std::string(target);
  auto params = split_query(target.substr(qm + 1));
  for (auto& p : params) {
    if (percent_decode(p.raw_name) == key_param) p.raw_value = "REDACTED";
  }
  return join_target(target.substr(0, qm), params);
}

std::string log_path(std::string_view target) {
  const std::string_view path = target.substr(0, target.find('?'));
  std::string out;
  out.reserve(path.size());
  bool in_value = false;  // inside ";name=value", up to the next '/' or ';'
  for (char c : path) {
    if (c == '/' || c == ';') {
      if (in_value) out += "REDACTED";
      in_value = false;
      out += c;
      continue;
    }
    if (in_value) continue;
    out += c;
    if (c == '=') {
      // '=' after a ';' in this segment starts a parameter value.
      const auto seg = out.rfind('/');
      const auto semi = out.rfind(';');
      in_value = semi != std::string::npos && (seg == std::string::npos || semi > seg);
    }
  }
  if (in_value) out += "REDACTED";
  return out;
}

const tv1::Header* find_header(const google::protobuf::RepeatedPtrField<tv1::Header>& headers, std::string_view name) {
  for (const auto& h : headers) {
    if (net::iequals(h.name(), name)) return &h;
  }
  return nullptr;
}

std::string_view header_value(const google::protobuf::RepeatedPtrField<tv1::Header>& headers, std::string_view name) {
  const auto* h = find_header(headers, name);
  return h ? std::string_view(h->value()) : std::string_view();
}

}  // namespace postern::policy
