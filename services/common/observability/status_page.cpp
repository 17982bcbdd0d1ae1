#include "common/observability/status_page.hpp"

#include <boost/json.hpp>
#include <ctime>
#include <set>
#include <vector>

namespace postern::observability {
namespace json = boost::json;
namespace {

void escape(std::string& out, std::string_view s) {
  for (const char c : s) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
}

// "in_flight" -> "in flight".
std::string label(std::string_view key) {
  std::string out(key);
  for (auto& c : out) {
    if (c == '_') c = ' ';
  }
  return out;
}

bool scalar(const json::value& v) { return !v.is_object() && !v.is_array(); }

void value_html(std::string& out, const json::value& v);

void scalar_html(std::string& out, const json::value& v) {
  if (v.is_bool()) {
    out += v.get_bool() ? "<span class=yes>yes</span>" : "<span class=no>no</span>";
  } else if (v.is_null()) {
    out += "<span class=none>none</span>";
  } else if (v.is_string()) {
    escape(out, v.get_string());
  } else {
    escape(out, json::serialize(v));
  }
}

// A list of objects: one row each, a column per field seen.
void rows_html(std::string& out, const json::array& a) {
  std::vector<std::string> columns;
  std::set<std::string> seen;
  for (const auto& e : a) {
    for (const auto& [k, _] : e.as_object()) {
      if (seen.insert(std::string(k)).second) columns.emplace_back(k);
    }
  }
  out += "<table><tr>";
  for (const auto& c : columns) {
    out += "<th>";
    escape(out, label(c));
    out += "</th>";
  }
  out += "</tr>";
  for (const auto& e : a) {
    out += "<tr>";
    for (const auto& c : columns) {
      out += "<td>";
      if (const auto* v = e.as_object().if_contains(c)) value_html(out, *v);
      out += "</td>";
    }
    out += "</tr>";
  }
  out += "</table>";
}

void fields_html(std::string& out, const json::object& o) {
  out += "<table class=fields>";
  for (const auto& [k, v] : o) {
    out += "<tr><th>";
    escape(out, label(k));
    out += "</th><td>";
    value_html(out, v);
    out += "</td></tr>";
  }
  out += "</table>";
}

void value_html(std::string& out, const json::value& v) {
  if (scalar(v)) {
    scalar_html(out, v);
  } else if (v.is_object()) {
    fields_html(out, v.get_object());
  } else {
    const auto& a = v.get_array();
    const bool objects = !a.empty() && std::all_of(a.begin(), a.end(), [](const auto& e) { return e.is_object(); });
    if (objects) {
      rows_html(out, a);
    } else if (a.empty()) {
      out += "<span class=none>none</span>";
    } else {
      for (std::size_t i = 0; i < a.size(); ++i) {
        if (i > 0) out += ", ";
        value_html(out, a[i]);
      }
    }
  }
}

constexpr std::string_view kStyle =
    "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}"
    "h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}"
    "table{border-collapse:collapse;margin:.4em 0}"
    "th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}"
    "th{background:#f3f3f3;font-weight:600}table.fields th{width:12em}"
    ".yes,.no{font-weight:600}.none{color:#888}"
    "footer{margin-top:2em;color:#888;font-size:.9em}";

}  // namespace

std::string iso8601(std::chrono::system_clock::time_point t) {
  const std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

boost::json::object config_status(std::uint64_t version, std::string_view source, std::string_view digest) {
  json::object o;
  if (version == 0) {
    o["version"] = 0;
    o["state"] = "none yet";
    return o;
  }
  const auto loaded = std::chrono::system_clock::time_point(std::chrono::milliseconds(version));
  o["version"] = version;
  o["loaded"] = iso8601(loaded);
  o["age_seconds"] =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now() - loaded).count();
  o["source"] = source;
  o["digest"] = digest.substr(0, 16);
  return o;
}

bool wants_json(std::string_view accept) {
  return accept.find("application/json") != std::string_view::npos && accept.find("text/html") == std::string_view::npos;
}

std::string status_html(std::string_view title, std::string_view text) {
  std::string out = "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>";
  escape(out, title);
  out += "</title><style>";
  out += kStyle;
  out += "</style></head><body><h1>";
  escape(out, title);
  out += "</h1>";
  boost::system::error_code ec;
  const json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) {
    out += "<pre>";
    escape(out, text);
    out += "</pre>";
  } else {
    // Scalars first, as a summary; then each object or list under its name.
    json::object summary;
    for (const auto& [k, e] : v.get_object()) {
      if (scalar(e)) summary[k] = e;
    }
    fields_html(out, summary);
    for (const auto& [k, e] : v.get_object()) {
      if (scalar(e)) continue;
      out += "<h2>";
      escape(out, label(k));
      out += "</h2>";
      value_html(out, e);
    }
  }
  out += "<footer>The same as JSON: <code>curl -H 'Accept: application/json'</code> this page.</footer></body></html>\n";
  return out;
}

}  // namespace postern::observability
