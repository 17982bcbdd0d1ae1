#include "common/net/listen.hpp"

#include <charconv>
#include <stdexcept>
#include <string>

namespace postern::net {

boost::asio::ip::tcp::endpoint parse_listen(std::string_view text) {
  auto bad = [&](const char* why) {
    return std::invalid_argument("listen address '" + std::string(text) + "': " + why + " (expected host:port)");
  };
  auto colon = text.rfind(':');
  if (colon == std::string_view::npos) throw bad("no port");
  std::string_view host = text.substr(0, colon);
  std::string_view port_text = text.substr(colon + 1);
  unsigned port = 0;
  auto [p, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc{} || p != port_text.data() + port_text.size() || port > 65535) throw bad("bad port");
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  boost::asio::ip::address addr;
  if (host.empty()) {
    addr = boost::asio::ip::address_v4::any();
  } else if (host == "localhost") {
    addr = boost::asio::ip::address_v4::loopback();
  } else {
    boost::system::error_code aec;
    addr = boost::asio::ip::make_address(std::string(host), aec);
    if (aec) throw bad("host must be an IP address or localhost");
  }
  return {addr, static_cast<unsigned short>(port)};
}

}  // namespace postern::net
