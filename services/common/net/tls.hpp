#pragma once
// TLS contexts from files, with errors that name the file and the reason.

#include <memory>
#include <string>

namespace boost::asio::ssl {
class context;
}

namespace postern::net {

/// Server context from a certificate chain and key (PEM). Throws
/// std::runtime_error naming the file on any problem.
std::shared_ptr<boost::asio::ssl::context> make_server_tls(const std::string& cert_file, const std::string& key_file);

/// Client context that verifies the server against `ca_file` (system CAs
/// when empty). Host name verification is set per connection. Errors name
/// `what` (the config field) and the file.
std::shared_ptr<boost::asio::ssl::context> make_client_tls(const std::string& ca_file,
                                                           const std::string& what = "CA bundle");

/// Checks that `cert_file` holds a PEM certificate chain and `key_file` its
/// private key. Throws std::runtime_error naming `what`.cert_file or
/// `what`.key_file and the problem.
void check_key_pair(const std::string& cert_file, const std::string& key_file, const std::string& what);

/// Reads a whole file; throws std::runtime_error naming `what` and the path.
std::string read_pem_file(const std::string& path, const char* what);

}  // namespace postern::net
