#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

/// Child processes for integration tests: the real service binaries, and
/// helper commands (curl, bash scripts, python clients).
namespace postern::testing {

/// A child process whose stdout and stderr are appended to a log file.
///
/// The child runs in its own process group, with only fds 0-2 open (stdin is
/// /dev/null), and with PR_SET_PDEATHSIG(SIGKILL): if the test process dies the
/// child dies too. Note that the death signal fires when the *thread* that
/// called start() exits, so start long-lived processes from the test's main
/// thread (or a thread that outlives them).
///
/// Not thread-safe: use one Process from one thread at a time.
class Process {
 public:
  /// Starts argv[0] (a path; a bare name is looked up in $PATH) with stdout and
  /// stderr appended to `log_path` (created if missing, opened O_APPEND).
  /// env_extra: NAME=VALUE entries added to (or replacing in) the environment.
  /// Throws std::runtime_error if the log cannot be opened or exec fails.
  static std::unique_ptr<Process> start(std::vector<std::string> argv, std::string log_path,
                                        std::vector<std::string> env_extra = {});

  /// SIGKILLs the process group if the process is still running, then reaps.
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  const std::vector<std::string>& argv() const { return argv_; }

  /// True while the process has not exited; reaps it once it has.
  bool running();

  /// Sends `sig` to the process (not its group). A no-op once it was reaped.
  void signal(int sig);

  /// Sends `sig` to the whole process group (the process and its children).
  void signal_group(int sig);

  /// Waits up to `timeout` for the process to exit. Returns its exit status
  /// (WEXITSTATUS, or 128 + signal number if a signal killed it), or
  /// std::nullopt on timeout. Once it has exited, returns the same status again.
  std::optional<int> wait(std::chrono::milliseconds timeout);

  /// Everything the process wrote so far. The log file may hold earlier runs
  /// (it is opened O_APPEND, e.g. across a restart with the same path); only
  /// what was written since this Process started is returned, and only that is
  /// searched by wait_for_log() and count_log().
  std::string log() const;

  /// Bytes written to the log since this Process started; pass it as
  /// `from_offset` to wait_for_log() to wait for a *new* line.
  std::size_t log_size() const;

  const std::string& log_path() const { return log_path_; }

  /// The last `lines` lines of log(), for failure messages.
  std::string log_tail(std::size_t lines = 40) const;

  /// Polls the log (every ~10 ms) until a complete line at or after
  /// `from_offset` (see log_size()) matches `pattern` (std::regex, ECMAScript,
  /// regex_search per line); returns that line without its newline.
  /// Throws std::runtime_error, with the last 40 log lines in the message, on
  /// timeout or if the process exits first.
  std::string wait_for_log(const std::string& pattern,
                           std::chrono::milliseconds timeout = std::chrono::seconds(20),
                           std::size_t from_offset = 0);

  /// As wait_for_log(), with an arbitrary predicate; `what` names it in errors.
  std::string wait_for_line(const std::function<bool(const std::string&)>& match,
                            const std::string& what, std::chrono::milliseconds timeout,
                            std::size_t from_offset = 0);

  /// How many lines of log() match `pattern` (regex_search).
  int count_log(const std::string& pattern) const;

  /// Services log JSON lines such as
  /// {"ts":"..","level":"info","svc":"edge","msg":"listening","listener":"external","address":"127.0.0.1","port":34567}.
  /// Waits for the "listening" line of `listener` and returns its port.
  std::uint16_t wait_for_port(const std::string& listener,
                              std::chrono::milliseconds timeout = std::chrono::seconds(20));

  /// VmHWM from /proc/PID/status in KiB. After the process was reaped, the
  /// peak RSS reported by wait4(); -1 if neither is available (e.g. a zombie
  /// not yet reaped: call running() or wait() first).
  long peak_rss_kib() const;

  /// VmRSS from /proc/PID/status in KiB, or -1 if the process is gone.
  long rss_kib() const;

 private:
  Process() = default;
  /// waitpid(WNOHANG); records the status. True if the process has exited.
  bool try_reap();

  pid_t pid_ = -1;
  std::vector<std::string> argv_;
  std::string log_path_;
  std::size_t log_start_ = 0;  // log file size when this process started
  bool reaped_ = false;
  int exit_status_ = -1;
  long max_rss_kib_ = -1;
};

/// What run_command() observed.
struct CommandResult {
  /// Exit status as Process::wait() reports it; -1 if it timed out (it was killed).
  int exit_code = -1;
  bool timed_out = false;
  std::string out;  ///< stdout
  std::string err;  ///< stderr
};

/// Runs argv to completion with separate stdout and stderr captures (through
/// temporary files, so output size is not limited by a pipe). The child gets
/// the same isolation as Process. Kills its process group after `timeout`.
/// env_extra: NAME=VALUE entries added to the environment; env_remove: names
/// removed from it. Throws std::runtime_error if exec fails.
CommandResult run_command(const std::vector<std::string>& argv,
                          std::chrono::milliseconds timeout = std::chrono::seconds(60),
                          const std::vector<std::string>& env_extra = {},
                          const std::vector<std::string>& env_remove = {});

/// Polls `pred` every 20 ms until it holds or `timeout` passes; returns its
/// last value. For conditions with no log line or port to wait on.
bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout);

}  // namespace postern::testing
