#include "support/sockets.hpp"

#include "support/http.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

namespace postern::testing {
namespace {

using Clock = std::chrono::steady_clock;

/// Socket inodes among the fds of `pid`.
std::set<unsigned long> socket_inodes(pid_t pid) {
  std::set<unsigned long> inodes;
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return inodes;
  while (const dirent* entry = ::readdir(d)) {
    if (entry->d_name[0] == '.') continue;
    char target[128];
    const std::string link = dir + "/" + entry->d_name;
    const ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
    if (n <= 0) continue;
    target[n] = '\0';
    unsigned long inode = 0;
    if (std::sscanf(target, "socket:[%lu]", &inode) == 1) inodes.insert(inode);
  }
  ::closedir(d);
  return inodes;
}

/// The kernel prints addresses as native-endian 32-bit words of the network
/// order bytes; copying the parsed words back into memory restores the bytes.
std::string decode_address(const std::string& hex) {
  char text[INET6_ADDRSTRLEN] = {};
  if (hex.size() == 8) {
    in_addr addr{};
    addr.s_addr = static_cast<std::uint32_t>(std::stoul(hex, nullptr, 16));
    ::inet_ntop(AF_INET, &addr, text, sizeof text);
  } else if (hex.size() == 32) {
    in6_addr addr{};
    for (int i = 0; i < 4; ++i) {
      const auto word = static_cast<std::uint32_t>(std::stoul(hex.substr(static_cast<std::size_t>(i) * 8, 8), nullptr, 16));
      std::memcpy(addr.s6_addr + i * 4, &word, 4);
    }
    ::inet_ntop(AF_INET6, &addr, text, sizeof text);
  } else {
    return hex;
  }
  return text;
}

void collect_listeners(const std::string& table, const std::set<unsigned long>& inodes,
                       std::set<std::pair<std::string, std::uint16_t>>& out) {
  std::ifstream in(table);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...
    std::istringstream fields(line);
    std::string sl, local, remote, state, queues, timer, retransmit, uid, timeout;
    unsigned long inode = 0;
    if (!(fields >> sl >> local >> remote >> state >> queues >> timer >> retransmit >> uid >> timeout >> inode)) {
      continue;
    }
    if (state != "0A" || inodes.count(inode) == 0) continue;  // 0A = TCP_LISTEN
    const std::size_t colon = local.find(':');
    if (colon == std::string::npos) continue;
    const auto port = static_cast<std::uint16_t>(std::stoul(local.substr(colon + 1), nullptr, 16));
    out.emplace(decode_address(local.substr(0, colon)), port);
  }
}

/// Status code of the first response line in `raw`, or 0.
int status_of(const std::string& raw) {
  int status = 0;
  if (std::sscanf(raw.c_str(), "HTTP/%*d.%*d %d", &status) == 1) return status;
  return 0;
}

}  // namespace

void UniqueFd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

std::vector<std::pair<std::string, std::uint16_t>> listening_sockets(pid_t pid) {
  const std::set<unsigned long> inodes = socket_inodes(pid);
  std::set<std::pair<std::string, std::uint16_t>> found;
  if (!inodes.empty()) {
    const std::string net = "/proc/" + std::to_string(pid) + "/net/";
    collect_listeners(net + "tcp", inodes, found);
    collect_listeners(net + "tcp6", inodes, found);
  }
  return {found.begin(), found.end()};
}

UniqueFd connect_loopback(std::uint16_t port, std::chrono::milliseconds timeout) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return {};
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno != EINPROGRESS) return {};
    pollfd p{fd.get(), POLLOUT, 0};
    int r;
    do {
      r = ::poll(&p, 1, static_cast<int>(timeout.count()));
    } while (r < 0 && errno == EINTR);
    if (r <= 0) return {};
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) return {};
  }
  const int flags = ::fcntl(fd.get(), F_GETFL);
  ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
  return fd;
}

namespace {
// A TCP socket bound to 127.0.0.1 on a free port (stored in `port`), and
// listening (nobody accepting) if `listening`. Throws naming `who`.
UniqueFd bound_loopback(bool listening, const char* who, std::uint16_t& port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd.get() < 0 || ::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      (listening && ::listen(fd.get(), 64) != 0) ||
      ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    throw std::runtime_error(std::string(who) + ": cannot " + (listening ? "listen on" : "bind") + " 127.0.0.1:0");
  }
  port = ntohs(a.sin_port);
  return fd;
}
}  // namespace

std::uint16_t free_port() {
  std::uint16_t port = 0;
  bound_loopback(false, "free_port", port);
  return port;
}

UniqueFd listen_mute(std::uint16_t& port) { return bound_loopback(true, "listen_mute", port); }

bool can_connect(std::uint16_t port, std::chrono::milliseconds timeout) {
  return static_cast<bool>(connect_loopback(port, timeout));
}

bool wait_http_status(std::uint16_t port, const std::string& path, int want, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  const std::string request = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
                              "\r\nConnection: close\r\n\r\n";
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    const auto attempt = std::min(left, std::chrono::milliseconds(2000));
    if (status_of(raw_exchange(port, request, attempt)) == want) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

bool send_all(int fd, std::string_view data) {
  std::size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<std::size_t>(n);
  }
  return true;
}

bool recv_until(int fd, std::string& got, const std::function<bool(std::string_view)>& done,
                std::chrono::milliseconds timeout) {
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(timeout).count();
  timeval tv{static_cast<time_t>(us / 1000000), static_cast<suseconds_t>(us % 1000000)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char buf[4096];
  while (!done(got)) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return false;
    got.append(buf, static_cast<std::size_t>(n));
  }
  return true;
}

std::string recv_to_end(int fd, std::chrono::milliseconds timeout) {
  std::string got;
  recv_until(fd, got, [](std::string_view) { return false; }, timeout);
  return got;
}

bool recv_head_and(int fd, std::string& got, std::size_t body_bytes, std::chrono::milliseconds timeout) {
  return recv_until(
      fd, got,
      [body_bytes](std::string_view s) {
        const auto head_end = s.find("\r\n\r\n");
        return head_end != std::string_view::npos && s.size() >= head_end + 4 + body_bytes;
      },
      timeout);
}

std::string recv_response(int fd, std::chrono::milliseconds timeout) {
  std::string got;
  recv_until(
      fd, got,
      [](std::string_view s) {
        const auto head_end = s.find("\r\n\r\n");
        if (head_end == std::string_view::npos) return false;
        std::size_t length = 0;
        const auto cl = s.find("Content-Length: ");
        if (cl != std::string_view::npos && cl < head_end) length = std::stoul(std::string(s.substr(cl + 16, 20)));
        return s.size() >= head_end + 4 + length;
      },
      timeout);
  return got;
}

}  // namespace postern::testing
