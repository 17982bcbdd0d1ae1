#include "common/observability/log.hpp"

#include <poll.h>
#include <unistd.h>

#include <cerrno>

#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <system_error>
#include <thread>

#include "common/utf8.hpp"

namespace postern::log {
namespace {

std::atomic<int> g_min{static_cast<int>(Level::info)};
std::string g_service = "postern";

// Writes all of `text`, through EINTR (a signal during a drain) and, on a
// non-blocking stdout, EAGAIN; stops only when stdout is gone.
void write_all(std::string_view text) {
  const char* p = text.data();
  std::size_t left = text.size();
  while (left > 0) {
    const ssize_t n = ::write(STDOUT_FILENO, p, left);
    if (n > 0) {
      p += n;
      left -= static_cast<std::size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd fd{STDOUT_FILENO, POLLOUT, 0};
      if (::poll(&fd, 1, 1000) < 0 && errno != EINTR) return;
    } else {
      return;
    }
  }
}

// Request records (one per exchange per hop) are buffered and written
// together: by a thread of their own at most kFlushInterval after the first
// one waits, at once past kFlushBytes, and before any other record, which
// is written at once (so the order of lines is kept). At load this is one
// write(2) per interval rather than one per exchange. Past kMaxPending (a
// stdout that does not keep up) the record is written by its own thread,
// which waits as it did without the buffer: memory stays bounded.
class Output {
 public:
  static constexpr auto kFlushInterval = std::chrono::milliseconds(20);
  static constexpr std::size_t kFlushBytes = 64 * 1024;
  static constexpr std::size_t kMaxPending = 4 * 1024 * 1024;

  // Never destroyed: other threads may log while the process exits.
  static Output& get() {
    static Output* out = new Output;
    return *out;
  }

  void buffer(std::string_view line) {
    bool write_now = false, wake = false;
    {
      std::lock_guard lock(mu_);
      if (!started_) start();
      write_now = threadless_ || pending_.size() >= kMaxPending;
      if (!write_now) {
        const std::size_t before = pending_.size();
        pending_.append(line);
        wake = before == 0 || (before < kFlushBytes && pending_.size() >= kFlushBytes);
      }
    }
    if (write_now) write_through(line);
    else if (wake) cv_.notify_one();
  }

  // What is buffered, then `line`, in one locked turn: lines from several
  // threads never interleave.
  void write_through(std::string_view line) {
    std::lock_guard write_lock(write_mu_);
    {
      std::lock_guard lock(mu_);
      spare_.swap(pending_);
    }
    if (!spare_.empty()) write_all(spare_);
    // Keep a batch's worth of capacity, not a backlog's.
    if (spare_.capacity() > 4 * kFlushBytes) std::string().swap(spare_);
    spare_.clear();
    if (!line.empty()) write_all(line);
  }

 private:
  Output() = default;

  void start() {  // under mu_
    started_ = true;
    try {
      std::thread([this] { run(); }).detach();
    } catch (const std::system_error&) {
      threadless_ = true;  // no thread to be had: every record is written at once
      return;
    }
    std::atexit([] { Output::get().write_through({}); });
  }

  void run() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return !pending_.empty(); });
      // Let the records of the next few milliseconds join this write.
      cv_.wait_for(lock, kFlushInterval, [&] { return pending_.size() >= kFlushBytes; });
      lock.unlock();
      write_through({});
      lock.lock();
    }
  }

  std::mutex write_mu_;  // taken before mu_
  std::string spare_;    // under write_mu_
  std::mutex mu_;
  std::condition_variable cv_;
  std::string pending_;  // under mu_
  bool started_ = false;
  bool threadless_ = false;
};

const char* level_name(Level l) {
  switch (l) {
    case Level::debug: return "debug";
    case Level::info: return "info";
    case Level::warn: return "warn";
    case Level::error: return "error";
  }
  return "info";
}

// "2026-12-08T01:02:03.456Z". The part up to the second is formatted once
// per second per thread; a record adds the milliseconds.
void append_time(std::string& out) {
  using namespace std::chrono;
  const auto ms_since_epoch = duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
  const std::time_t secs = static_cast<std::time_t>(ms_since_epoch / 1000);
  const int ms = static_cast<int>(ms_since_epoch % 1000);
  thread_local std::time_t cached_secs = -1;
  thread_local char cached[32];
  thread_local std::size_t cached_len = 0;
  if (secs != cached_secs) {
    std::tm tm{};
    gmtime_r(&secs, &tm);
    const int n = std::snprintf(cached, sizeof cached, "%04d-%02d-%02dT%02d:%02d:%02d.", tm.tm_year + 1900,
                                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    cached_len = n > 0 ? static_cast<std::size_t>(n) : 0;
    cached_secs = secs;
  }
  out.append(cached, cached_len);
  out.push_back(static_cast<char>('0' + ms / 100));
  out.push_back(static_cast<char>('0' + ms / 10 % 10));
  out.push_back(static_cast<char>('0' + ms % 10));
  out.push_back('Z');
}

// Printable ASCII that JSON takes as it is: the common case, copied in runs.
bool plain(unsigned char c) { return c >= 0x20 && c < 0x7f && c != '"' && c != '\\'; }

template <class Int>
void append_int(std::string& out, Int v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

}  // namespace

void init(std::string_view service, Level min_level) {
  g_service = std::string(service);
  g_min = static_cast<int>(min_level);
}

bool parse_level(std::string_view text, Level& out) {
  if (text == "debug") out = Level::debug;
  else if (text == "info" || text.empty()) out = Level::info;
  else if (text == "warn") out = Level::warn;
  else if (text == "error") out = Level::error;
  else return false;
  return true;
}

bool enabled(Level level) { return static_cast<int>(level) >= g_min.load(std::memory_order_relaxed); }

void json_escape(std::string& out, std::string_view text) {
  for (std::size_t i = 0; i < text.size(); ++i) {
    std::size_t run = i;
    while (run < text.size() && plain(static_cast<unsigned char>(text[run]))) ++run;
    if (run > i) {
      out.append(text.data() + i, run - i);
      i = run;
      if (i == text.size()) break;
    }
    const auto c = static_cast<unsigned char>(text[i]);
    switch (c) {
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      default: break;
    }
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else if (const std::size_t n = utf8_sequence(text, i); n > 0) {
      out.append(text.substr(i, n));
      i += n - 1;
    } else {
      // A byte that is not UTF-8 would make the whole line invalid JSON:
      // it becomes U+FFFD, as JSON encoders do.
      out += "\\ufffd";
    }
  }
}

Record::Record(Level level, std::string_view msg) : on_(enabled(level)) {
  if (!on_) return;
  line_.reserve(256);
  line_ += "{\"ts\":\"";
  append_time(line_);
  line_ += "\",\"level\":\"";
  line_ += level_name(level);
  line_ += "\",\"svc\":\"";
  json_escape(line_, g_service);
  line_ += "\",\"msg\":\"";
  json_escape(line_, msg);
  line_ += '"';
}

Record::~Record() {
  if (!on_) return;
  line_ += "}\n";
  if (buffered_) Output::get().buffer(line_);
  else Output::get().write_through(line_);
}

void flush() { Output::get().write_through({}); }

std::string write_record(Level level, std::string_view msg, std::string_view fields) {
  std::string line;
  {
    Record r(level, msg);
    if (!r.on_) return {};
    if (!fields.empty()) {
      r.line_ += ',';
      r.line_.append(fields);
    }
    line = r.line_ + "}\n";
  }  // ~Record writes it
  return line;
}

Record& Record::kv(std::string_view key, std::string_view value) {
  if (!on_) return *this;
  line_ += ",\"";
  json_escape(line_, key);
  line_ += "\":\"";
  json_escape(line_, value);
  line_ += '"';
  return *this;
}

Record& Record::kv(std::string_view key, std::int64_t value) {
  if (!on_) return *this;
  line_ += ",\"";
  json_escape(line_, key);
  line_ += "\":";
  append_int(line_, value);
  return *this;
}

Record& Record::kv(std::string_view key, std::uint64_t value) {
  if (!on_) return *this;
  line_ += ",\"";
  json_escape(line_, key);
  line_ += "\":";
  append_int(line_, value);
  return *this;
}

Record& Record::kv(std::string_view key, double value) {
  if (!on_) return *this;
  // As printf's %.6g, without printf.
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, value, std::chars_format::general, 6);
  line_ += ",\"";
  json_escape(line_, key);
  line_ += "\":";
  line_.append(buf, r.ptr);
  return *this;
}

Record& Record::kv(std::string_view key, bool value) {
  if (!on_) return *this;
  line_ += ",\"";
  json_escape(line_, key);
  line_ += "\":";
  line_ += value ? "true" : "false";
  return *this;
}

void log_exchange(const ExchangeRecord& r) {
  if (!enabled(Level::info)) return;
  Record rec(Level::info, "request");
  rec.buffered_ = true;
  rec.kv("request_id", r.request_id);
  auto text = [&](std::string_view key, std::string_view value) {
    if (!value.empty()) rec.kv(key, value);
  };
  text("trace_id", r.trace_id);
  text("client", r.client);
  text("method", r.method);
  text("path", r.path);
  text("api", r.api);
  text("application", r.application);
  text("alias", r.alias);
  text("connector", r.connector);
  if (r.status) rec.kv("status", r.status);
  text("result", r.result);
  if (r.websocket) rec.kv("websocket", true);
  rec.kv("duration_ms", r.duration_ms);
}

}  // namespace postern::log
