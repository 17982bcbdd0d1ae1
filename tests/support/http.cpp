#include "support/http.hpp"

#include "support/files.hpp"
#include "support/process.hpp"
#include "support/sockets.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>

namespace postern::testing {
namespace {

using Clock = std::chrono::steady_clock;

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const auto x = static_cast<unsigned char>(a[i]);
    const auto y = static_cast<unsigned char>(b[i]);
    if (std::tolower(x) != std::tolower(y)) return false;
  }
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

std::vector<std::string_view> lines_of(std::string_view text) {
  std::vector<std::string_view> lines;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.push_back(line);
    start = end + 1;
  }
  return lines;
}

/// Values of `name` among header lines (the status line is skipped: it has no
/// "name:" prefix that could match a header name).
std::vector<std::string> values_in(const std::vector<std::string_view>& head_lines, std::string_view name) {
  std::vector<std::string> values;
  for (std::string_view line : head_lines) {
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || line.rfind("HTTP/", 0) == 0) continue;
    if (iequals(trim(line.substr(0, colon)), name)) values.emplace_back(trim(line.substr(colon + 1)));
  }
  return values;
}

/// Header lines of the last response head in curl's -D output. Trailers, which
/// curl also writes there after the head's blank line, are left out.
std::vector<std::string_view> last_head(std::string_view dump) {
  std::vector<std::string_view> head;
  bool collecting = false;
  for (std::string_view line : lines_of(dump)) {
    if (line.rfind("HTTP/", 0) == 0) {
      head.clear();
      collecting = true;
    } else if (line.empty()) {
      collecting = false;
    } else if (collecting) {
      head.push_back(line);
    }
  }
  return head;
}

std::string read_if_exists(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return {};
  return read_file(path);
}

/// De-chunks a chunked body; stops at the last chunk or where the data ends.
std::string dechunk(std::string_view data) {
  std::string out;
  std::size_t pos = 0;
  while (pos < data.size()) {
    const std::size_t eol = data.find("\r\n", pos);
    if (eol == std::string_view::npos) break;
    const std::string size_text(data.substr(pos, eol - pos));  // may carry ";ext"
    char* end = nullptr;
    const unsigned long long size = std::strtoull(size_text.c_str(), &end, 16);
    if (end == size_text.c_str()) break;
    if (size == 0) break;
    pos = eol + 2;
    out.append(data.substr(pos, std::min<std::size_t>(size, data.size() - pos)));
    pos += size + 2;  // data and its CRLF
  }
  return out;
}

/// Parses one label set `{a="x",b="y"}` starting at text[pos] == '{'; leaves pos
/// after the '}'. False if malformed.
bool parse_labels(std::string_view text, std::size_t& pos, std::map<std::string, std::string>& labels) {
  ++pos;  // '{'
  for (;;) {
    while (pos < text.size() && (text[pos] == ' ' || text[pos] == ',')) ++pos;
    if (pos >= text.size()) return false;
    if (text[pos] == '}') {
      ++pos;
      return true;
    }
    const std::size_t eq = text.find('=', pos);
    if (eq == std::string_view::npos) return false;
    std::string key(trim(text.substr(pos, eq - pos)));
    pos = eq + 1;
    if (pos >= text.size() || text[pos] != '"') return false;
    ++pos;
    std::string value;
    for (;;) {
      if (pos >= text.size()) return false;
      const char c = text[pos++];
      if (c == '"') break;
      if (c == '\\' && pos < text.size()) {
        const char e = text[pos++];
        value.push_back(e == 'n' ? '\n' : e);
      } else {
        value.push_back(c);
      }
    }
    labels.emplace(std::move(key), std::move(value));
  }
}

}  // namespace

std::string CurlResult::header(std::string_view name) const {
  const std::vector<std::string> values = header_values(name);
  return values.empty() ? std::string() : values.front();
}

std::vector<std::string> CurlResult::header_values(std::string_view name) const {
  return values_in(last_head(headers), name);
}

CurlResult curl(const std::vector<std::string>& args, std::chrono::seconds max_time, const std::string& body_path) {
  TempDir dir("postern-curl");
  const std::string headers_path = dir.file("headers");
  const std::string body_file = body_path.empty() ? dir.file("body") : body_path;
  std::vector<std::string> argv = {"curl", "-q", "-sS", "--max-time", std::to_string(max_time.count()),
                                   "-D", headers_path, "-o", body_file, "-w", "%{http_code}"};
  argv.insert(argv.end(), args.begin(), args.end());
  // A proxy from the environment must not intercept loopback test traffic.
  const std::vector<std::string> no_proxy_env = {"http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                                                 "ALL_PROXY",  "all_proxy",   "NO_PROXY",   "no_proxy"};
  const CommandResult run = run_command(argv, max_time + std::chrono::seconds(15), {}, no_proxy_env);

  CurlResult result;
  result.exit_code = run.exit_code;
  result.stderr_text = run.err;
  if (run.timed_out) result.stderr_text += "\n[postern-test] curl did not exit in time and was killed";
  result.status = std::atoi(run.out.c_str());
  result.headers = read_if_exists(headers_path);
  if (body_path.empty()) result.body = read_if_exists(body_file);
  return result;
}

std::string raw_exchange(std::uint16_t port, std::string_view request, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  UniqueFd fd = connect_loopback(port, timeout);
  if (!fd) return {};
  ::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) | O_NONBLOCK);
  auto left_ms = [&] {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return left > 0 ? static_cast<int>(left) : 0;
  };

  std::string received;
  char buffer[65536];
  std::size_t sent = 0;
  bool sending = !request.empty();
  for (;;) {
    const int wait_ms = left_ms();
    if (wait_ms == 0) break;
    pollfd p{fd.get(), static_cast<short>(POLLIN | (sending ? POLLOUT : 0)), 0};
    const int r = ::poll(&p, 1, wait_ms);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      const ssize_t n = ::recv(fd.get(), buffer, sizeof buffer, 0);
      if (n > 0) {
        received.append(buffer, static_cast<std::size_t>(n));
        continue;
      }
      if (n == 0) break;  // the peer closed
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) break;  // reset
    }
    if (sending && (p.revents & POLLOUT)) {
      const ssize_t n = ::send(fd.get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
      if (n > 0) {
        sent += static_cast<std::size_t>(n);
        if (sent == request.size()) sending = false;
      } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        sending = false;  // the peer stopped reading; collect what it said
      }
    }
  }
  return received;
}

std::string RawResponse::header(std::string_view name) const {
  const std::vector<std::string> values = values_in(lines_of(head), name);
  return values.empty() ? std::string() : values.front();
}

RawResponse parse_response(std::string_view raw) {
  RawResponse response;
  for (;;) {
    const std::size_t head_end = raw.find("\r\n\r\n");
    const std::size_t sep = head_end == std::string_view::npos ? raw.size() : head_end;
    response = RawResponse{};
    response.head = std::string(raw.substr(0, sep));
    int status = 0;
    if (std::sscanf(response.head.c_str(), "HTTP/%*d.%*d %d", &status) != 1) return response;
    response.status = status;
    if (head_end == std::string_view::npos) return response;
    std::string_view rest = raw.substr(head_end + 4);
    if (status >= 100 && status < 200 && status != 101) {
      raw = rest;  // an interim response: the final one follows
      continue;
    }
    std::string encoding = response.header("Transfer-Encoding");
    for (char& c : encoding) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const std::string length = response.header("Content-Length");
    if (encoding.find("chunked") != std::string::npos) {
      response.body = dechunk(rest);
    } else if (!length.empty()) {
      const auto n = static_cast<std::size_t>(std::strtoull(length.c_str(), nullptr, 10));
      response.body = std::string(rest.substr(0, std::min(n, rest.size())));
    } else {
      response.body = std::string(rest);
    }
    return response;
  }
}

double metric_value(const std::string& exposition, const std::string& name,
                    const std::map<std::string, std::string>& labels) {
  double sum = 0;
  for (std::string_view line : lines_of(exposition)) {
    line = trim(line);
    if (line.empty() || line.front() == '#') continue;
    std::size_t pos = 0;
    while (pos < line.size() && line[pos] != '{' && line[pos] != ' ' && line[pos] != '\t') ++pos;
    if (line.substr(0, pos) != name) continue;
    std::map<std::string, std::string> sample_labels;
    if (pos < line.size() && line[pos] == '{' && !parse_labels(line, pos, sample_labels)) continue;
    bool wanted = true;
    for (const auto& [key, value] : labels) {
      const auto it = sample_labels.find(key);
      if (it == sample_labels.end() || it->second != value) {
        wanted = false;
        break;
      }
    }
    if (!wanted) continue;
    std::string_view rest = trim(line.substr(pos));
    const std::string number(rest.substr(0, rest.find_first_of(" \t")));
    char* end = nullptr;
    const double value = std::strtod(number.c_str(), &end);
    if (end == number.c_str() || std::isnan(value)) continue;
    sum += value;
  }
  return sum;
}

std::string scrape(std::uint16_t port) {
  const std::string raw = raw_exchange(port,
                                       "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
                                           "\r\nAccept: text/plain\r\nConnection: close\r\n\r\n",
                                       std::chrono::seconds(5));
  const RawResponse response = parse_response(raw);
  if (response.status != 200) {
    throw std::runtime_error("scrape of 127.0.0.1:" + std::to_string(port) + "/metrics failed: " +
                             (raw.empty() ? std::string("no response") : raw.substr(0, 500)));
  }
  return response.body;
}

}  // namespace postern::testing
