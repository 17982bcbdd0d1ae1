#include "common/net/trailers.hpp"

#include "common/net/http_headers.hpp"

namespace postern::net {

namespace {

// Framing, hop-by-hop and routing fields never travel as trailers.
bool may_trail(std::string_view name) { return !is_hop_by_hop(name) && !iequals(name, "host"); }

}  // namespace

Trailers trailers_after(const boost::beast::http::fields& fields, std::size_t head_fields) {
  Trailers out;
  std::size_t i = 0;
  for (const auto& f : fields) {
    if (i++ < head_fields) continue;
    if (!may_trail(f.name_string())) continue;
    auto* h = out.Add();
    h->set_name(std::string(f.name_string()));
    h->set_value(std::string(f.value()));
  }
  return out;
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
