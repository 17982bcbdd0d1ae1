#pragma once
// What every service's main() shares: flags, config loading, logging setup
// and the signal-driven run loop.

#include <boost/asio/io_context.hpp>
#include <functional>
#include <string>
#include <string_view>

#include "common/asio.hpp"
#include "common/version.hpp"

namespace google::protobuf {
class Message;
}

namespace postern {

namespace config {
class Checks;
}

struct CommandLine {
  std::string config_path;
  std::string log_level;  // overrides the config's level when set
  bool check_only = false;  // --check-config: load the config, report, exit
};

/// Sets glibc malloc up for bodies that cross in pieces of up to 256 KiB
/// (call first in main): such blocks come from the heap and are used again,
/// rather than each being mmapped, faulted in page by page and unmapped, and
/// the heap keeps up to 8 MiB free at its top instead of giving it back after
/// every piece; and every thread shares one heap, so memory stays flat as
/// gRPC starts threads. Left alone when GLIBC_TUNABLES sets malloc options,
/// and when jemalloc is the allocator (the default build links it:
/// cmake/PosternMalloc.cmake).
void tune_malloc();

/// Parses `--config FILE [--log-level LEVEL] [--check-config]`; prints usage
/// and exits 2 on anything else. `--help` prints what the service is, its
/// options, `extra_help` (a binary's subcommands) and the exit codes;
/// `--version` the version; both exit 0.
CommandLine parse_command_line(int argc, char** argv, std::string_view service, std::string_view extra_help = {});

/// The --help text of postern-`service`, with `extra` (subcommands) before
/// the exit codes.
void print_help(std::string_view service, std::string_view extra = {});

/// Loads the YAML config and runs `check` on it (the service's own checks:
/// required fields, addresses, files; see config/checks.hpp), also when the
/// schema found problems, so that one run reports them all. On any problem
/// prints each to stderr, one per line as FILE:LINE:COL: FIELD: message, and
/// exits 2. With --check-config it then prints "FILE: ok" and exits 0 (for
/// deployment pipelines and chart tests).
void load_config_or_exit(const CommandLine& cl, google::protobuf::Message& config,
                         const std::function<void(config::Checks&)>& check = {});

/// Configures the logger; exits 2 on an unknown level.
void init_logging(std::string_view service, const std::string& config_level, const std::string& override_level);

/// Prints a fatal startup error naming what is wrong and exits 1.
[[noreturn]] void die(std::string_view what);

/// Runs `ioc` on this thread. The first SIGTERM/SIGINT starts `drain`
/// (which should finish in-flight work and stop everything); a second
/// signal exits at once. Returns the process exit code.
int run_until_drained(boost::asio::io_context& ioc, std::function<asio::awaitable<void>()> drain);

}  // namespace postern
