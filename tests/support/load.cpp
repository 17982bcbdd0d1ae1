#include "support/load.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <sstream>

#include "support/http.hpp"
#include "support/sockets.hpp"

namespace postern::testing {

Exchange http_exchange(std::uint16_t port, const std::string& request, std::chrono::milliseconds timeout) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + timeout;
  Exchange ex;
  UniqueFd fd = connect_loopback(port, std::chrono::milliseconds(1000));
  if (!fd) return ex;
  ex.connected = true;
  ::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) | O_NONBLOCK);
  std::size_t sent = 0;
  bool sending = !request.empty();
  char buffer[16384];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      ex.timed_out = true;
      break;
    }
    pollfd p{fd.get(), static_cast<short>(POLLIN | (sending ? POLLOUT : 0)), 0};
    const int r = ::poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) {
      ex.timed_out = true;
      break;
    }
    if (r < 0) break;
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      const ssize_t n = ::recv(fd.get(), buffer, sizeof buffer, 0);
      if (n > 0) {
        ex.raw.append(buffer, static_cast<std::size_t>(n));
        continue;
      }
      if (n == 0) break;
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
      ex.reset = errno == ECONNRESET;
      break;
    }
    if (sending && (p.revents & POLLOUT)) {
      const ssize_t n = ::send(fd.get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
      if (n > 0) {
        sent += static_cast<std::size_t>(n);
        if (sent == request.size()) sending = false;
      } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        sending = false;
      }
    }
  }
  return ex;
}

void Load::start(std::vector<std::uint16_t> ports, const std::string& path, int threads,
                 std::chrono::milliseconds request_timeout, std::chrono::milliseconds max_run) {
  ports_ = std::move(ports);
  t0_ = Clock::now();
  const auto until = t0_ + max_run;
  for (int i = 0; i < threads; ++i) {
    threads_.emplace_back([this, path, request_timeout, until] {
      const std::string request = "GET " + path + " HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
      while (!stop_ && Clock::now() < until) {
        Record rec;
        rec.start = Clock::now();
        Exchange ex;
        const std::uint64_t first = next_++;
        for (std::size_t k = 0; k < ports_.size(); ++k) {
          rec.port = ports_[(first + k) % ports_.size()];
          ex = http_exchange(rec.port, request, request_timeout);
          if (ex.connected) break;
        }
        rec.end = Clock::now();
        rec.refused = !ex.connected;
        rec.reset = ex.reset;
        rec.timed_out = ex.timed_out;
        rec.status = parse_response(ex.raw).status;
        if (rec.status == 200) {
          ++ok_;
        } else {
          ++failed_;
          rec.raw = ex.raw.substr(0, 400);
        }
        std::lock_guard l(mu_);
        records_.push_back(std::move(rec));
      }
    });
  }
}

void Load::stop() {
  stop_ = true;
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
}

std::vector<Load::Record> Load::records() const {
  std::lock_guard l(mu_);
  return records_;
}

std::vector<Load::Record> Load::failures() const {
  std::vector<Record> out;
  std::lock_guard l(mu_);
  for (const auto& r : records_) {
    if (r.status != 200) out.push_back(r);
  }
  return out;
}

std::string Load::describe_failures(std::size_t max) const {
  std::ostringstream out;
  std::size_t n = 0;
  for (const auto& r : failures()) {
    if (n++ == max) {
      out << "...\n";
      break;
    }
    out << "started +" << ms_between(t0_, r.start) << " ms, took " << r.latency().count() << " ms, port " << r.port
        << ", status " << r.status << (r.reset ? ", reset" : "") << (r.timed_out ? ", timed out" : "")
        << (r.refused ? ", refused everywhere" : "") << ": " << r.raw.substr(0, r.raw.find("\r\n\r\n")) << "\n";
  }
  return out.str();
}

long long ms_between(Load::Clock::time_point from, Load::Clock::time_point to) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(to - from).count();
}

}  // namespace postern::testing
