#include "edge/listener.hpp"

#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "common/file_watch.hpp"
#include "common/net/listen.hpp"
#include "common/net/tls.hpp"
#include "common/observability/certificate_expiry.hpp"
#include "common/observability/log.hpp"

namespace postern::edge {

using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

Listeners::Listeners(asio::any_io_executor ex, Accepted accepted)
    : ex_(std::move(ex)), accepted_(std::move(accepted)) {}
Listeners::~Listeners() = default;

void Listeners::start(const google::protobuf::RepeatedPtrField<config::v1::Listener>& listeners,
                      std::chrono::seconds file_check_interval, const bool* stop) {
  if (listeners.empty()) throw std::runtime_error("listeners: at least one external listener is required");
  for (int i = 0; i < listeners.size(); ++i) listeners_.push_back(bind(ex_, listeners.Get(i), i));
  for (auto& l : listeners_) {
    asio::co_spawn(ex_, accept_loop(l), asio::detached);
    if (l.tls) {
      asio::co_spawn(ex_, watch_files({l.cert_file, l.key_file}, file_check_interval,
                                      [this, &l] { return reload_tls(l); }, stop),
                     asio::detached);
    }
  }
}

Listeners::Listener Listeners::bind(asio::any_io_executor ex, const config::v1::Listener& l, int i) {
  Listener L;
  L.name = i == 0 ? "external" : "external-" + std::to_string(i);
  if (l.has_tls()) {
    try {
      L.tls = net::make_server_tls(l.tls().cert_file(), l.tls().key_file());
    } catch (const std::exception& e) {
      throw std::runtime_error("listeners[" + std::to_string(i) + "].tls: " + e.what());
    }
    L.name = i == 0 ? "external-tls" : L.name + "-tls";
    L.cert_file = l.tls().cert_file();
    observability::track_certificate("listeners[" + std::to_string(i) + "].tls.cert_file", L.cert_file);
    L.key_file = l.tls().key_file();
  }
  tcp::endpoint ep;
  try {
    ep = net::parse_listen(l.listen());
  } catch (const std::exception& e) {
    throw std::runtime_error("listeners[" + std::to_string(i) + "].listen: " + e.what());
  }
  L.acceptor = std::make_unique<tcp::acceptor>(ex);
  boost::system::error_code ec;
  L.acceptor->open(ep.protocol(), ec);
  if (!ec) L.acceptor->set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) L.acceptor->bind(ep, ec);
  if (!ec) L.acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw std::runtime_error("listeners[" + std::to_string(i) + "]: cannot listen on " + l.listen() + ": " + ec.message());
  POSTERN_LOG(info, "listening")
      .kv("listener", L.name)
      .kv("address", ep.address().to_string())
      .kv("port", static_cast<unsigned>(L.acceptor->local_endpoint().port()))
      .kv("tls", static_cast<bool>(L.tls));
  return L;
}

// A renewed certificate serves every connection from now on.
bool Listeners::reload_tls(Listener& l) {
  try {
    l.tls = net::make_server_tls(l.cert_file, l.key_file);
    POSTERN_LOG(info, "tls certificate reloaded").kv("listener", l.name).kv("cert_file", l.cert_file);
  } catch (const std::exception& e) {
    POSTERN_LOG(error, "tls certificate not reloaded; the old one stays").kv("listener", l.name).kv("error", e.what());
  }
  return true;
}

asio::awaitable<void> Listeners::accept_loop(Listener& l) {
  for (;;) {
    auto [ec, socket] = co_await l.acceptor->async_accept(use_nothrow);
    if (ec) {
      if (!l.acceptor->is_open()) co_return;
      // EMFILE and friends: back off a little rather than spin.
      asio::steady_timer t(ex_, 50ms);
      co_await t.async_wait(use_nothrow);
      continue;
    }
    accepted_(std::move(socket), l.tls);
  }
}

std::size_t Listeners::accept_backlog(Listener& l) {
  std::size_t n = 0;
  boost::system::error_code ec;
  l.acceptor->non_blocking(true, ec);
  while (!ec) {
    tcp::socket socket(ex_);
    l.acceptor->accept(socket, ec);
    if (ec) break;
    accepted_(std::move(socket), l.tls);
    ++n;
  }
  return n;
}

std::size_t Listeners::close() {
  std::size_t backlog = 0;
  for (auto& l : listeners_) {
    backlog += accept_backlog(l);
    boost::system::error_code ec;
    l.acceptor->close(ec);
  }
  return backlog;
}

// ------------------------------------------------------------ waiting connections

WaitingConnections::WaitingConnections(asio::any_io_executor ex) : no_fresh_(std::move(ex)) { no_fresh_.set(); }

asio::awaitable<void> WaitingConnections::drain(std::chrono::steady_clock::duration grace) {
  auto closers = std::move(idle_waiting_);
  idle_waiting_.clear();
  for (auto& [_, close] : closers) close();
  const bool all_spoke = co_await no_fresh_.wait_for(grace);
  if (!all_spoke) {
    auto silent = std::move(fresh_waiting_);
    fresh_waiting_.clear();
    for (auto& [_, close] : silent) close();
  }
}

}  // namespace postern::edge
