#include "common/policy/catalog.hpp"
#include "common/policy/ws_policies.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <mutex>
#include <unordered_map>
#include <set>
#include <sstream>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include "common/config/yaml_proto.hpp"
#include "common/crypto/password.hpp"
#include "common/crypto/random.hpp"
#include "common/observability/log.hpp"
#include "common/policy/codec.hpp"
#include "common/policy/jwt.hpp"

namespace postern::policy {

namespace {

std::string strip_trailing_slashes(std::string s) {
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool report_only(pv1::RuleMode m) { return m == pv1::RULE_MODE_REPORT; }

// A rule the API sets replaces the global one.
void merge_limit(LimitRule& out, const pv1::ThreatProtection& tp, bool (pv1::ThreatProtection::*has)() const,
                 const pv1::Limit& (pv1::ThreatProtection::*get)() const) {
  if (!(tp.*has)()) return;
  const auto& l = (tp.*get)();
  out.max = l.max();
  out.report_only = report_only(l.mode());
}

void merge_ips(IpRule& out, const pv1::IpList& list, const std::string& path, std::vector<Issue>& issues) {
  IpRule r;
  r.on = true;
  r.report_only = report_only(list.mode());
  for (int i = 0; i < list.cidrs_size(); ++i) {
    if (std::string why = r.ranges.add(list.cidrs(i)); !why.empty()) {
      issues.push_back({path + ".cidrs[" + std::to_string(i) + "]", why});
    }
  }
  out = std::move(r);
}

void merge_threats(ThreatRules& out, const pv1::ThreatProtection& tp, const std::string& path,
                   std::vector<Issue>& issues) {
  using T = pv1::ThreatProtection;
  merge_limit(out.url_length, tp, &T::has_max_url_length, &T::max_url_length);
  merge_limit(out.header_count, tp, &T::has_max_header_count, &T::max_header_count);
  merge_limit(out.header_bytes, tp, &T::has_max_header_bytes, &T::max_header_bytes);
  merge_limit(out.body_bytes, tp, &T::has_max_body_bytes, &T::max_body_bytes);
  merge_limit(out.json_depth, tp, &T::has_max_json_depth, &T::max_json_depth);
  merge_limit(out.ws_message_bytes, tp, &T::has_max_ws_message_bytes, &T::max_ws_message_bytes);
  if (tp.has_ip_deny()) merge_ips(out.deny, tp.ip_deny(), path + ".ip_deny", issues);
  if (tp.has_ip_allow()) merge_ips(out.allow, tp.ip_allow(), path + ".ip_allow", issues);
}

bool valid_header_name(std::string_view name) {
  if (name.empty()) return false;
  for (unsigned char c : name) {
    if (c <= 0x20 || c >= 0x7f || std::string_view("\"(),/:;<=>?@[\\]{}").find(static_cast<char>(c)) !=
                                      std::string_view::npos) {
      return false;
    }
  }
  return true;
}

void check_field_ops(const pv1::FieldOps& ops, const std::string& path, bool headers, std::vector<Issue>& issues) {
  auto check_name = [&](const std::string& name, const std::string& where) {
    if (name.empty()) {
      issues.push_back({where, "name must not be empty"});
    } else if (headers && !valid_header_name(name)) {
      issues.push_back({where, "'" + name + "' is not a valid header name"});
    }
  };
  auto check_value = [&](const std::string& value, const std::string& where) {
    for (unsigned char c : value) {
      if ((c < 0x20 && c != '\t') || c == 0x7f) {
        issues.push_back({where, "value contains a control character"});
        return;
      }
    }
  };
  for (const auto& [k, v] : ops.add()) {
    check_name(k, path + ".add[" + k + "]");
    check_value(v, path + ".add[" + k + "]");
  }
  for (int i = 0; i < ops.remove_size(); ++i) check_name(ops.remove(i), path + ".remove[" + std::to_string(i) + "]");
  for (const auto& [k, v] : ops.rename()) {
    check_name(k, path + ".rename[" + k + "]");
    check_name(v, path + ".rename[" + k + "]");
  }
  for (const auto& [k, v] : ops.replace()) {
    check_name(k, path + ".replace[" + k + "]");
    check_value(v, path + ".replace[" + k + "]");
  }
}

// Where an API's requests land on the far side: the alias (or upstream
// origin) and the native path prefix. ws(s) and http(s) of one origin reach
// the same server.
struct NativeMount {
  std::string where;   // "alias 'demo'" or "upstream 'http://host:port'"
  std::string prefix;  // "" or "/x/y", no trailing slash
};

NativeMount native_mount(const CompiledApi& c) {
  if (c.reverse_invoke) return {"alias '" + c.alias + "'", c.prefix};
  std::string url = c.url;
  if (url.starts_with("ws://")) url = "http://" + url.substr(5);
  if (url.starts_with("wss://")) url = "https://" + url.substr(6);
  const auto host_start = url.find("://") + 3;
  const auto path_start = url.find('/', host_start);
  std::string origin = lower(url.substr(0, path_start));
  std::string path = path_start == std::string::npos ? "" : url.substr(path_start);
  path = path.substr(0, path.find_first_of("?#"));
  path = strip_trailing_slashes(path);
  if (path == "/") path.clear();
  return {"upstream '" + origin + "'", path};
}

// True if `outer` (a native prefix) contains `inner` on whole segments.
bool contains_prefix(std::string_view outer, std::string_view inner) {
  if (outer.empty()) return true;
  return inner.starts_with(outer) && (inner.size() == outer.size() || inner[outer.size()] == '/');
}

// The policies that decide who may reach an API, as one comparable string.
std::string policy_fingerprint(const pv1::Api& api) {
  std::string out = std::to_string(static_cast<int>(api.enforcement())) + ":";
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream sos(&bytes);
    google::protobuf::io::CodedOutputStream cos(&sos);
    cos.SetSerializationDeterministic(true);
    api.policies().SerializeToCodedStream(&cos);
  }
  return out + bytes;
}

// Two APIs whose native prefixes on one alias (or upstream) nest, with
// different policies: the outer one reaches the inner one's resources under
// its own, laxer or just other, policies. Refused unless either allows it.
void check_overlaps(const std::vector<CompiledApi>& apis, std::vector<Issue>& issues,
                    std::vector<std::string>& warnings) {
  std::vector<NativeMount> mounts;
  std::vector<std::string> prints;
  for (const auto& a : apis) {
    mounts.push_back(native_mount(a));
    prints.push_back(policy_fingerprint(*a.def));
  }
  for (std::size_t i = 0; i < apis.size(); ++i) {
    for (std::size_t j = 0; j < i; ++j) {
      if (mounts[i].where != mounts[j].where || prints[i] == prints[j]) continue;
      const bool i_outer = contains_prefix(mounts[i].prefix, mounts[j].prefix);
      const bool j_outer = contains_prefix(mounts[j].prefix, mounts[i].prefix);
      if (!i_outer && !j_outer) continue;
      const std::size_t outer = i_outer ? i : j, inner = i_outer ? j : i;
      auto shown = [](const std::string& p) { return p.empty() ? std::string("/") : p; };
      const std::string advice = "; give each API its own native prefix, or set allow_overlap: true on one of them";
      const std::string message =
          i_outer && j_outer
              ? "APIs '" + apis[j].name + "' and '" + apis[i].name + "' both reach native prefix '" +
                    shown(mounts[i].prefix) + "' on " + mounts[i].where +
                    " with different policies, so a client could bypass either API's policies through the other" +
                    advice
              : "native prefix '" + shown(mounts[inner].prefix) + "' on " + mounts[i].where + " of API '" +
                    apis[inner].name + "' is also reached by API '" + apis[outer].name + "' (native prefix '" +
                    shown(mounts[outer].prefix) + "') with different policies, so a client could bypass API '" +
                    apis[inner].name + "''s policies through API '" + apis[outer].name + "'" + advice;
      const std::string path = "apis[" + std::to_string(i) + "].routing";
      if (apis[i].def->allow_overlap() || apis[j].def->allow_overlap()) {
        warnings.push_back(path + ": " + message);
      } else {
        issues.push_back({path, message});
      }
    }
  }
}

}  // namespace

std::string default_base_path(const pv1::Api& api) {
  return "/gateway/" + api.name() + "/" + (api.version().empty() ? "1.0" : api.version());
}

std::shared_ptr<const Catalog> Catalog::compile(pv1::Snapshot snapshot, std::vector<Issue>& issues) {
  const std::size_t issues_before = issues.size();
  auto cat = std::shared_ptr<Catalog>(new Catalog());
  cat->basic_cache_ = std::make_shared<BasicCache>();
  cat->snapshot_ = std::move(snapshot);
  const auto& cfg = cat->snapshot_.config();
  merge_threats(cat->threats_, cfg.threat_protection(), "threat_protection", issues);

  std::map<std::string, std::string> base_paths;  // base path -> API name
  std::set<std::string> names;
  cat->apis_.reserve(static_cast<std::size_t>(cfg.apis_size()));
  for (int i = 0; i < cfg.apis_size(); ++i) {
    const auto& api = cfg.apis(i);
    const std::string where = "apis[" + std::to_string(i) + "]";
    CompiledApi c;
    c.def = &api;
    c.name = api.name();
    if (api.name().empty()) {
      issues.push_back({where + ".name", "required"});
    } else if (!names.insert(api.name()).second) {
      issues.push_back({where + ".name", "API '" + api.name() + "' is defined twice"});
    }
    c.base_path = strip_trailing_slashes(api.base_path().empty() ? default_base_path(api) : api.base_path());
    if (c.base_path.front() != '/') {
      issues.push_back({where + ".base_path", "'" + api.base_path() + "' must start with '/'"});
    } else if (c.base_path.find_first_of("?#") != std::string::npos) {
      issues.push_back({where + ".base_path", "'" + api.base_path() + "' must be a path (no '?' or '#')"});
    } else if (auto [it, fresh] = base_paths.emplace(c.base_path, api.name()); !fresh) {
      issues.push_back({where + ".base_path", "'" + c.base_path + "' is already used by API '" + it->second + "'"});
    }

    const std::string& r = api.routing();
    if (r.starts_with("apigateway://")) {
      const std::string rest = r.substr(13);
      const auto slash = rest.find('/');
      c.alias = rest.substr(0, slash);
      c.prefix = slash == std::string::npos ? "" : strip_trailing_slashes(rest.substr(slash));
      if (c.prefix == "/") c.prefix.clear();
      if (c.alias.empty()) issues.push_back({where + ".routing", "'" + r + "' names no alias"});
    } else if (r.starts_with("http://") || r.starts_with("https://") || r.starts_with("ws://") ||
               r.starts_with("wss://")) {
      c.reverse_invoke = false;
      if (r.starts_with("ws") && api.type() != pv1::API_TYPE_WEBSOCKET) {
        issues.push_back({where + ".routing", "'" + r + "': ws(s):// routing needs type: websocket"});
      }
      c.url = r;
      if (r.find("://") + 3 >= r.size() || r[r.find("://") + 3] == '/') {
        issues.push_back({where + ".routing", "'" + r + "' names no host"});
      }
    } else if (r.empty()) {
      issues.push_back({where + ".routing", "required: apigateway://{alias}/{path} or http(s)://host[:port]/path"});
    } else if (r.find("://") == std::string::npos) {
      issues.push_back({where + ".routing", "'" + r +
                                                "' has no scheme; write apigateway://" + r +
                                                " (reverse invoke) or http(s)://... (DMZ-local)"});
    } else {
      issues.push_back({where + ".routing", "'" + r + "': scheme must be apigateway, http, https, ws or wss"});
    }
    for (int k = 0; k < api.response_rewrite().rules_size(); ++k) {
      if (api.response_rewrite().rules(k).from().empty()) {
        issues.push_back({where + ".response_rewrite.rules[" + std::to_string(k) + "].from",
                          "required (the prefix to replace)"});
      }
    }

    c.green = api.enforcement() == pv1::ENFORCEMENT_GREEN;
    c.websocket = api.type() == pv1::API_TYPE_WEBSOCKET;
    {
      const auto scheme_end = r.find("://");
      const auto path_start = scheme_end == std::string::npos ? std::string::npos : r.find('/', scheme_end + 3);
      c.trailing_slash = path_start != std::string::npos && r.size() > path_start + 1 && r.back() == '/';
    }
    {
      const auto& mt = api.policies().message_transformation();
      const std::string mp = where + ".policies.message_transformation";
      for (const auto* edits : {&mt.client_to_server(), &mt.server_to_client()}) {
        const std::string ep = mp + (edits == &mt.client_to_server() ? ".client_to_server" : ".server_to_client");
        for (int k = 0; k < edits->size(); ++k) {
          for (const auto& [field, value] : edits->Get(k).json_set()) {
            if (!valid_json(value)) {
              issues.push_back({ep + "[" + std::to_string(k) + "].json_set[" + field + "]",
                                "'" + value + "' is not a JSON value (write strings quoted: '\"text\"')"});
            }
          }
        }
      }
      if (mt.has_service() && mt.service().address().empty()) {
        issues.push_back({mp + ".service.address", "required: host:port of the transform service"});
      }
      const bool ws_only = api.policies().has_websocket() || mt.client_to_server_size() > 0 ||
                           mt.server_to_client_size() > 0 || mt.has_service();
      if (ws_only && !c.websocket) {
        issues.push_back({where + ".type", "websocket and message_transformation policies need type: websocket"});
      }
    }
    if (c.green && !c.reverse_invoke && !r.empty()) {
      issues.push_back({where + ".enforcement", "green enforcement needs apigateway:// routing (a DMZ-local API "
                                                "never reaches the green zone)"});
    }
    c.timeout_ms = static_cast<std::uint32_t>(config::duration_or(api.timeout(), std::chrono::milliseconds(0)).count());

    const auto& pol = api.policies();
    if (pol.has_cors()) {
      const auto& cors = pol.cors();
      const std::string cp = where + ".policies.cors";
      if (cors.allowed_origins().empty()) issues.push_back({cp + ".allowed_origins", "list at least one origin (or \"*\")"});
      const bool any = std::find(cors.allowed_origins().begin(), cors.allowed_origins().end(), "*") !=
                       cors.allowed_origins().end();
      if (any && cors.allow_credentials()) {
        issues.push_back({cp + ".allow_credentials",
                          "not with allowed_origins \"*\": browsers refuse credentials to any origin; list the origins"});
      }
    }
    c.threats = cat->threats_;
    merge_threats(c.threats, pol.threat_protection(), where + ".policies.threat_protection", issues);

    if (pol.has_identify()) {
      const auto& id = pol.identify();
      const std::string ip = where + ".policies.identify";
      if (id.identifiers_size() == 0) issues.push_back({ip + ".identifiers", "list at least one identifier type"});
      std::set<int> seen;
      for (int k = 0; k < id.identifiers_size(); ++k) {
        if (id.identifiers(k) == pv1::IDENTIFIER_TYPE_UNSPECIFIED) {
          issues.push_back({ip + ".identifiers[" + std::to_string(k) + "]", "unspecified identifier type"});
        }
        if (!seen.insert(id.identifiers(k)).second) {
          issues.push_back({ip + ".identifiers[" + std::to_string(k) + "]", "listed twice"});
        }
        if (id.identifiers(k) == pv1::IDENTIFIER_TYPE_JWT) {
          if (id.jwt().jwks().empty()) {
            issues.push_back({ip + ".jwt", id.jwt().jwks_file().empty() ? "JWT identification needs jwt.jwks_file"
                                                                         : "jwks_file was not resolved"});
          } else {
            try {
              c.jwks = Jwks::parse(id.jwt().jwks());
            } catch (const std::exception& e) {
              issues.push_back({ip + ".jwt.jwks_file", e.what()});
            }
          }
        }
      }
      for (const std::string* name : {&id.api_key_header(), &id.api_key_query()}) {
        if (!name->empty() && !valid_header_name(*name)) {
          issues.push_back({ip + (name == &id.api_key_header() ? ".api_key_header" : ".api_key_query"),
                            "'" + *name + "' is not a valid name"});
        }
      }
    }
    const auto& th = pol.throttling();
    for (int k = 0; k < th.rate_size(); ++k) {
      if (th.rate(k).requests() == 0) {
        issues.push_back({where + ".policies.throttling.rate[" + std::to_string(k) + "].requests", "must be > 0"});
      }
    }
    for (int k = 0; k < th.concurrency_size(); ++k) {
      if (th.concurrency(k).max() == 0) {
        issues.push_back({where + ".policies.throttling.concurrency[" + std::to_string(k) + "].max", "must be > 0"});
      }
    }
    const auto& tr = pol.transform();
    check_field_ops(tr.request_headers(), where + ".policies.transform.request_headers", true, issues);
    check_field_ops(tr.request_query(), where + ".policies.transform.request_query", false, issues);
    check_field_ops(tr.response_headers(), where + ".policies.transform.response_headers", true, issues);
    cat->apis_.push_back(std::move(c));
  }

  check_overlaps(cat->apis_, issues, cat->warnings_);

  for (int i = 0; i < cfg.applications_size(); ++i) {
    const auto& app = cfg.applications(i);
    const std::string where = "applications[" + std::to_string(i) + "]";
    if (app.name().empty()) {
      issues.push_back({where + ".name", "required"});
    } else if (!cat->apps_.emplace(app.name(), &app).second) {
      issues.push_back({where + ".name", "application '" + app.name() + "' is defined twice"});
    }
    for (int k = 0; k < app.api_keys_size(); ++k) {
      const auto& key = app.api_keys(k);
      const std::string kp = where + ".api_keys[" + std::to_string(k) + "]";
      if (key.has_key_file()) {
        // resolve_files() has already said why when it could not read it.
        const bool said = std::any_of(issues.begin(), issues.end(),
                                      [&](const Issue& i) { return i.path == kp + ".key_file"; });
        if (!said) issues.push_back({kp + ".key_file", "was not resolved to a hash"});
      } else if (!is_sha256_hex(key.sha256())) {
        issues.push_back({kp + ".sha256", "expected 64 hex digits (the SHA-256 of the key, e.g. from "
                                          "`printf %s KEY | sha256sum`), never the key itself"});
      } else if (auto [it, fresh] = cat->keys_.emplace(lower(key.sha256()), &app); !fresh) {
        issues.push_back({kp + ".sha256", "the same key is already given to application '" + it->second->name() + "'"});
      }
    }
    IpRanges ranges;
    for (int k = 0; k < app.ip_ranges_size(); ++k) {
      if (std::string why = ranges.add(app.ip_ranges(k)); !why.empty()) {
        issues.push_back({where + ".ip_ranges[" + std::to_string(k) + "]", why});
      }
    }
    if (!ranges.empty()) cat->ip_apps_.emplace_back(std::move(ranges), &app);
    for (const auto& h : app.hostnames()) cat->hosts_.emplace(lower(h), &app);
    for (const auto& s : app.jwt_subjects()) cat->subjects_.emplace(s, &app);
    for (int k = 0; k < app.basic_size(); ++k) {
      const auto& b = app.basic(k);
      const std::string bp = where + ".basic[" + std::to_string(k) + "]";
      if (b.username().empty() || b.username().find(':') != std::string::npos) {
        issues.push_back({bp + ".username", "required, and must not contain ':'"});
      }
      if (auto why = crypto::password_hash_problem(b.password_hash())) {
        issues.push_back({bp + ".password_hash", *why});
      } else {
        cat->basic_users_.emplace(b.username(), std::make_pair(&app, b.password_hash()));
      }
    }
    for (int k = 0; k < app.apis_size(); ++k) {
      if (!names.contains(app.apis(k))) {
        issues.push_back({where + ".apis[" + std::to_string(k) + "]", "no API named '" + app.apis(k) + "'"});
      }
    }
  }
  if (issues.size() > issues_before) return nullptr;

  for (std::size_t i = 0; i < cat->apis_.size(); ++i) cat->by_length_.push_back(i);
  std::stable_sort(cat->by_length_.begin(), cat->by_length_.end(), [&](std::size_t a, std::size_t b) {
    return cat->apis_[a].base_path.size() > cat->apis_[b].base_path.size();
  });
  return cat;
}

std::optional<RouteMatch> Catalog::route(std::string_view target) const {
  const auto q = target.find('?');
  const std::string_view path = target.substr(0, q);
  const std::string_view query = q == std::string_view::npos ? std::string_view{} : target.substr(q);
  for (std::size_t i : by_length_) {
    const auto& e = apis_[i];
    const bool root = e.base_path == "/";
    if (!root) {
      if (!path.starts_with(e.base_path)) continue;
      if (path.size() > e.base_path.size() && path[e.base_path.size()] != '/') continue;
    }
    const std::string_view rest = root ? path : path.substr(e.base_path.size());
    RouteMatch m;
    m.api = &e;
    m.target = e.prefix;
    if (e.websocket && (rest.empty() || rest == "/")) {
      // The context with or without a trailing slash: the native path as
      // the routing endpoint writes it ("" leaves a direct URL's path as is).
      if (e.trailing_slash) m.target += '/';
      m.target += query;
      return m;
    }
    m.target += rest;
    if (m.target.empty()) m.target = "/";
    m.target += query;
    return m;
  }
  return std::nullopt;
}

const CompiledApi* Catalog::api(std::string_view name) const {
  for (const auto& a : apis_) {
    if (a.name == name) return &a;
  }
  return nullptr;
}

const pv1::Application* Catalog::application(std::string_view name) const {
  auto it = apps_.find(name);
  return it == apps_.end() ? nullptr : it->second;
}

const pv1::Application* Catalog::by_key_hash(std::string_view sha256_hex) const {
  auto it = keys_.find(sha256_hex);
  return it == keys_.end() ? nullptr : it->second;
}

const pv1::Application* Catalog::by_ip(std::string_view ip) const {
  for (const auto& [ranges, app] : ip_apps_) {
    if (ranges.contains(ip)) return app;
  }
  return nullptr;
}

const pv1::Application* Catalog::by_host(std::string_view host) const {
  auto it = hosts_.find(lower(host));
  return it == hosts_.end() ? nullptr : it->second;
}

const pv1::Application* Catalog::by_jwt_subject(std::string_view subject) const {
  auto it = subjects_.find(subject);
  return it == subjects_.end() ? nullptr : it->second;
}

struct Catalog::BasicCache {
  static constexpr std::size_t kMaxEntries = 10000;
  const std::string pepper = crypto::random_bytes(32);
  std::mutex lock;
  std::unordered_map<std::string, const pv1::Application*> results;

  std::string key(std::string_view user, std::string_view password) const {
    std::string in = pepper;
    in += user;
    in += '\0';
    in += password;
    return sha256_hex(in);
  }
};

Catalog::BasicResult Catalog::cached_basic(std::string_view user, std::string_view password,
                                           const pv1::Application*& app) const {
  app = nullptr;
  if (basic_users_.find(user) == basic_users_.end()) return BasicResult::no_match;
  const std::string k = basic_cache_->key(user, password);
  std::lock_guard<std::mutex> g(basic_cache_->lock);
  const auto it = basic_cache_->results.find(k);
  if (it == basic_cache_->results.end()) return BasicResult::unchecked;
  app = it->second;
  return app ? BasicResult::match : BasicResult::no_match;
}

void Catalog::verify_basic(std::string_view user, std::string_view password) const {
  const pv1::Application* found = nullptr;
  const auto [from, to] = basic_users_.equal_range(user);
  for (auto it = from; it != to && !found; ++it) {
    if (crypto::verify_password(password, it->second.second)) found = it->second.first;
  }
  const std::string k = basic_cache_->key(user, password);
  std::lock_guard<std::mutex> g(basic_cache_->lock);
  // Bounded: a flood of guesses clears it rather than grow it.
  if (basic_cache_->results.size() >= BasicCache::kMaxEntries) basic_cache_->results.clear();
  basic_cache_->results[k] = found;
}

bool Catalog::allows(const pv1::Application& app, std::string_view api) {
  return std::find(app.apis().begin(), app.apis().end(), api) != app.apis().end();
}

namespace {

bool read_file(const std::string& path, std::string& out, std::string& error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = "cannot read '" + path + "': " + std::strerror(errno);
    return false;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  out = ss.str();
  if (out.size() > (1u << 20)) {
    error = "'" + path + "' is larger than 1 MiB";
    return false;
  }
  return true;
}

std::string under(const std::string& base_dir, const std::string& path) {
  if (path.empty() || path.front() == '/' || base_dir.empty()) return path;
  return base_dir + "/" + path;
}

}  // namespace

void resolve_files(pv1::PolicyConfig& config, const std::string& base_dir, std::vector<Issue>& issues) {
  for (int i = 0; i < config.applications_size(); ++i) {
    auto* app = config.mutable_applications(i);
    for (int k = 0; k < app->api_keys_size(); ++k) {
      auto* key = app->mutable_api_keys(k);
      if (!key->has_key_file()) continue;
      const std::string path = under(base_dir, key->key_file());
      const std::string where =
          "applications[" + std::to_string(i) + "].api_keys[" + std::to_string(k) + "].key_file";
      std::string text, error;
      if (!read_file(path, text, error)) {
        issues.push_back({where, error});
        continue;
      }
      while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
      if (text.empty()) {
        issues.push_back({where, "'" + path + "' is empty"});
        continue;
      }
      key->set_sha256(sha256_hex(text));  // clears key_file (oneof)
    }
  }
  for (int i = 0; i < config.apis_size(); ++i) {
    // Read through const accessors first: mutable_*() would make absent
    // policies look present.
    if (config.apis(i).policies().identify().jwt().jwks_file().empty()) continue;
    auto* jwt = config.mutable_apis(i)->mutable_policies()->mutable_identify()->mutable_jwt();
    std::string text, error;
    if (!read_file(under(base_dir, jwt->jwks_file()), text, error)) {
      issues.push_back({"apis[" + std::to_string(i) + "].policies.identify.jwt.jwks_file", error});
      continue;
    }
    jwt->set_jwks(text);
  }
}

}  // namespace postern::policy
