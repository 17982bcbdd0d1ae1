// postern-policy: wiring only (flags, config, contexts, signals), plus
// `postern-policy validate FILE` for users' CI pipelines and
// `postern-policy hash-password` for Basic credentials in the policy file.
#include <prometheus/registry.h>

#include <boost/asio/io_context.hpp>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <string_view>

#include <termios.h>
#include <unistd.h>

#include "common/crypto/password.hpp"

#include "common/observability/admin_server.hpp"
#include "common/observability/log.hpp"
#include "common/service_main.hpp"
#include "policy/config_check.hpp"
#include "policy/policy_file.hpp"
#include "policy/policy_service.hpp"

namespace {

constexpr std::string_view kCommands =
    "\ncommands:\n"
    "  validate FILE...       check policy files as the service would load them: every problem as\n"
    "                         file:line:col: field: message; exit 0 if all are valid, 1 if one is not\n"
    "  hash-password [--iterations N] < PASSWORD\n"
    "                         a salted PBKDF2-HMAC-SHA256 hash for a policy file's basic[].password_hash;\n"
    "                         the password is read from standard input (asked for on a terminal)\n";

bool asks_for_help(int argc, char** argv) {
  for (int i = 2; i < argc; ++i) {
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) return true;
  }
  return false;
}

int validate(int argc, char** argv) {
  if (asks_for_help(argc, argv)) {
    std::cout << "usage: postern-policy validate FILE...\n"
                 "  checks policy files as the service would load them and prints every problem as\n"
                 "  file:line:col: field: message; exit 0 if all are valid, 1 if one is not, 2 on bad usage\n";
    return 0;
  }
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
    for (const auto& w : loaded.catalog->warnings()) std::cerr << argv[i] << ": warning: " << w << '\n';
    const auto& c = loaded.catalog->snapshot().config();
    std::cout << argv[i] << ": ok (" << c.apis_size() << " APIs, " << c.applications_size() << " applications)\n";
  }
  return bad ? 1 : 0;
}

// Reads the password from standard input (never from the command line,
// where `ps` and the shell history would keep it): without echo on a
// terminal, else the first line.
int hash_password(int argc, char** argv) {
  if (asks_for_help(argc, argv)) {
    std::cout << "usage: postern-policy hash-password [--iterations N] < password\n"
                 "  prints \"$pbkdf2-sha256$i=N$SALT$HASH\" for a policy file's basic[].password_hash;\n"
                 "  reads the password from standard input (asks for it on a terminal); exit 0, or 2 on bad usage\n";
    return 0;
  }
  std::uint32_t iterations = postern::crypto::kPasswordIterations;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--iterations" && i + 1 < argc) {
      iterations = static_cast<std::uint32_t>(std::strtoul(argv[++i], nullptr, 10));
    } else {
      std::cerr << "usage: postern-policy hash-password [--iterations N] < password\n"
                   "  prints \"$pbkdf2-sha256$i=N$SALT$HASH\" for a policy file's basic[].password_hash;\n"
                   "  reads the password from standard input (asks for it on a terminal)\n";
      return 2;
    }
  }
  const bool tty = isatty(STDIN_FILENO) == 1;
  termios saved{};
  if (tty) {
    std::cerr << "password: " << std::flush;
    tcgetattr(STDIN_FILENO, &saved);
    termios quiet = saved;
    quiet.c_lflag &= static_cast<tcflag_t>(~ECHO);
    tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
  }
  std::string password;
  std::getline(std::cin, password);
  if (tty) {
    tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    std::cerr << '\n';
  }
  if (!password.empty() && password.back() == '\r') password.pop_back();
  if (password.empty()) {
    std::cerr << "postern-policy hash-password: empty password\n";
    return 1;
  }
  try {
    std::cout << postern::crypto::hash_password(password, iterations) << '\n';
  } catch (const std::exception& e) {
    std::cerr << "postern-policy hash-password: " << e.what() << '\n';
    return 2;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace postern;
  if (argc >= 2 && std::strcmp(argv[1], "validate") == 0) return validate(argc, argv);
  if (argc >= 2 && std::strcmp(argv[1], "hash-password") == 0) return hash_password(argc, argv);
  tune_malloc();
  auto cl = parse_command_line(argc, argv, "policy", kCommands);
  config::v1::PolicyServiceConfig cfg;
  load_config_or_exit(cl, cfg, [&](config::Checks& c) { policy_service::check_config(cfg, c); });
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
  log::flush();
  std::fflush(stdout);
  std::_Exit(code);
}
