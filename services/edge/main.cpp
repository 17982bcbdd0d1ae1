// postern-edge: wiring only (flags, config, contexts, signals).
#include <prometheus/registry.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdlib>

#include "common/observability/admin_server.hpp"
#include "common/observability/log.hpp"
#include "common/observability/otlp_exporter.hpp"
#include "common/service_main.hpp"
#include "edge/config_check.hpp"
#include "edge/edge_server.hpp"

int main(int argc, char** argv) {
  using namespace postern;
  tune_malloc();
  auto cl = parse_command_line(argc, argv, "edge");
  config::v1::EdgeConfig cfg;
  load_config_or_exit(cl, cfg, [&](config::Checks& c) { edge::check_config(cfg, c); });
  init_logging("edge", cfg.log().level(), cl.log_level);

  boost::asio::io_context ioc(1);
  auto metrics = std::make_shared<prometheus::Registry>();
  std::unique_ptr<tracing::OtlpExporter> spans;
  try {
    spans = tracing::start_tracing(cfg.tracing(), "edge", cfg.id(), *metrics);
  } catch (const std::exception& e) {
    die(e.what());
  }
  observability::AdminServer admin(ioc.get_executor(), metrics);
  edge::EdgeServer edge(ioc, cfg, metrics);
  admin.add_page("/status", "Postern edge " + cfg.id(), [&] { return edge.status_json(); });
  try {
    admin.start(cfg.admin().listen());
    edge.start();
  } catch (const std::exception& e) {
    die(e.what());
  }
  // Ready once the broker has sent its policy snapshot (or said it has none
  // yet): a restarted edge never serves without the current config.
  bool draining = false;
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        boost::asio::steady_timer t(ioc);
        while (!draining && !edge.ready()) {
          t.expires_after(std::chrono::milliseconds(20));
          co_await t.async_wait(use_nothrow);
        }
        if (draining) co_return;
        admin.set_ready(true);
        POSTERN_LOG(info, "edge ready").kv("id", cfg.id());
      },
      asio::detached);
  int code = run_until_drained(ioc, [&]() -> asio::awaitable<void> {
    draining = true;
    admin.set_ready(false);
    co_await edge.drain();
  });
  // What is queued is sent, briefly: spans of the last exchanges.
  if (spans) spans->stop(std::chrono::seconds(2));
  log::flush();
  std::fflush(stdout);
  std::_Exit(code);
}
