#include "common/net/trailers.hpp"

#include "common/net/http_headers.hpp"

#include <cctype>
#include <string>

namespace postern::net {

namespace {

// What may never travel as a trailer (RFC 9110 6.5.1): framing, routing,
// authentication, request modifiers, and the fields every hop writes itself.
// A trailer is read after the head's checks and policies ran, so a field
// that decides anything must come in the head or not at all.
bool may_trail(std::string_view name) {
  static constexpr std::string_view kNever[] = {
      "host",          "authorization", "proxy-authorization", "cookie",         "set-cookie",
      "www-authenticate", "proxy-authenticate", "content-length", "content-type", "content-encoding",
      "content-range", "range",         "expect",              "max-forwards",   "cache-control",
      "forwarded",     "x-forwarded-for", "x-forwarded-host",  "x-forwarded-proto", "x-real-ip",
      "x-request-id",  "if-match",      "if-none-match",       "if-modified-since", "if-unmodified-since",
      "if-range",      "trailer",       "te",                  "traceparent",    "tracestate"};
  if (is_hop_by_hop(name)) return false;
  for (auto n : kNever) {
    if (iequals(name, n)) return false;
  }
  return true;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

HeadCounts count_fields(const boost::beast::http::fields& fields) {
  HeadCounts counts;
  for (const auto& f : fields) ++counts[lower(f.name_string())];
  return counts;
}

Trailers trailers_after(const boost::beast::http::fields& fields, const HeadCounts& head) {
  // Beast inserts a field after the last one of the same name, not at the
  // end: the trailers of a name are the ones past the head's count of it.
  Trailers out;
  HeadCounts seen;
  for (const auto& f : fields) {
    const std::string name = lower(f.name_string());
    const auto it = head.find(name);
    if (++seen[name] <= (it == head.end() ? 0 : it->second)) continue;
    if (!may_trail(f.name_string())) continue;
    auto* h = out.Add();
    h->set_name(std::string(f.name_string()));
    h->set_value(std::string(f.value()));
  }
  return out;
}

void drop_forbidden_trailers(Trailers& trailers) {
  for (int i = trailers.size() - 1; i >= 0; --i) {
    if (!may_trail(trailers.Get(i).name())) trailers.DeleteSubrange(i, 1);
  }
}

boost::beast::http::fields to_fields(const Trailers& trailers) {
  boost::beast::http::fields f;
  for (const auto& h : trailers) {
    if (!may_trail(h.name())) continue;
    f.insert(h.name(), h.value());
  }
  return f;
}

}  // namespace postern::net
