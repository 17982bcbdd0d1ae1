#pragma once
// Structured logging: one JSON object per line on stdout.
//
//   POSTERN_LOG(info, "listening").kv("listener", "external").kv("port", 8080);
//
// Thread-safe: a record is built locally; lines from several threads never
// interleave. Request records (log_exchange) are buffered and written in
// batches, normally within 20 ms (log.cpp, Output); any other record is
// written at once, after what is buffered.

#include <cstdint>
#include <string>
#include <string_view>

namespace postern::log {

enum class Level { debug = 0, info = 1, warn = 2, error = 3 };

/// Process-wide settings; call once from main before logging.
void init(std::string_view service, Level min_level);
/// Writes the buffered request records now: call before std::_Exit.
void flush();
/// Parses "debug|info|warn|error"; returns false on anything else.
bool parse_level(std::string_view text, Level& out);
bool enabled(Level level);

struct ExchangeRecord;

/// One log record; written when it goes out of scope.
class Record {
 public:
  Record(Level level, std::string_view msg);
  ~Record();
  Record(const Record&) = delete;
  Record& operator=(const Record&) = delete;

  Record& kv(std::string_view key, std::string_view value);
  Record& kv(std::string_view key, const char* value) { return kv(key, std::string_view(value)); }
  Record& kv(std::string_view key, const std::string& value) { return kv(key, std::string_view(value)); }
  Record& kv(std::string_view key, std::int64_t value);
  Record& kv(std::string_view key, std::uint64_t value);
  Record& kv(std::string_view key, int value) { return kv(key, static_cast<std::int64_t>(value)); }
  Record& kv(std::string_view key, unsigned value) { return kv(key, static_cast<std::uint64_t>(value)); }
  Record& kv(std::string_view key, double value);
  Record& kv(std::string_view key, bool value);

 private:
  friend std::string write_record(Level, std::string_view, std::string_view);
  friend void log_exchange(const ExchangeRecord&);
  bool on_;
  bool buffered_ = false;
  std::string line_;
};

/// Writes one record whose members were built elsewhere: `fields` is JSON
/// object members (`"k":v,"k2":v2`), appended after ts/level/svc/msg.
/// Returns the line written (with its newline), or "" if the level is off.
std::string write_record(Level level, std::string_view msg, std::string_view fields);

/// Appends `text` to `out` as JSON string content (no quotes).
void json_escape(std::string& out, std::string_view text);

/// What each hop (edge, broker, connector) logs once per exchange, as
/// {"msg":"request", ...} with these field names on every hop, so one
/// request_id finds the same record shape everywhere. Empty strings and a
/// zero status are left out (a hop that does not know them).
struct ExchangeRecord {
  std::string_view request_id, client, method, path, api, application;
  std::string_view trace_id;    ///< the W3C trace the exchange belongs to
  std::string_view alias;       ///< broker, connector: the alias served
  std::string_view connector;   ///< broker: the connector it went to
  std::string_view result;      ///< how it ended when there is no status ("ok", "client_gone", ...)
  unsigned status = 0;          ///< the HTTP status answered (0: not known here)
  double duration_ms = 0;
  bool websocket = false;       ///< a WebSocket session (its whole length)
};
void log_exchange(const ExchangeRecord& r);

}  // namespace postern::log

#define POSTERN_LOG(level, msg) ::postern::log::Record(::postern::log::Level::level, msg)
