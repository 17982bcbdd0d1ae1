#include "common/observability/admin_server.hpp"

#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <map>

#include "common/net/listen.hpp"
#include "common/observability/certificate_expiry.hpp"
#include "common/observability/log.hpp"
#include "common/observability/process_metrics.hpp"
#include "common/observability/status_page.hpp"

namespace postern::observability {
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

struct AdminServer::Impl {
  asio::any_io_executor ex;
  std::shared_ptr<prometheus::Registry> registry;
  tcp::acceptor acceptor;
  AdminServer* owner;
  struct Route {
    std::function<std::string()> json;
    std::string page_title;  // set: HTML unless the client asks for JSON
  };
  std::map<std::string, Route> routes;

  Impl(asio::any_io_executor e, std::shared_ptr<prometheus::Registry> r, AdminServer* o)
      : ex(e), registry(std::move(r)), acceptor(e), owner(o) {}

  asio::awaitable<void> session(tcp::socket socket) {
    beast::tcp_stream stream(std::move(socket));
    beast::flat_buffer buffer;
    for (;;) {
      http::request<http::string_body> req;
      stream.expires_after(std::chrono::seconds(30));
      auto [ec, n] = co_await http::async_read(stream, buffer, req, use_nothrow);
      if (ec) co_return;
      http::response<http::string_body> res;
      res.version(req.version());
      res.keep_alive(req.keep_alive());
      res.set(http::field::server, "postern-admin");
      const auto target = req.target();
      const auto path = target.substr(0, target.find('?'));
      if (path == "/healthz") {
        res.result(http::status::ok);
        res.set(http::field::content_type, "text/plain");
        res.body() = "ok\n";
      } else if (path == "/readyz") {
        const bool ready = owner->ready();
        res.result(ready ? http::status::ok : http::status::service_unavailable);
        res.set(http::field::content_type, "text/plain");
        res.body() = ready ? "ready\n" : "not ready\n";
      } else if (path == "/metrics") {
        res.result(http::status::ok);
        res.set(http::field::content_type, "text/plain; version=0.0.4");
        auto families = registry->Collect();
        for (auto& f : process_metrics()) families.push_back(std::move(f));
        for (auto& f : certificate_metrics()) families.push_back(std::move(f));
        res.body() = prometheus::TextSerializer().Serialize(families);
      } else if (auto it = routes.find(std::string(path)); it != routes.end()) {
        res.result(http::status::ok);
        res.set(http::field::cache_control, "no-store");
        const bool html = !it->second.page_title.empty() && !wants_json(req[http::field::accept]);
        res.set(http::field::content_type, html ? "text/html; charset=utf-8" : "application/json");
        if (!it->second.page_title.empty()) res.set(http::field::vary, "Accept");
        res.body() = html ? status_html(it->second.page_title, it->second.json()) : it->second.json();
      } else {
        res.result(http::status::not_found);
        res.set(http::field::content_type, "text/plain");
        std::string list = "admin endpoints: /healthz /readyz /metrics";
        for (const auto& [p, _] : routes) list += " " + p;
        res.body() = list + "\n";
      }
      res.prepare_payload();
      auto [wec, wn] = co_await http::async_write(stream, res, use_nothrow);
      if (wec || !res.keep_alive()) co_return;
    }
  }

  asio::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, socket] = co_await acceptor.async_accept(use_nothrow);
      if (ec) {
        if (!acceptor.is_open()) co_return;
        continue;
      }
      asio::co_spawn(ex, session(std::move(socket)), asio::detached);
    }
  }
};

AdminServer::AdminServer(asio::any_io_executor ex, std::shared_ptr<prometheus::Registry> registry)
    : impl_(std::make_unique<Impl>(ex, std::move(registry), this)) {}

AdminServer::~AdminServer() = default;

void AdminServer::add_json(const std::string& path, std::function<std::string()> body) {
  impl_->routes[path] = {std::move(body), {}};
}

void AdminServer::add_page(const std::string& path, std::string title, std::function<std::string()> json) {
  impl_->routes[path] = {std::move(json), std::move(title)};
}

void AdminServer::start(const std::string& listen) {
  auto ep = net::parse_listen(listen.empty() ? "127.0.0.1:0" : listen);
  boost::system::error_code ec;
  auto& a = impl_->acceptor;
  a.open(ep.protocol(), ec);
  if (!ec) a.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) a.bind(ep, ec);
  if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw std::runtime_error("admin port: cannot listen on " + listen + ": " + ec.message());
  port_ = a.local_endpoint().port();
  POSTERN_LOG(info, "listening")
      .kv("listener", "admin")
      .kv("address", ep.address().to_string())
      .kv("port", static_cast<unsigned>(port_));
  asio::co_spawn(impl_->ex, impl_->accept_loop(), asio::detached);
}

void AdminServer::stop() {
  boost::system::error_code ec;
  impl_->acceptor.close(ec);
}

}  // namespace postern::observability
