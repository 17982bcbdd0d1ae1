// postern-broker: wiring only (flags, config, contexts, signals).
#include <prometheus/registry.h>

#include <boost/asio/io_context.hpp>
#include <cstdlib>

#include "broker/broker.hpp"
#include "common/observability/admin_server.hpp"
#include "common/observability/log.hpp"
#include "common/service_main.hpp"

int main(int argc, char** argv) {
  using namespace postern;
  tune_malloc();
  auto cl = parse_command_line(argc, argv, "broker");
  config::v1::BrokerConfig cfg;
  load_config_or_exit(cl, cfg);
  init_logging("broker", cfg.log().level(), cl.log_level);

  boost::asio::io_context ioc(1);
  auto metrics = std::make_shared<prometheus::Registry>();
  observability::AdminServer admin(ioc.get_executor(), metrics);
  broker::Broker broker(ioc, cfg, metrics);
  try {
    admin.start(cfg.admin().listen());
    broker.start();
  } catch (const std::exception& e) {
    die(e.what());
  }
  admin.set_ready(true);
  POSTERN_LOG(info, "broker ready").kv("id", cfg.id());
  int code = run_until_drained(ioc, [&]() -> asio::awaitable<void> {
    admin.set_ready(false);
    co_await broker.drain();
  });
  std::fflush(stdout);
  std::_Exit(code);
}
