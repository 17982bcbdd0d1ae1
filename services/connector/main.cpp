// postern-connector: wiring only (flags, config, contexts, signals).
#include <prometheus/registry.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdlib>

#include "common/observability/admin_server.hpp"
#include "common/observability/log.hpp"
#include "common/observability/otlp_exporter.hpp"
#include "common/service_main.hpp"
#include "connector/config_check.hpp"
#include "connector/connector.hpp"

int main(int argc, char** argv) {
  using namespace postern;
  tune_malloc();
  auto cl = parse_command_line(argc, argv, "connector");
  config::v1::ConnectorConfig cfg;
  load_config_or_exit(cl, cfg, [&](config::Checks& c) { connector::check_config(cfg, c); });
  init_logging("connector", cfg.log().level(), cl.log_level);

  boost::asio::io_context ioc(1);
  auto metrics = std::make_shared<prometheus::Registry>();
  std::unique_ptr<tracing::OtlpExporter> spans;
  try {
    spans = tracing::start_tracing(cfg.tracing(), "connector", cfg.id(), *metrics);
  } catch (const std::exception& e) {
    die(e.what());
  }
  observability::AdminServer admin(ioc.get_executor(), metrics);
  connector::Connector connector(ioc, cfg, metrics);
  try {
    // The admin port is pod-local: loopback unless configured otherwise.
    admin.start(cfg.admin().listen().empty() ? "127.0.0.1:0" : cfg.admin().listen());
    connector.start();
  } catch (const std::exception& e) {
    die(e.what());
  }
  // Ready once attached to at least one broker.
  bool draining = false;
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        boost::asio::steady_timer t(ioc);
        while (!draining) {
          admin.set_ready(connector.attached());
          t.expires_after(std::chrono::milliseconds(200));
          co_await t.async_wait(use_nothrow);
        }
      },
      asio::detached);
  int code = run_until_drained(ioc, [&]() -> asio::awaitable<void> {
    draining = true;
    admin.set_ready(false);
    co_await connector.drain();
  });
  // What is queued is sent, briefly: spans of the last exchanges.
  if (spans) spans->stop(std::chrono::seconds(2));
  log::flush();
  std::fflush(stdout);
  std::_Exit(code);
}
