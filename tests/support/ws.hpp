#pragma once
// WebSocket clients for integration tests: Debian's python3-websockets
// (tests/support/wsclient.py) and headless Chromium over the DevTools
// protocol (tests/support/browser.py). Each run prints one JSON object,
// returned here parsed.

#include <boost/json/value.hpp>

#include <chrono>
#include <string>
#include <vector>

namespace postern::testing {

/// The interpreter that has python3-websockets: Debian's, whatever python3
/// comes first in $PATH.
std::string system_python();

/// Runs `wsclient.py ARGS...` and returns its JSON; {"error": ...} when it
/// printed none. Blocking, bounded by `timeout`.
boost::json::object ws_client(const std::vector<std::string>& args,
                              std::chrono::milliseconds timeout = std::chrono::seconds(60));

/// Runs `browser.py ARGS...` (URL, --expect TEXT, ...) and returns its JSON.
boost::json::object browser(const std::vector<std::string>& args,
                            std::chrono::milliseconds timeout = std::chrono::seconds(60));

/// The string member `key` of `o`, or "" (also for a missing or non-string member).
std::string str(const boost::json::object& o, std::string_view key);
/// The integer member `key` of `o`, or -1.
long long num(const boost::json::object& o, std::string_view key);

}  // namespace postern::testing
