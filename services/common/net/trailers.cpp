#include "common/net/trailers.hpp"

#include "common/net/http_headers.hpp"

namespace postern::net {

Trailers trailers_after(const boost::beast::http::fields& fields, std::size_t head_fields) {
  Trailers out;
  std::size_t i = 0;
  for (const auto& f : fields) {
    if (i++ < head_fields) continue;
    if (is_hop_by_hop(f.name_string()) || iequals(f.name_string(), "host")) continue;
    auto* h = out.Add();
    h->set_name(std::string(f.name_string()));
    h->set_value(std::string(f.value()));
  }
  return out;
}

boost::beast::http::fields to_fields(const Trailers& trailers) {
  boost::beast::http::fields f;
  for (const auto& h : trailers) {
    if (is_hop_by_hop(h.name()) || iequals(h.name(), "host")) continue;
    f.insert(h.name(), h.value());
  }
  return f;
}

}  // namespace postern::net
