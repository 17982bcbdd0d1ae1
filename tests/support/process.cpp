#include "support/process.hpp"

#include "support/files.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace postern::testing {
namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void throw_errno(const std::string& what) {
  const int err = errno;
  throw std::runtime_error(what + ": " + std::strerror(err));
}

/// Moves `fd` to a number above 2 (so the child can dup2 onto 0-2 without
/// clobbering it) and makes it close-on-exec.
int above_stdio(int fd) {
  if (fd > 2) return fd;
  const int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (moved < 0) throw_errno("fcntl(F_DUPFD_CLOEXEC)");
  ::close(fd);
  return moved;
}

/// argv[0] itself if it holds a '/', else the first executable match in $PATH.
std::string resolve_program(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* env_path = std::getenv("PATH");
  std::string path = env_path != nullptr ? env_path : "/usr/local/bin:/usr/bin:/bin";
  std::stringstream dirs(path);
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    const std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + name;
    struct stat st{};
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
  }
  throw std::runtime_error("cannot find " + name + " in PATH=" + path);
}

std::string env_name(const std::string& entry) { return entry.substr(0, entry.find('=')); }

std::vector<std::string> build_env(const std::vector<std::string>& extra, const std::vector<std::string>& remove) {
  std::vector<std::string> drop = remove;
  for (const auto& e : extra) drop.push_back(env_name(e));
  std::vector<std::string> env;
  for (char** p = environ; p != nullptr && *p != nullptr; ++p) {
    std::string entry(*p);
    if (std::find(drop.begin(), drop.end(), env_name(entry)) == drop.end()) env.push_back(std::move(entry));
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

std::vector<char*> c_array(std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

/// Forks and execs argv with stdin on /dev/null and stdout/stderr on the given
/// fds (which the caller still owns). Returns the pid once exec succeeded;
/// throws with exec's errno otherwise.
pid_t spawn(std::vector<std::string> argv, int out_fd, int err_fd, const std::vector<std::string>& env_extra,
            const std::vector<std::string>& env_remove) {
  if (argv.empty()) throw std::runtime_error("spawn: empty argv");
  std::string program = resolve_program(argv[0]);
  std::vector<std::string> env = build_env(env_extra, env_remove);
  std::vector<char*> c_argv = c_array(argv);
  std::vector<char*> c_env = c_array(env);

  // Everything the child touches is prepared here: between fork and exec only
  // async-signal-safe calls are allowed (the test process may have threads).
  int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull < 0) throw_errno("open /dev/null");
  devnull = above_stdio(devnull);
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) {
    ::close(devnull);
    throw_errno("pipe2");
  }
  report[0] = above_stdio(report[0]);
  report[1] = above_stdio(report[1]);
  // Private duplicates (above 2, close-on-exec), so the caller's fds stay its own.
  out_fd = ::fcntl(out_fd, F_DUPFD_CLOEXEC, 3);
  err_fd = out_fd < 0 ? -1 : ::fcntl(err_fd, F_DUPFD_CLOEXEC, 3);
  if (out_fd < 0 || err_fd < 0) {
    const int err = errno;
    for (int fd : {devnull, report[0], report[1], out_fd}) {
      if (fd >= 0) ::close(fd);
    }
    errno = err;
    throw_errno("fcntl(F_DUPFD_CLOEXEC)");
  }
  struct rlimit nofile{};
  int max_fd = 65536;
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY) {
    max_fd = static_cast<int>(std::min<rlim_t>(nofile.rlim_cur, 1 << 20));
  }
  const pid_t parent = ::getpid();

  const pid_t pid = ::fork();
  if (pid < 0) {
    const int err = errno;
    for (int fd : {devnull, report[0], report[1], out_fd, err_fd}) ::close(fd);
    errno = err;
    throw_errno("fork");
  }
  if (pid == 0) {
    ::dup2(devnull, 0);
    ::dup2(out_fd, 1);
    ::dup2(err_fd, 2);
    if (report[1] != 3) ::dup3(report[1], 3, O_CLOEXEC);
    if (::close_range(4, ~0U, 0) != 0) {
      for (int fd = 4; fd < max_fd; ++fd) ::close(fd);
    }
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);  // the parent died before prctl
    struct sigaction dfl{};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &dfl, nullptr);
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(program.c_str(), c_argv.data(), c_env.data());
    const int err = errno;
    [[maybe_unused]] const ssize_t n = ::write(3, &err, sizeof err);
    ::_exit(127);
  }

  // Both sides call setpgid so that the group exists before either proceeds.
  ::setpgid(pid, pid);
  for (int fd : {devnull, report[1], out_fd, err_fd}) ::close(fd);
  int child_errno = 0;
  ssize_t n;
  do {
    n = ::read(report[0], &child_errno, sizeof child_errno);
  } while (n < 0 && errno == EINTR);
  ::close(report[0]);
  if (n > 0) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    throw std::runtime_error("cannot exec " + program + ": " + std::strerror(child_errno));
  }
  return pid;
}

int decode_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

/// Bytes of `path` from `offset` on; empty if the file is missing or shorter.
std::string read_from(const std::string& path, std::size_t offset) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  std::string out;
  char buffer[65536];
  auto pos = static_cast<off_t>(offset);
  for (;;) {
    const ssize_t n = ::pread(fd, buffer, sizeof buffer, pos);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buffer, static_cast<std::size_t>(n));
    pos += n;
  }
  ::close(fd);
  return out;
}

std::size_t file_size(const std::string& path) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<std::size_t>(st.st_size);
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

std::string regex_escape(const std::string& text) {
  static const std::string kSpecial = R"(\^$.|?*+()[]{})";
  std::string out;
  for (char c : text) {
    if (kSpecial.find(c) != std::string::npos) out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

/// Value of "Key:" in /proc/PID/status in KiB, or -1.
long proc_status_kib(pid_t pid, const std::string& key) {
  const std::string status = read_from("/proc/" + std::to_string(pid) + "/status", 0);
  for (const auto& line : split_lines(status)) {
    if (line.rfind(key + ":", 0) == 0) return std::strtol(line.c_str() + key.size() + 1, nullptr, 10);
  }
  return -1;
}

}  // namespace

std::unique_ptr<Process> Process::start(std::vector<std::string> argv, std::string log_path,
                                        std::vector<std::string> env_extra) {
  const int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) throw_errno("cannot open log " + log_path);
  struct stat st{};
  ::fstat(log_fd, &st);
  std::unique_ptr<Process> process(new Process());
  process->argv_ = argv;
  process->log_path_ = std::move(log_path);
  process->log_start_ = static_cast<std::size_t>(st.st_size);
  try {
    process->pid_ = spawn(std::move(argv), log_fd, log_fd, env_extra, {});
  } catch (...) {
    ::close(log_fd);
    throw;
  }
  ::close(log_fd);
  return process;
}

Process::~Process() {
  if (pid_ <= 0 || reaped_) return;
  ::kill(-pid_, SIGKILL);
  ::kill(pid_, SIGKILL);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
}

bool Process::try_reap() {
  if (reaped_) return true;
  // Look without reaping first: while the zombie exists its pid (and so the
  // process group id) cannot be reused, so whatever is left in the group can be
  // killed safely.
  siginfo_t info{};
  if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid == 0) {
    return false;
  }
  ::kill(-pid_, SIGKILL);
  int status = 0;
  struct rusage usage{};
  pid_t r;
  do {
    r = ::wait4(pid_, &status, 0, &usage);
  } while (r < 0 && errno == EINTR);
  reaped_ = true;
  exit_status_ = r == pid_ ? decode_status(status) : -1;
  max_rss_kib_ = r == pid_ ? usage.ru_maxrss : -1;
  return true;
}

bool Process::running() { return !try_reap(); }

void Process::signal(int sig) {
  if (!reaped_) ::kill(pid_, sig);
}

void Process::signal_group(int sig) {
  if (!reaped_) ::kill(-pid_, sig);
}

std::optional<int> Process::wait(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  auto pause = std::chrono::milliseconds(1);
  for (;;) {
    if (try_reap()) return exit_status_;
    if (Clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(10));
  }
}

std::string Process::log() const { return read_from(log_path_, log_start_); }

std::size_t Process::log_size() const {
  const std::size_t size = file_size(log_path_);
  return size > log_start_ ? size - log_start_ : 0;
}

std::string Process::log_tail(std::size_t lines) const {
  const std::vector<std::string> all = split_lines(log());
  const std::size_t first = all.size() > lines ? all.size() - lines : 0;
  std::string out;
  for (std::size_t i = first; i < all.size(); ++i) out += all[i] + "\n";
  return out;
}

std::string Process::wait_for_line(const std::function<bool(const std::string&)>& match, const std::string& what,
                                   std::chrono::milliseconds timeout, std::size_t from_offset) {
  const auto begin = Clock::now();
  const auto deadline = begin + timeout;
  std::size_t pos = log_start_ + from_offset;
  std::string pending;  // an incomplete last line, kept until its newline arrives
  for (;;) {
    // Check for exit before reading, so that the final read sees all output.
    const bool exited = try_reap();
    std::string chunk = read_from(log_path_, pos);
    pos += chunk.size();
    pending += chunk;
    std::size_t start = 0;
    for (std::size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1) {
      std::string line = pending.substr(start, nl - start);
      if (match(line)) return line;
    }
    pending.erase(0, start);
    if (exited) {
      if (!pending.empty() && match(pending)) return pending;
      throw std::runtime_error("process " + argv_.front() + " (pid " + std::to_string(pid_) +
                               ") exited with status " + std::to_string(exit_status_) + " before logging " + what +
                               "\n--- last 40 lines of " + log_path_ + " ---\n" + log_tail(40));
    }
    if (Clock::now() >= deadline) {
      const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - begin);
      throw std::runtime_error("timed out after " + std::to_string(waited.count()) + " ms waiting for process " +
                               argv_.front() + " (pid " + std::to_string(pid_) + ") to log " + what +
                               "\n--- last 40 lines of " + log_path_ + " ---\n" + log_tail(40));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::string Process::wait_for_log(const std::string& pattern, std::chrono::milliseconds timeout,
                                  std::size_t from_offset) {
  const std::regex re(pattern, std::regex::ECMAScript);
  return wait_for_line([&](const std::string& line) { return std::regex_search(line, re); },
                       "a line matching /" + pattern + "/", timeout, from_offset);
}

int Process::count_log(const std::string& pattern) const {
  const std::regex re(pattern, std::regex::ECMAScript);
  int count = 0;
  for (const auto& line : split_lines(log())) {
    if (std::regex_search(line, re)) ++count;
  }
  return count;
}

std::uint16_t Process::wait_for_port(const std::string& listener, std::chrono::milliseconds timeout) {
  const std::regex msg_re(R"re("msg"\s*:\s*"listening")re");
  const std::regex listener_re(R"re("listener"\s*:\s*")re" + regex_escape(listener) + "\"");
  const std::regex port_re(R"re("port"\s*:\s*"?(\d{1,5})\b)re");
  std::smatch port_match;
  auto match = [&](const std::string& line) {
    if (!std::regex_search(line, msg_re) || !std::regex_search(line, listener_re)) return false;
    std::smatch m;
    if (!std::regex_search(line, m, port_re)) return false;
    const long port = std::stol(m[1].str());
    return port > 0 && port <= 65535;
  };
  const std::string line = wait_for_line(match, "the \"listening\" line of listener \"" + listener + "\"", timeout);
  std::regex_search(line, port_match, port_re);
  return static_cast<std::uint16_t>(std::stoul(port_match[1].str()));
}

long Process::peak_rss_kib() const {
  if (!reaped_) return proc_status_kib(pid_, "VmHWM");
  return max_rss_kib_;
}

long Process::rss_kib() const {
  if (reaped_) return -1;
  return proc_status_kib(pid_, "VmRSS");
}

CommandResult run_command(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                          const std::vector<std::string>& env_extra, const std::vector<std::string>& env_remove) {
  TempDir dir("postern-cmd");
  const std::string out_path = dir.file("stdout");
  const std::string err_path = dir.file("stderr");
  const int out_fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out_fd < 0) throw_errno("cannot open " + out_path);
  const int err_fd = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (err_fd < 0) {
    ::close(out_fd);
    throw_errno("cannot open " + err_path);
  }
  pid_t pid;
  try {
    pid = spawn(argv, out_fd, err_fd, env_extra, env_remove);
  } catch (...) {
    ::close(out_fd);
    ::close(err_fd);
    throw;
  }
  ::close(out_fd);
  ::close(err_fd);

  CommandResult result;
  const auto deadline = Clock::now() + timeout;
  auto pause = std::chrono::milliseconds(1);
  int status = 0;
  for (;;) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) {
      result.exit_code = decode_status(status);
      break;
    }
    if (r < 0 && errno != EINTR) break;
    if (Clock::now() >= deadline) {
      ::kill(-pid, SIGKILL);
      ::kill(pid, SIGKILL);
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      result.timed_out = true;
      result.exit_code = -1;
      break;
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(10));
  }
  result.out = read_file(out_path);
  result.err = read_file(err_path);
  return result;
}

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

}  // namespace postern::testing
