#pragma once
// The admin port's /status for a person: the same JSON a script reads,
// rendered as an HTML page (no script, no external resources). Objects
// become tables of fields, lists of objects become tables with a column per
// field, so a new field in the JSON shows without touching the page.

#include <boost/json/object.hpp>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace postern::observability {

/// `json` (an object) as a whole HTML document titled `title`. A JSON that
/// does not parse is shown as text.
std::string status_html(std::string_view title, std::string_view json);

/// True when a request's Accept header asks for JSON rather than HTML.
bool wants_json(std::string_view accept);

/// "2026-12-07T19:30:00Z".
std::string iso8601(std::chrono::system_clock::time_point t);

/// The policy snapshot in force, as every status page shows it: version,
/// when the policy service loaded it (the version is its time in ms) and
/// how long ago, its source and digest; "none yet" when version is 0.
boost::json::object config_status(std::uint64_t version, std::string_view source, std::string_view digest);

}  // namespace postern::observability
