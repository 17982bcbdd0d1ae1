#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

/// Raw TCP helpers on the loopback interface: who listens where, and whether a
/// port answers. Blocking calls, each bounded by its timeout; thread-safe.
namespace postern::testing {

/// An owned file descriptor, closed by the destructor. Move-only.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

/// TCP sockets in LISTEN state owned by `pid`: the socket inodes in
/// /proc/PID/fd matched against /proc/PID/net/tcp and tcp6. Returns (address,
/// port) pairs such as ("127.0.0.1", 8080) or ("::", 9090), sorted, without
/// duplicates. Empty if the process is gone or owns no listening socket.
std::vector<std::pair<std::string, std::uint16_t>> listening_sockets(pid_t pid);

/// A blocking TCP socket connected to 127.0.0.1:port, or an empty UniqueFd if
/// the connect fails or does not finish within `timeout`.
UniqueFd connect_loopback(std::uint16_t port, std::chrono::milliseconds timeout = std::chrono::milliseconds(500));

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to 0, read,
/// closed), for servers that cannot report the port they picked.
std::uint16_t free_port();

/// A socket listening on 127.0.0.1 (on a free port, stored in `port`) that
/// nobody accepts on: connects complete in the kernel, and then nothing is
/// ever said. A hung server, or a middlebox that swallows connections.
UniqueFd listen_mute(std::uint16_t& port);

/// True if a TCP connect to 127.0.0.1:port succeeds within `timeout`.
bool can_connect(std::uint16_t port, std::chrono::milliseconds timeout = std::chrono::milliseconds(500));

/// Polls an HTTP GET of 127.0.0.1:port/path (raw socket, HTTP/1.1,
/// Connection: close) every ~20 ms until the response status is `want`.
/// Returns false if that does not happen within `timeout`.
bool wait_http_status(std::uint16_t port, const std::string& path, int want, std::chrono::milliseconds timeout);

/// Sends all of `data` on a blocking socket; false if the connection fails
/// first.
bool send_all(int fd, std::string_view data);

/// Appends what arrives on the blocking socket `fd` to `got` until
/// `done(got)` holds. False if the peer closes or resets, or `timeout`
/// passes between two reads, first.
bool recv_until(int fd, std::string& got, const std::function<bool(std::string_view)>& done,
                std::chrono::milliseconds timeout);

/// Everything that arrives until the peer closes or resets, or `timeout`
/// passes between two reads.
std::string recv_to_end(int fd, std::chrono::milliseconds timeout);

/// Reads a response head and at least `body_bytes` after it into `got`;
/// false if the connection ends (or `timeout` passes between reads) first.
bool recv_head_and(int fd, std::string& got, std::size_t body_bytes, std::chrono::milliseconds timeout);

/// One response whose body is as long as its Content-Length says (none: no
/// body), head and body; the connection stays open. What came, if it ends
/// early.
std::string recv_response(int fd, std::chrono::milliseconds timeout);

}  // namespace postern::testing
