#include "common/net/tls.hpp"

#include <openssl/err.h>

#include <boost/asio/ssl/context.hpp>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "common/observability/certificate_expiry.hpp"

namespace postern::net {
namespace ssl = boost::asio::ssl;

namespace {

std::string why(const boost::system::error_code& ec) {
  std::string text = ec.message();
  if (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    text += " (";
    text += buf;
    text += ')';
  }
  return text;
}

}  // namespace

std::string read_pem_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(std::string("cannot read ") + what + " '" + path + "': " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::shared_ptr<ssl::context> make_server_tls(const std::string& cert_file, const std::string& key_file) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                   ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
  boost::system::error_code ec;
  read_pem_file(cert_file, "TLS certificate");
  ctx->use_certificate_chain_file(cert_file, ec);
  if (ec) throw std::runtime_error("bad TLS certificate '" + cert_file + "': " + why(ec));
  read_pem_file(key_file, "TLS private key");
  ctx->use_private_key_file(key_file, ssl::context::pem, ec);
  if (ec) throw std::runtime_error("bad TLS private key '" + key_file + "': " + why(ec));
  if (SSL_CTX_check_private_key(ctx->native_handle()) != 1) {
    throw std::runtime_error("TLS private key '" + key_file + "' does not match certificate '" + cert_file + "'");
  }
  return ctx;
}

std::shared_ptr<ssl::context> make_client_tls(const std::string& ca_file, const std::string& what) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                   ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  boost::system::error_code ec;
  if (ca_file.empty()) {
    ctx->set_default_verify_paths(ec);
  } else {
    read_pem_file(ca_file, what.c_str());
    ctx->load_verify_file(ca_file, ec);
    if (ec) throw std::runtime_error(what + ": bad CA bundle '" + ca_file + "': " + why(ec));
    observability::track_certificate(what, ca_file);
  }
  ctx->set_verify_mode(ssl::verify_peer);
  return ctx;
}

void check_key_pair(const std::string& cert_file, const std::string& key_file, const std::string& what) {
  if (cert_file.empty() || key_file.empty()) {
    throw std::runtime_error(what + ": cert_file and key_file go together (a client certificate needs its key)");
  }
  try {
    make_server_tls(cert_file, key_file);
  } catch (const std::exception& e) {
    throw std::runtime_error(what + ": " + e.what());
  }
  observability::track_certificate(what + ".cert_file", cert_file);
}

}  // namespace postern::net
