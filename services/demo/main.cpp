// postern-demo: wiring only — flags, TLS context, signals, threads.
//
//   postern-demo [--listen HOST:PORT] [--tls-cert FILE --tls-key FILE]
//                [--transform-listen HOST:PORT]
//                [--threads N] [--log-level debug|info|warn|error]

#include <openssl/ssl.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl/context.hpp>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/observability/log.hpp"
#include "demo/demo_server.hpp"
#include "demo/target.hpp"
#include "demo/transform_service.hpp"

namespace {

namespace asio = boost::asio;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

constexpr std::string_view kUsage =
    "usage: postern-demo [--listen HOST:PORT] [--tls-cert FILE --tls-key FILE]\n"
    "                    [--transform-listen HOST:PORT]\n"
    "                    [--threads N] [--log-level debug|info|warn|error]\n"
    "  --listen     address to serve on (default 127.0.0.1:8081; port 0 picks a free port)\n"
    "               HTTP endpoints, the WebSocket echo broadcaster on any path, /demo.html\n"
    "  --transform-listen  also serve the demo message transform service (gRPC) there\n"
    "  --tls-cert   PEM certificate chain; with --tls-key, serve HTTPS\n"
    "  --tls-key    PEM private key\n"
    "  --threads    I/O threads (default 1)\n"
    "  --log-level  minimum log level (default info)\n";

struct Flags {
  std::string host = "127.0.0.1";
  std::string port = "8081";
  std::string tls_cert;
  std::string tls_key;
  std::string transform_listen;
  unsigned threads = 1;
  postern::log::Level level = postern::log::Level::info;
};

[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr, "postern-demo: %s\n%.*s", message.c_str(), static_cast<int>(kUsage.size()), kUsage.data());
  std::exit(2);
}

// "HOST:PORT" or "[V6]:PORT".
bool split_host_port(std::string_view text, std::string& host, std::string& port) {
  std::string_view h;
  std::string_view p;
  if (text.starts_with('[')) {
    const auto close = text.find("]:");
    if (close == std::string_view::npos) return false;
    h = text.substr(1, close - 1);
    p = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return false;
    h = text.substr(0, colon);
    p = text.substr(colon + 1);
  }
  const auto number = postern::demo::parse_uint(p);
  if (h.empty() || !number || *number > 65535) return false;
  host = std::string(h);
  port = std::string(p);
  return true;
}

Flags parse_flags(int argc, char** argv) {
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::fputs(std::string(kUsage).c_str(), stdout);
      std::exit(0);
    }
    std::string value;
    // Both "--flag value" and "--flag=value".
    if (const auto eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      value = std::string(arg.substr(eq + 1));
      arg = arg.substr(0, eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      usage_error("missing value for " + std::string(arg));
    }
    if (arg == "--listen") {
      if (!split_host_port(value, flags.host, flags.port)) usage_error("--listen wants HOST:PORT, got " + value);
    } else if (arg == "--tls-cert") {
      flags.tls_cert = value;
    } else if (arg == "--tls-key") {
      flags.tls_key = value;
    } else if (arg == "--transform-listen") {
      std::string h, p;
      if (!split_host_port(value, h, p)) usage_error("--transform-listen wants HOST:PORT, got " + value);
      flags.transform_listen = value;
    } else if (arg == "--threads") {
      const auto n = postern::demo::parse_uint(value);
      if (!n || *n < 1 || *n > 256) usage_error("--threads wants 1-256, got " + value);
      flags.threads = static_cast<unsigned>(*n);
    } else if (arg == "--log-level") {
      if (!postern::log::parse_level(value, flags.level)) usage_error("bad --log-level " + value);
    } else {
      usage_error("unknown flag " + std::string(arg));
    }
  }
  if (flags.tls_cert.empty() != flags.tls_key.empty()) usage_error("--tls-cert and --tls-key go together");
  return flags;
}

// Offers only HTTP/1.1 over ALPN, so a client that asks for h2 knows not to use it.
int select_http11(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in, unsigned inlen,
                  void*) {
  static constexpr unsigned char kProtos[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, outlen, kProtos, sizeof kProtos, in, inlen) != OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_NOACK;
  }
  *out = selected;
  return SSL_TLSEXT_ERR_OK;
}

std::unique_ptr<ssl::context> make_tls_context(const Flags& flags) {
  auto ctx = std::make_unique<ssl::context>(ssl::context::tls_server);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                   ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
  ctx->use_certificate_chain_file(flags.tls_cert);
  ctx->use_private_key_file(flags.tls_key, ssl::context::pem);
  SSL_CTX_set_alpn_select_cb(ctx->native_handle(), select_http11, nullptr);
  return ctx;
}

tcp::endpoint resolve_listen(asio::io_context& ioc, const Flags& flags) {
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(flags.host, ec);
  if (!ec) return {address, static_cast<unsigned short>(std::stoul(flags.port))};
  tcp::resolver resolver(ioc);
  const auto results = resolver.resolve(flags.host, flags.port, tcp::resolver::passive);
  return results.begin()->endpoint();
}

}  // namespace

int main(int argc, char** argv) {
  const Flags flags = parse_flags(argc, argv);
  postern::log::init("demo", flags.level);
  // A peer that resets mid-write must be an error code, never a signal.
  std::signal(SIGPIPE, SIG_IGN);

  try {
    asio::io_context ioc(static_cast<int>(flags.threads));
    std::unique_ptr<ssl::context> tls;
    if (!flags.tls_cert.empty()) tls = make_tls_context(flags);

    postern::demo::DemoServer server(ioc, resolve_listen(ioc, flags), tls.get());
    const auto bound = server.listen();
    server.start();
    POSTERN_LOG(info, "listening")
        .kv("listener", "http")
        .kv("address", bound.address().to_string())
        .kv("port", static_cast<unsigned>(bound.port()))
        .kv("tls", tls != nullptr)
        .kv("threads", flags.threads);

    std::unique_ptr<postern::demo::TransformServer> transform;
    if (!flags.transform_listen.empty()) {
      transform = std::make_unique<postern::demo::TransformServer>(flags.transform_listen);
      const auto colon = flags.transform_listen.rfind(':');
      POSTERN_LOG(info, "listening")
          .kv("listener", "transform")
          .kv("address", flags.transform_listen.substr(0, colon))
          .kv("port", transform->port());
    }

    asio::signal_set signals(ioc, SIGINT, SIGTERM);
    signals.async_wait([&](const boost::system::error_code& ec, int signal) {
      if (ec) return;
      POSTERN_LOG(info, "shutting down").kv("signal", signal);
      server.stop();
      ioc.stop();
    });

    std::vector<std::thread> workers;
    for (unsigned i = 1; i < flags.threads; ++i) workers.emplace_back([&ioc] { ioc.run(); });
    ioc.run();
    for (auto& t : workers) t.join();
  } catch (const std::exception& e) {
    POSTERN_LOG(error, "fatal").kv("error", e.what());
    return 1;
  }
  return 0;
}
