#include "demo/demo_server.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket/rfc6455.hpp>

#include <algorithm>
#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/asio.hpp"
#include "common/net/trailers.hpp"
#include "common/observability/log.hpp"
#include "demo/chat.hpp"
#include "demo/demo_page.hpp"
#include "demo/sha256.hpp"
#include "demo/target.hpp"

namespace postern::demo {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using boost::system::error_code;

// GCC 12 miscompiles co_await in loop conditions, in && / ||, and with
// temporaries of ?: in its arguments (crashes seen here). So every co_await
// in this file stands in a statement of its own, with plain local arguments.

constexpr auto kIdleTimeout = std::chrono::seconds(60);  // waiting for the next request
constexpr auto kIoTimeout = std::chrono::seconds(60);    // any single read or write
constexpr auto kHandshakeTimeout = std::chrono::seconds(30);
constexpr auto kShutdownTimeout = std::chrono::seconds(5);
constexpr auto kLingerTimeout = std::chrono::seconds(2);
constexpr std::size_t kLingerLimit = 1024 * 1024;
constexpr std::uint32_t kHeaderLimit = 64 * 1024;
constexpr std::size_t kReadBufferLimit = kHeaderLimit + 2 * kChunkSize;
constexpr std::uint64_t kSha256HeaderLimit = 1024 * 1024;  // X-Demo-Sha256 only up to 1 MiB
constexpr std::uint64_t kMaxDripSize = 1024 * 1024;
constexpr std::uint64_t kMaxDripChunks = 1'000'000;
constexpr std::uint64_t kMaxDelayMs = 600'000;

constexpr std::string_view kHello = "Hello from the Postern demo native service\n";

// The /bytes and /drip content: byte i is (i % 251). One static table holds
// the pattern for the longest slice we ever hand out, starting at any phase.
class Pattern {
 public:
  static constexpr std::size_t kPeriod = 251;
  static constexpr std::size_t kMaxSlice = kMaxDripSize > kChunkSize ? kMaxDripSize : kChunkSize;

  static const Pattern& get() {
    static const Pattern instance;
    return instance;
  }
  // `size` bytes of the stream starting at stream offset `offset`; size <= kMaxSlice.
  const unsigned char* at(std::uint64_t offset) const { return bytes_.get() + offset % kPeriod; }

 private:
  Pattern() : bytes_(new unsigned char[kMaxSlice + kPeriod]) {
    for (std::size_t i = 0; i < kMaxSlice + kPeriod; ++i) bytes_[i] = static_cast<unsigned char>(i % kPeriod);
  }
  std::unique_ptr<unsigned char[]> bytes_;
};

std::string pattern_sha256(std::uint64_t size) {
  Sha256 sha;
  for (std::uint64_t off = 0; off < size;) {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(kChunkSize, size - off));
    sha.update(Pattern::get().at(off), n);
    off += n;
  }
  return sha.hex();
}

bool is_parse_error(const error_code& ec) {
  // Everything in Beast's HTTP category is the peer's fault except these,
  // which only say the connection ended.
  return ec.category() == http::make_error_code(http::error::bad_target).category() &&
         ec != http::error::end_of_stream && ec != http::error::partial_message;
}

// Beast 1.81 hands out boost::core::string_view, which converts to both
// std::string and std::string_view; pick one so overloads are not ambiguous.
std::string_view sv(beast::string_view text) { return {text.data(), text.size()}; }

std::string json_string(std::string_view text) {
  std::string out = "\"";
  log::json_escape(out, text);
  out += '"';
  return out;
}

void set_status(http::response_header<>& res, unsigned status) {
  res.result(status);
  // Beast writes "<unknown-status>" for codes it has no name for.
  if (http::int_to_status(status) == http::status::unknown) res.reason("Status " + std::to_string(status));
}

// Stream-type specific pieces: the lowest layer for timeouts, TLS handshake, shutdown.
beast::tcp_stream& lowest(beast::tcp_stream& s) { return s; }
beast::tcp_stream& lowest(beast::ssl_stream<beast::tcp_stream>& s) { return s.next_layer(); }

asio::awaitable<void> close_stream(beast::tcp_stream& s) {
  error_code ignored;
  s.socket().shutdown(tcp::socket::shutdown_send, ignored);
  // Lingering close: closing with unread input makes the kernel send RST,
  // which can destroy a 400 the client has not read yet. So read and drop
  // what the peer still sends, briefly and boundedly, until it closes too.
  s.expires_after(kLingerTimeout);
  auto scratch = std::make_unique<char[]>(16 * 1024);
  for (std::size_t total = 0; total < kLingerLimit;) {
    auto [ec, n] = co_await s.async_read_some(asio::buffer(scratch.get(), 16 * 1024), use_nothrow);
    if (ec) break;
    total += n;
  }
  s.socket().close(ignored);
}

asio::awaitable<void> close_stream(beast::ssl_stream<beast::tcp_stream>& s) {
  s.next_layer().expires_after(kShutdownTimeout);
  co_await s.async_shutdown(use_nothrow);
  error_code ignored;
  s.next_layer().socket().close(ignored);
}

/// One connection: reads requests one after another and answers each in turn.
/// Owned by its coroutine frame; runs on the connection's strand only.
template <class Stream>
class Session {
 public:
  explicit Session(Stream stream)
      : stream_(std::move(stream)), buffer_(kReadBufferLimit), body_(new char[kChunkSize]) {
    // Beast sizes each socket read by the buffer's spare capacity (at least
    // 512 bytes); without room up front a body streams 512 bytes at a time.
    buffer_.reserve(kChunkSize);
  }

  asio::awaitable<void> run() {
    for (;;) {
      const bool keep_alive = co_await serve_one();
      if (!keep_alive) break;
    }
    if (!upgraded_) co_await close_stream(stream_);
  }

 private:
  using Parser = http::request_parser<http::buffer_body>;
  using StreamResponse = http::response<http::buffer_body>;
  using StreamSerializer = http::response_serializer<http::buffer_body>;

  void arm(std::chrono::steady_clock::duration d) { lowest(stream_).expires_after(d); }

  http::request<http::buffer_body>& req() { return parser_->get(); }
  bool is_head() const { return parser_->get().method() == http::verb::head; }

  // Reads one request and answers it. Returns false when the connection must close.
  asio::awaitable<bool> serve_one() {
    parser_.emplace();
    parser_->header_limit(kHeaderLimit);
    parser_->body_limit(boost::none);  // bodies are streamed, never held

    arm(kIdleTimeout);
    auto [ec, n] = co_await http::async_read_header(stream_, buffer_, *parser_, use_nothrow);
    if (ec) {
      if (is_parse_error(ec)) co_return co_await send_bad_request(ec.message());
      co_return false;
    }

    if (!parser_->is_done() && beast::iequals(req()[http::field::expect], "100-continue")) {
      http::response<http::empty_body> cont{http::status::continue_, 11};
      arm(kIoTimeout);
      auto [wec, wn] = co_await http::async_write(stream_, cont, use_nothrow);
      if (wec) co_return false;
    }

    const auto target = Target::parse(sv(req().target()));
    if (!target) co_return co_await send_bad_request("bad request target");
    co_return co_await route(*target);
  }

  // The quick start gives each of its APIs a native prefix of its own, so
  // that no API's path reaches another API's resources: the demo serves the
  // same endpoints under each (/open/headers is /headers).
  static std::string unmounted(const std::string& path) {
    for (std::string_view mount : {"/open", "/keyed", "/inside"}) {
      if (path == mount) return "/";
      if (path.starts_with(mount) && path[mount.size()] == '/') return path.substr(mount.size());
    }
    return path;
  }

  asio::awaitable<bool> route(const Target& target) {
    const std::string path = unmounted(target.path());
    POSTERN_LOG(debug, "request").kv("method", sv(req().method_string())).kv("target", sv(req().target()));
    if (beast::websocket::is_upgrade(req())) {
      if (path.starts_with("/refuse/")) {
        const auto code = parse_uint(std::string_view(path).substr(8));
        const unsigned status = code && *code >= 200 && *code <= 599 ? static_cast<unsigned>(*code) : 403;
        std::string body = "refused by the demo: status " + std::to_string(status) + "\n";
        co_await send_text(status, std::move(body));
        co_return false;
      }
      upgraded_ = true;
      co_await run_chat(stream_, req());
      co_return false;
    }
    if (path == "/") co_return co_await send_text(200, std::string(kHello));
    if (path == "/demo.html") co_return co_await send_text(200, std::string(kDemoPage), "text/html; charset=utf-8");
    if (path == "/headers") co_return co_await handle_headers();
    if (path == "/echo") co_return co_await handle_echo();
    if (path == "/sink") co_return co_await handle_sink();
    if (path == "/slow") co_return co_await handle_slow(target);
    if (path == "/drip") co_return co_await handle_drip(target);
    if (path == "/multi") co_return co_await handle_multi();
    if (path == "/redirect") co_return co_await handle_redirect();
    if (path == "/trailers") co_return co_await handle_trailers();
    if (path.starts_with("/bytes/")) co_return co_await handle_bytes(target, std::string_view(path).substr(7));
    if (path.starts_with("/status/")) co_return co_await handle_status(std::string_view(path).substr(8));
    std::string body = "no such demo endpoint: " + path + "\n";
    co_return co_await send_text(404, std::move(body));
  }

  // ---- endpoints -------------------------------------------------------------

  asio::awaitable<bool> handle_headers() {
    // Built before the body is read: the parser's header is what was received.
    std::string json = "{\"method\":" + json_string(sv(req().method_string())) +
                       ",\"target\":" + json_string(sv(req().target())) + ",\"headers\":[";
    bool first = true;
    for (const auto& field : req()) {
      if (!first) json += ',';
      first = false;
      json += '[' + json_string(sv(field.name_string())) + ',' + json_string(sv(field.value())) + ']';
    }
    json += "]}\n";
    co_return co_await send_text(200, std::move(json), "application/json");
  }

  asio::awaitable<bool> handle_echo() {
    StreamResponse res{http::status::ok, req().version()};
    res.set(http::field::server, "postern-demo");
    res.set("X-Demo-Method", req().method_string());
    if (const auto ct = req().find(http::field::content_type); ct != req().end()) {
      res.set(http::field::content_type, ct->value());
    }
    bool keep_alive = req().keep_alive();
    if (const auto length = parser_->content_length()) {
      res.content_length(*length);
    } else if (parser_->is_done()) {
      res.content_length(0);  // no body at all: no framing needed
    } else {
      keep_alive = set_streaming_framing(res, keep_alive);
    }
    res.keep_alive(keep_alive);

    if (is_head()) {
      const bool drained = co_await discard_body();
      if (!drained) co_return false;
      const bool wrote = co_await write_header_only(res);
      co_return wrote && keep_alive;
    }

    StreamSerializer sr{res};
    arm(kIoTimeout);
    const auto [hec, hn] = co_await http::async_write_header(stream_, sr, use_nothrow);
    if (hec) co_return false;
    while (!parser_->is_done()) {
      // The response has started, so a broken request body can only close the connection.
      const auto [ec, got] = co_await read_body_some();
      if (ec) co_return false;
      if (got == 0) continue;
      const bool wrote = co_await write_piece(sr, res, body_.get(), got, true);
      if (!wrote) co_return false;
    }
    const bool finished = co_await write_piece(sr, res, nullptr, 0, false);
    co_return finished && keep_alive;
  }

  asio::awaitable<bool> handle_sink() {
    const auto method = req().method();
    if (method != http::verb::post && method != http::verb::put && method != http::verb::head) {
      co_return co_await send_text(405, "sink takes POST or PUT\n", "text/plain", "Allow", "POST, PUT");
    }
    Sha256 sha;
    std::uint64_t total = 0;
    while (!parser_->is_done()) {
      const auto [ec, got] = co_await read_body_some();
      if (ec) co_return co_await body_failed(ec);
      sha.update(body_.get(), got);
      total += got;
    }
    std::string json = "{\"bytes\":" + std::to_string(total) + ",\"sha256\":\"" + sha.hex() + "\"}\n";
    co_return co_await send_text(200, std::move(json), "application/json");
  }

  asio::awaitable<bool> handle_bytes(const Target& target, std::string_view count) {
    const auto size = parse_uint(count);
    if (!size) co_return co_await send_text(400, "bytes: N must be a non-negative integer\n");
    const auto chunked_param = target.param("chunked");
    const bool chunked = chunked_param && *chunked_param != "0" && *chunked_param != "false";
    const bool drained = co_await discard_body();
    if (!drained) co_return false;

    StreamResponse res{http::status::ok, req().version()};
    res.set(http::field::server, "postern-demo");
    res.set(http::field::content_type, "application/octet-stream");
    if (*size <= kSha256HeaderLimit) res.set("X-Demo-Sha256", pattern_sha256(*size));
    bool keep_alive = req().keep_alive();
    if (chunked) {
      keep_alive = set_streaming_framing(res, keep_alive);
    } else {
      res.content_length(*size);
    }
    res.keep_alive(keep_alive);
    if (is_head()) {
      const bool wrote = co_await write_header_only(res);
      co_return wrote && keep_alive;
    }

    StreamSerializer sr{res};
    arm(kIoTimeout);
    const auto [hec, hn] = co_await http::async_write_header(stream_, sr, use_nothrow);
    if (hec) co_return false;
    for (std::uint64_t off = 0; off < *size;) {
      const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(kChunkSize, *size - off));
      const bool wrote = co_await write_piece(sr, res, Pattern::get().at(off), n, true);
      if (!wrote) co_return false;
      off += n;
    }
    const bool finished = co_await write_piece(sr, res, nullptr, 0, false);
    co_return finished && keep_alive;
  }

  asio::awaitable<bool> handle_status(std::string_view code) {
    const auto status = parse_uint(code);
    // 1xx are not final responses; answering with one would wedge the exchange.
    if (!status || *status < 200 || *status > 599) {
      co_return co_await send_text(400, "status: N must be 200-599\n");
    }
    const auto n = static_cast<unsigned>(*status);
    std::string body;
    if (n != 204 && n != 304) body = "status " + std::to_string(n) + "\n";
    std::string code_text = std::to_string(n);
    co_return co_await send_text(n, std::move(body), "text/plain", "X-Demo-Status", std::move(code_text));
  }

  asio::awaitable<bool> handle_slow(const Target& target) {
    const auto ms = uint_param(target, "ms", 1000);
    if (!ms || *ms > kMaxDelayMs) co_return co_await send_text(400, "slow: ms must be 0-600000\n");
    const bool drained = co_await discard_body();
    if (!drained) co_return false;
    asio::steady_timer timer(co_await asio::this_coro::executor);
    timer.expires_after(std::chrono::milliseconds(*ms));
    co_await timer.async_wait(use_nothrow);
    co_return co_await send_text(200, "slow\n");
  }

  asio::awaitable<bool> handle_drip(const Target& target) {
    const auto chunks = uint_param(target, "chunks", 10);
    const auto ms = uint_param(target, "ms", 100);
    const auto size = uint_param(target, "size", 1024);
    const auto first_ms = uint_param(target, "first_ms", 0);
    if (!chunks || *chunks > kMaxDripChunks || !ms || *ms > kMaxDelayMs || !size || *size == 0 ||
        *size > kMaxDripSize || !first_ms || *first_ms > kMaxDelayMs) {
      co_return co_await send_text(400, "drip: chunks 0-1000000, ms 0-600000, size 1-1048576, first_ms 0-600000\n");
    }
    const bool drained = co_await discard_body();
    if (!drained) co_return false;

    StreamResponse res{http::status::ok, req().version()};
    res.set(http::field::server, "postern-demo");
    res.set(http::field::content_type, "application/octet-stream");
    const bool keep_alive = set_streaming_framing(res, req().keep_alive());
    res.keep_alive(keep_alive);
    if (is_head()) {
      const bool wrote = co_await write_header_only(res);
      co_return wrote && keep_alive;
    }

    StreamSerializer sr{res};
    arm(kIoTimeout);
    const auto [hec, hn] = co_await http::async_write_header(stream_, sr, use_nothrow);
    if (hec) co_return false;
    asio::steady_timer timer(co_await asio::this_coro::executor);
    std::uint64_t off = 0;
    for (std::uint64_t i = 0; i < *chunks; ++i) {
      const auto wait = i == 0 ? *first_ms : *ms;
      if (wait > 0) {
        timer.expires_after(std::chrono::milliseconds(wait));
        co_await timer.async_wait(use_nothrow);
      }
      const bool wrote = co_await write_piece(sr, res, Pattern::get().at(off), static_cast<std::size_t>(*size), true);
      if (!wrote) co_return false;
      off += *size;
    }
    const bool finished = co_await write_piece(sr, res, nullptr, 0, false);
    co_return finished && keep_alive;
  }

  // What many web frameworks do: a redirect to an absolute URL built from
  // the Host they received, and a cookie for that host at the root.
  asio::awaitable<bool> handle_redirect() {
    const bool drained = co_await discard_body();
    if (!drained) co_return false;
    const std::string host(sv(req()[http::field::host]));
    const std::string name = host.substr(0, host.rfind(':') == std::string::npos ? host.size() : host.rfind(':'));
    http::response<http::string_body> res{http::status::found, req().version()};
    res.set(http::field::location, "http://" + host + "/login?next=%2F");
    res.set(http::field::content_location, "/redirect");
    res.insert(http::field::set_cookie, "session=demo; Domain=" + name + "; Path=/; HttpOnly");
    res.set(http::field::content_type, "text/plain");
    res.body() = "see /login\n";
    co_return co_await send(std::move(res));
  }

  asio::awaitable<bool> handle_multi() {
    const bool drained = co_await discard_body();
    if (!drained) co_return false;
    http::response<http::string_body> res{http::status::ok, req().version()};
    res.set(http::field::content_type, "text/plain");
    res.insert(http::field::set_cookie, "a=1");
    res.insert(http::field::set_cookie, "b=2");
    res.insert("X-Custom", "one");
    res.insert("X-Custom", "two");
    res.set(http::field::cache_control, "no-store");
    res.body() = "multi\n";
    co_return co_await send(std::move(res));
  }

  // Reads the body; answers chunked "trailers\n" with trailer fields: every
  // request trailer as X-Echo-<name>, plus X-Demo-Trailer: yes.
  asio::awaitable<bool> handle_trailers() {
    const auto head_fields = postern::net::count_fields(req());
    const bool drained = co_await discard_body();
    if (!drained) co_return false;
    http::fields trailer;
    for (const auto& h : postern::net::trailers_after(req(), head_fields)) trailer.insert("X-Echo-" + h.name(), h.value());
    trailer.insert("X-Demo-Trailer", "yes");
    if (req().version() < 11) co_return co_await send_text(400, "trailers need HTTP/1.1\n");
    http::response<http::empty_body> res{http::status::ok, 11};
    res.set(http::field::content_type, "text/plain");
    res.set(http::field::trailer, "X-Demo-Trailer");
    res.chunked(true);
    res.keep_alive(req().keep_alive());
    http::response_serializer<http::empty_body> sr{res};
    arm(kIoTimeout);
    auto [hec, hn] = co_await http::async_write_header(stream_, sr, use_nothrow);
    if (hec) co_return false;
    static constexpr std::string_view kBody = "trailers\n";
    auto [bec, bn] = co_await asio::async_write(stream_, http::make_chunk(asio::buffer(kBody)), use_nothrow);
    if (bec) co_return false;
    auto [tec, tn] = co_await asio::async_write(stream_, http::make_chunk_last(trailer), use_nothrow);
    co_return !tec && res.keep_alive();
  }

  // ---- helpers -----------------------------------------------------------------

  std::optional<std::uint64_t> uint_param(const Target& target, std::string_view name, std::uint64_t fallback) {
    const auto value = target.param(name);
    if (!value) return fallback;
    return parse_uint(*value);
  }

  // Chunked when the client speaks HTTP/1.1; for HTTP/1.0, which has no
  // chunked coding, the end of the body is the end of the connection.
  // Returns whether the connection may stay open.
  bool set_streaming_framing(StreamResponse& res, bool keep_alive) {
    if (req().version() >= 11) {
      res.chunked(true);
      return keep_alive;
    }
    return false;
  }

  // Reads whatever request body is available into body_. Returns the byte count, maybe 0.
  asio::awaitable<std::pair<error_code, std::size_t>> read_body_some() {
    auto& body = req().body();
    body.data = body_.get();
    body.size = kChunkSize;
    arm(kIoTimeout);
    auto [ec, n] = co_await http::async_read_some(stream_, buffer_, *parser_, use_nothrow);
    if (ec == http::error::need_buffer) ec = {};
    const std::size_t got = kChunkSize - body.size;
    body.data = nullptr;
    co_return std::pair{ec, got};
  }

  // Reads and drops the rest of the request body so the connection can carry
  // the next request. Returns false when the connection must close.
  asio::awaitable<bool> discard_body() {
    while (!parser_->is_done()) {
      const auto [ec, got] = co_await read_body_some();
      if (ec) co_return co_await body_failed(ec);
    }
    co_return true;
  }

  // A request body went wrong before any response was sent: answer 400 if it
  // was the client's framing, then close either way.
  asio::awaitable<bool> body_failed(const error_code& ec) {
    if (is_parse_error(ec)) co_return co_await send_bad_request(ec.message());
    co_return false;
  }

  // Writes one body piece (`more`) or ends the body (data null, size 0, !more).
  asio::awaitable<bool> write_piece(StreamSerializer& sr, StreamResponse& res, const void* data, std::size_t size,
                                    bool more) {
    res.body().data = const_cast<void*>(data);
    res.body().size = size;
    res.body().more = more;
    arm(kIoTimeout);
    auto [ec, n] = co_await http::async_write(stream_, sr, use_nothrow);
    if (ec == http::error::need_buffer) ec = {};
    co_return !ec;
  }

  asio::awaitable<bool> write_header_only(StreamResponse& res) {
    StreamSerializer sr{res};
    arm(kIoTimeout);
    auto [ec, n] = co_await http::async_write_header(stream_, sr, use_nothrow);
    co_return !ec;
  }

  asio::awaitable<bool> send_text(unsigned status, std::string body, std::string_view content_type = "text/plain",
                                  std::string_view extra_name = {}, std::string extra_value = {}) {
    http::response<http::string_body> res;
    res.version(req().version());
    set_status(res, status);
    res.set(http::field::content_type, content_type);
    if (!extra_name.empty()) res.set(extra_name, extra_value);
    res.body() = std::move(body);
    co_return co_await send(std::move(res));
  }

  // Sends a small complete response after draining the request body.
  asio::awaitable<bool> send(http::response<http::string_body> res) {
    const bool drained = co_await discard_body();
    if (!drained) co_return false;
    const bool keep_alive = req().keep_alive();
    res.set(http::field::server, "postern-demo");
    res.keep_alive(keep_alive);
    res.prepare_payload();
    if (res.result() == http::status::no_content || res.result() == http::status::not_modified) {
      // These never have a body, and RFC 9110 forbids Content-Length on a 204.
      res.erase(http::field::content_length);
      res.erase(http::field::content_type);
    }
    arm(kIoTimeout);
    if (is_head()) {
      http::response_serializer<http::string_body> sr{res};
      auto [ec, n] = co_await http::async_write_header(stream_, sr, use_nothrow);
      co_return !ec && keep_alive;
    }
    auto [ec, n] = co_await http::async_write(stream_, res, use_nothrow);
    co_return !ec && keep_alive;
  }

  // 400 and close; the request could not be framed, so nothing after it can be trusted.
  asio::awaitable<bool> send_bad_request(std::string reason) {
    POSTERN_LOG(info, "bad request").kv("error", reason);
    http::response<http::string_body> res{http::status::bad_request, 11};
    res.set(http::field::server, "postern-demo");
    res.set(http::field::content_type, "text/plain");
    res.keep_alive(false);
    res.body() = "bad request: " + reason + "\n";
    res.prepare_payload();
    arm(kIoTimeout);
    co_await http::async_write(stream_, res, use_nothrow);
    co_return false;
  }

  Stream stream_;
  bool upgraded_ = false;  // a WebSocket session took stream_ over
  beast::flat_buffer buffer_;
  std::unique_ptr<char[]> body_;  // one kChunkSize piece of request body at a time
  std::optional<Parser> parser_;
};

asio::awaitable<void> run_plain(tcp::socket socket) {
  Session<beast::tcp_stream> session{beast::tcp_stream(std::move(socket))};
  co_await session.run();
}

asio::awaitable<void> run_tls(tcp::socket socket, ssl::context& tls) {
  beast::ssl_stream<beast::tcp_stream> stream(beast::tcp_stream(std::move(socket)), tls);
  stream.next_layer().expires_after(kHandshakeTimeout);
  auto [ec] = co_await stream.async_handshake(ssl::stream_base::server, use_nothrow);
  if (ec) {
    POSTERN_LOG(info, "tls handshake failed").kv("error", ec.message());
    co_return;
  }
  Session<beast::ssl_stream<beast::tcp_stream>> session{std::move(stream)};
  co_await session.run();
}

void on_session_done(std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    POSTERN_LOG(error, "session failed").kv("error", x.what());
  }
}

}  // namespace

DemoServer::DemoServer(asio::io_context& ioc, tcp::endpoint endpoint, ssl::context* tls)
    : ioc_(ioc), endpoint_(std::move(endpoint)), tls_(tls), acceptor_(ioc) {}

tcp::endpoint DemoServer::listen() {
  acceptor_.open(endpoint_.protocol());
  acceptor_.set_option(asio::socket_base::reuse_address(true));
  acceptor_.bind(endpoint_);
  acceptor_.listen(asio::socket_base::max_listen_connections);
  return acceptor_.local_endpoint();
}

void DemoServer::start() { asio::co_spawn(acceptor_.get_executor(), accept_loop(), on_session_done); }

void DemoServer::stop() {
  error_code ignored;
  acceptor_.close(ignored);
}

asio::awaitable<void> DemoServer::accept_loop() {
  while (acceptor_.is_open()) {
    tcp::socket socket(asio::make_strand(ioc_));
    auto [ec] = co_await acceptor_.async_accept(socket, use_nothrow);
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
      POSTERN_LOG(warn, "accept failed").kv("error", ec.message());
      // Out of descriptors and the like: back off instead of spinning.
      asio::steady_timer pause(co_await asio::this_coro::executor, std::chrono::milliseconds(100));
      co_await pause.async_wait(use_nothrow);
      continue;
    }
    error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    const auto executor = socket.get_executor();
    if (tls_ != nullptr) {
      asio::co_spawn(executor, run_tls(std::move(socket), *tls_), on_session_done);
    } else {
      asio::co_spawn(executor, run_plain(std::move(socket)), on_session_done);
    }
  }
}

}  // namespace postern::demo
