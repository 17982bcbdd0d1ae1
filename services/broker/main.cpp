// postern-broker: wiring only (flags, config, contexts, signals).
#include <prometheus/registry.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <string>
#include <cstdlib>

#include "broker/broker.hpp"
#include "broker/config_check.hpp"
#include "common/observability/admin_server.hpp"
#include "common/observability/log.hpp"
#include "common/observability/otlp_exporter.hpp"
#include "common/service_main.hpp"

int main(int argc, char** argv) {
  using namespace postern;
  tune_malloc();
  auto cl = parse_command_line(argc, argv, "broker");
  config::v1::BrokerConfig cfg;
  load_config_or_exit(cl, cfg, [&](config::Checks& c) { broker::check_config(cfg, c); });
  init_logging("broker", cfg.log().level(), cl.log_level);

  boost::asio::io_context ioc(1);
  auto metrics = std::make_shared<prometheus::Registry>();
  std::unique_ptr<tracing::OtlpExporter> spans;
  try {
    spans = tracing::start_tracing(cfg.tracing(), "broker", cfg.id(), *metrics);
  } catch (const std::exception& e) {
    die(e.what());
  }
  observability::AdminServer admin(ioc.get_executor(), metrics);
  broker::Broker broker(ioc, cfg, metrics);
  admin.add_page("/status", "Postern broker " + cfg.id(), [&] { return broker.status_json(); });
  try {
    admin.start(cfg.admin().listen());
    broker.start();
  } catch (const std::exception& e) {
    die(e.what());
  }
  // /readyz follows Broker::ready(): once connectors are back for every
  // routed alias, or ready_grace after start; 503 again while draining.
  bool draining = false;
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        boost::asio::steady_timer tick(ioc);
        bool was = false;
        while (!draining) {
          std::string why;
          const bool now = broker.ready(&why);
          admin.set_ready(now);
          if (now && !was) POSTERN_LOG(info, "broker ready").kv("id", cfg.id()).kv("because", why);
          was = now;
          tick.expires_after(std::chrono::milliseconds(100));
          co_await tick.async_wait(use_nothrow);
        }
      },
      asio::detached);
  POSTERN_LOG(info, "broker started").kv("id", cfg.id());
  int code = run_until_drained(ioc, [&]() -> asio::awaitable<void> {
    draining = true;
    admin.set_ready(false);
    co_await broker.drain();
  });
  // What is queued is sent, briefly: spans of the last exchanges.
  if (spans) spans->stop(std::chrono::seconds(2));
  log::flush();
  std::fflush(stdout);
  std::_Exit(code);
}
