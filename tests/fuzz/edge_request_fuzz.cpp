// libFuzzer target: what the edge does with the bytes a client sends, up to
// the point where the request would cross the tunnel. The input is one or
// more HTTP/1.1 requests on one connection. Each goes through the edge's
// parser settings (header limit, chunked bodies in pieces), the router over
// a snapshot with every kind of API, threat protection, the JSON depth
// guard, identification, throttling and the request transforms.
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/config/yaml_proto.hpp"
#include "common/net/http_headers.hpp"
#include "common/net/trailers.hpp"
#include "common/policy/catalog.hpp"
#include "common/policy/engine.hpp"
#include "common/policy/json_depth.hpp"
#include "common/net/request_target.hpp"
#include "edge/forwarding.hpp"
#include "edge/router.hpp"

namespace {

namespace http = boost::beast::http;
namespace policy = postern::policy;
namespace tv1 = postern::tunnel::v1;

// Key "fuzz-key" (SHA-256 below), Basic ann:pw.
constexpr std::string_view kPolicy = R"(
threat_protection:
  max_url_length: {max: 2048}
  max_header_count: {max: 50}
  max_header_bytes: {max: 8192}
  max_body_bytes: {max: 65536}
  ip_deny: {cidrs: ["10.9.0.0/16"]}
apis:
  - {name: open, version: "1.0", routing: "apigateway://demo/", allow_overlap: true}
  - name: keyed
    base_path: /k
    routing: apigateway://demo/inner
    policies:
      identify: {identifiers: [API_KEY, BASIC, HOST, IP]}
      throttling:
        rate: [{key: THROTTLE_KEY_APPLICATION, requests: 5, per: 1s}]
        concurrency: [{key: API, max: 2}]
      transform:
        request_headers: {add: {X-Gateway: postern}, remove: [Cookie], rename: {X-Old: X-New}}
        request_query: {add: {via: gw}, remove: [debug]}
      threat_protection: {max_json_depth: {max: 8}}
  - {name: green, base_path: /g/, routing: "apigateway://demo/", enforcement: ENFORCEMENT_GREEN, allow_overlap: true,
     policies: {identify: {identifiers: [API_KEY]}}}
  - {name: chat, type: websocket, base_path: /ws/, routing: "apigateway://demo/api/demo/"}
  - {name: local, base_path: /local, routing: "http://127.0.0.1:9/x"}
applications:
  - name: app
    api_keys: [{sha256: 231e9b2f757db8d48ecd0711b60135e1cc57a3a807be9dc12638856f17a7872c}]
    basic: [{username: ann, password_hash: "$pbkdf2-sha256$i=100000$cG9zdGVybi10ZXN0LXNhbHQ$li7O6u0WRCpOnbn3goqACv9ozFKc0WNDGT7sNrUVOX8"}]
    hostnames: [app.example]
    ip_ranges: ["127.0.0.0/8"]
    apis: [keyed, green, chat]
)";

struct World {
  std::shared_ptr<const policy::Catalog> catalog;
  std::unique_ptr<postern::edge::Router> router;
  policy::Limiter limiter;
};

World& world() {
  static World* w = [] {
    auto* out = new World;
    policy::v1::Snapshot s;
    s.set_version(1);
    postern::config::load_yaml_string(kPolicy, "fuzz-policy.yaml", *s.mutable_config());
    std::vector<policy::Issue> issues;
    out->catalog = policy::Catalog::compile(std::move(s), issues);
    if (!out->catalog) {  // the fixed policy must compile
      for (const auto& i : issues) std::fprintf(stderr, "fuzz policy: %s: %s\n", i.path.c_str(), i.message.c_str());
      __builtin_trap();
    }
    postern::config::v1::EdgeConfig edge;
    postern::config::load_yaml_string("default_alias: demo\n", "fuzz-edge.yaml", edge);
    out->router = std::make_unique<postern::edge::Router>(edge.apis(), edge.default_alias());
    return out;
  }();
  return *w;
}

// One request's trip through the edge's logic; false when the connection
// would be closed (parse error or a body left unread).
bool one_request(World& w, boost::beast::flat_buffer& buffer, std::string_view& input, std::string_view client_ip) {
  http::request_parser<http::buffer_body> parser;
  parser.header_limit(8 * 1024);
  parser.body_limit(boost::none);
  boost::beast::error_code ec;
  // Bytes arrive as from a socket: up to 512 at a time, when the parser
  // has used what is buffered.
  auto refill = [&] {
    if (input.empty()) return false;
    const std::size_t n = std::min<std::size_t>(input.size(), 512);
    auto dst = buffer.prepare(n);
    std::memcpy(dst.data(), input.data(), n);
    buffer.commit(n);
    input.remove_prefix(n);
    return true;
  };
  while (!parser.is_header_done()) {
    if (buffer.size() == 0 && !refill()) return false;
    buffer.consume(parser.put(buffer.data(), ec));
    if (ec == http::error::need_more) {
      ec = {};
      if (!refill()) return false;
      continue;
    }
    if (ec) return false;  // the edge answers 400/431 and closes
  }
  auto& req = parser.get();
  // As the edge: the target normalised (a refusal is a 400 and close), the
  // Host checked, before anything routes.
  const auto normalized = postern::net::normalize_target(req.target());
  if (!normalized.ok()) return false;
  if (auto host = req[http::field::host]; !host.empty() && postern::edge::host_problem(host)) return false;
  req.target(normalized.target);

  auto route = w.router->route(w.catalog.get(), req.target());
  const policy::CompiledApi* papi = route ? route->policy_api : nullptr;
  const policy::ThreatRules& threats = papi ? papi->threats : w.catalog->threats();
  policy::Decisions decisions;
  policy::RequestShape shape;
  shape.url_length = req.target().size();
  for (const auto& f : req) {
    ++shape.header_count;
    shape.header_bytes += f.name_string().size() + f.value().size();
  }
  if (!parser.chunked()) shape.content_length = parser.content_length() ? *parser.content_length() : 0;
  shape.client_ip = std::string(client_ip);
  const auto verdict = policy::check_threats(threats, shape, decisions);

  tv1::RequestHead head;
  head.set_method(std::string(req.method_string()));
  head.set_target(route ? route->target : std::string(req.target()));
  head.set_client_ip(std::string(client_ip));
  const auto connection = req[http::field::connection];
  for (const auto& f : req) {
    if (postern::net::is_hop_by_hop(f.name_string()) || postern::net::listed_in_connection(connection, f.name_string()))
      continue;
    auto* h = head.add_headers();
    h->set_name(std::string(f.name_string()));
    h->set_value(std::string(f.value()));
  }
  if (verdict.allowed() && papi && !papi->green) {
    policy::Identity identity;
    const auto now = std::chrono::system_clock::now();
    auto v = policy::identify(*w.catalog, *papi, head, req[http::field::host], now, identity, decisions);
    if (v.allowed()) {
      policy::Limiter::Hold hold;
      v = w.limiter.admit(*papi, identity, client_ip, policy::Limiter::Clock::now(), hold, decisions);
      if (v.allowed() && papi->def->policies().has_transform()) policy::transform_request(papi->def->policies().transform(), head);
    }
    std::string body;
    if (!v.allowed()) (void)policy::rejection(v, "fuzz", body);
  }

  // The body, in the edge's chunk size, through the JSON depth guard.
  const auto head_fields = postern::net::count_fields(req);
  policy::JsonDepthScanner depth(threats.json_depth.max ? static_cast<std::uint32_t>(threats.json_depth.max) : 64);
  char chunk[4096];
  while (!parser.is_done()) {
    req.body().data = chunk;
    req.body().size = sizeof chunk;
    if (buffer.size() == 0 && !refill()) return false;
    buffer.consume(parser.put(buffer.data(), ec));
    const std::size_t got = sizeof chunk - req.body().size;
    if (got) depth.feed(std::string_view(chunk, got));
    if (ec == http::error::need_more) {
      ec = {};
      if (!refill()) return false;
      continue;
    }
    if (ec) return false;
  }
  if (parser.chunked()) (void)postern::net::trailers_after(req, head_fields);
  return req.keep_alive();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  World& w = world();
  std::string_view input(reinterpret_cast<const char*>(data), size);
  // The first byte picks the client address (an allowed one or a denied one).
  std::string_view client_ip = "127.0.0.1";
  if (!input.empty()) {
    if (input.front() & 1) client_ip = "10.9.1.1";
    input.remove_prefix(1);
  }
  boost::beast::flat_buffer buffer;
  for (int i = 0; i < 16; ++i) {
    if (!one_request(w, buffer, input, client_ip)) break;
  }
  return 0;
}
