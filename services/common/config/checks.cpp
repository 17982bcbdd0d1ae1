#include "common/config/checks.hpp"

#include <charconv>
#include <stdexcept>

#include "common/net/http_client.hpp"
#include "common/net/listen.hpp"
#include "common/net/tls.hpp"
#include "postern/config/v1/config.pb.h"

namespace postern::config {

void Checks::add(std::string field, std::string message) {
  issues_.push_back({std::move(field), std::move(message)});
}

void Checks::add_thrown(const std::string& field, std::string_view text) {
  // "field.sub[2]: message" -> field "field.sub[2]", message "message".
  if (text.starts_with(field)) {
    const auto colon = text.find(": ");
    if (colon != std::string_view::npos && colon >= field.size()) {
      const std::string_view path = text.substr(0, colon);
      const char next = path.size() > field.size() ? path[field.size()] : '\0';
      if ((next == '\0' || next == '.' || next == '[') && path.find(' ') == std::string_view::npos) {
        add(std::string(path), std::string(text.substr(colon + 2)));
        return;
      }
    }
  }
  add(field, std::string(text));
}

void Checks::throw_if_any() const {
  if (issues_.empty()) return;
  std::string all;
  for (const auto& i : issues_) {
    if (!all.empty()) all += '\n';
    all += i.field.empty() ? i.message : i.field + ": " + i.message;
  }
  throw std::runtime_error(all);
}

void check_host_port(Checks& c, const std::string& field, std::string_view address) {
  const auto colon = address.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == address.size()) {
    c.add(field, "expected host:port, got '" + std::string(address) + "'");
    return;
  }
  const std::string_view port = address.substr(colon + 1);
  unsigned n = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), n);
  if (ec != std::errc{} || end != port.data() + port.size() || n == 0 || n > 65535) {
    c.add(field, "port '" + std::string(port) + "' is not a number from 1 to 65535");
  }
}

void check_listen(Checks& c, const std::string& field, const std::string& address, bool required) {
  if (address.empty()) {
    c.require(!required, field, "required (host:port to listen on)");
    return;
  }
  c.run(field, [&] { net::parse_listen(address); });
}

void check_client_tls(Checks& c, const std::string& field, const v1::ClientTls& tls) {
  if (!tls.ca_file().empty()) c.run(field + ".ca_file", [&] { net::make_client_tls(tls.ca_file(), field + ".ca_file"); });
  if (!tls.cert_file().empty() || !tls.key_file().empty()) {
    c.run(field, [&] { net::check_key_pair(tls.cert_file(), tls.key_file(), field); });
  }
}

void check_server_tls(Checks& c, const std::string& field, const v1::ServerTls& tls, bool require_client_ca) {
  if (tls.cert_file().empty() || tls.key_file().empty()) {
    c.add(field, "cert_file and key_file are required");
  } else {
    c.run(field, [&] { net::check_key_pair(tls.cert_file(), tls.key_file(), field); });
  }
  if (!tls.client_ca_file().empty()) {
    c.run(field + ".client_ca_file", [&] { net::make_client_tls(tls.client_ca_file(), field + ".client_ca_file"); });
  } else if (require_client_ca) {
    c.add(field + ".client_ca_file", "required: clients must present a certificate this CA issued");
  }
}

void check_tracing(Checks& c, const std::string& field, const v1::TracingConfig& tracing) {
  if (!tracing.endpoint().empty()) {
    c.run(field + ".endpoint", [&] {
      const std::string& url = tracing.endpoint();
      if (!url.starts_with("http://") && !url.starts_with("https://")) {
        throw std::invalid_argument("URL '" + url + "' must start with http:// or https:// (OTLP/HTTP)");
      }
      net::Origin::parse(url);
    });
  }
  if (!tracing.ca_file().empty()) {
    c.run(field + ".ca_file", [&] { net::make_client_tls(tracing.ca_file(), field + ".ca_file"); });
  }
  if (tracing.has_sample_ratio()) {
    c.require(tracing.sample_ratio() >= 0.0 && tracing.sample_ratio() <= 1.0, field + ".sample_ratio",
              "must be from 0 to 1");
  }
}

}  // namespace postern::config
