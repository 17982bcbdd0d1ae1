// postern-policy: wiring only (flags, config, contexts, signals), plus
// `postern-policy validate FILE` for users' CI pipelines.
#include <prometheus/registry.h>

#include <boost/asio/io_context.hpp>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "common/observability/admin_server.hpp"
#include "common/observability/log.hpp"
#include "common/service_main.hpp"
#include "policy/policy_file.hpp"
#include "policy/policy_service.hpp"

namespace {

int validate(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: postern-policy validate FILE...\n";
    return 2;
  }
  int bad = 0;
  for (int i = 2; i < argc; ++i) {
    auto loaded = postern::policy_service::load_policy_file(argv[i], 1, argv[i]);
    if (!loaded.catalog) {
      ++bad;
      for (const auto& e : loaded.errors) std::cerr << e << '\n';
      std::cerr << argv[i] << ": invalid (" << loaded.errors.size() << " problem"
                << (loaded.errors.size() == 1 ? "" : "s") << ")\n";
      continue;
    }
    const auto& c = loaded.catalog->snapshot().config();
    std::cout << argv[i] << ": ok (" << c.apis_size() << " APIs, " << c.applications_size() << " applications)\n";
  }
  return bad ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace postern;
  if (argc >= 2 && std::strcmp(argv[1], "validate") == 0) return validate(argc, argv);
  tune_malloc();
  auto cl = parse_command_line(argc, argv, "policy");
  config::v1::PolicyServiceConfig cfg;
  load_config_or_exit(cl, cfg);
  init_logging("policy", cfg.log().level(), cl.log_level);

  boost::asio::io_context ioc(1);
  auto metrics = std::make_shared<prometheus::Registry>();
  observability::AdminServer admin(ioc.get_executor(), metrics);
  policy_service::PolicyService service(ioc, cfg, metrics);
  admin.add_json("/apis", [&] { return service.apis_json(); });
  admin.add_json("/applications", [&] { return service.applications_json(); });
  try {
    admin.start(cfg.admin().listen());
    service.start();
  } catch (const std::exception& e) {
    die(e.what());
  }
  admin.set_ready(true);
  POSTERN_LOG(info, "policy ready").kv("id", cfg.id());
  int code = run_until_drained(ioc, [&]() -> asio::awaitable<void> {
    admin.set_ready(false);
    co_await service.drain();
  });
  std::fflush(stdout);
  std::_Exit(code);
}
