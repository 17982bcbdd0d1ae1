#pragma once
// The checks a service runs on its config before it starts, beyond the
// schema: required fields, addresses that parse, files that load, values in
// range. `--check-config` runs the same checks, so "ok" there means the
// config will start (ports in use and peers that cannot be reached aside).
// Every problem is collected, not only the first.

#include <exception>
#include <string>
#include <string_view>
#include <vector>

namespace postern::config {

namespace v1 {
class ClientTls;
class ServerTls;
class TracingConfig;
}  // namespace v1

/// One problem: the field path as in loader errors (`listeners[0].tls`) and
/// what is wrong with it.
struct Issue {
  std::string field;
  std::string message;
};

class Checks {
 public:
  void add(std::string field, std::string message);

  /// Adds `message` on `field` unless `ok`.
  void require(bool ok, std::string field, std::string message) {
    if (!ok) add(std::move(field), std::move(message));
  }

  /// Runs `f`; a std::exception it throws becomes an issue on `field`. When
  /// the text starts with a path within `field` (`field.x: ...`,
  /// `field[1]: ...`), that path is the issue's field.
  template <class F>
  void run(const std::string& field, F&& f) {
    try {
      f();
    } catch (const std::exception& e) {
      add_thrown(field, e.what());
    }
  }

  bool empty() const { return issues_.empty(); }
  const std::vector<Issue>& issues() const { return issues_; }

  /// Throws std::runtime_error with every issue ("field: message", one per
  /// line) if there are any: for code that checks again where it starts.
  void throw_if_any() const;

 private:
  void add_thrown(const std::string& field, std::string_view text);
  std::vector<Issue> issues_;
};

/// Checks that `address` is host:port with a port from 1 to 65535.
void check_host_port(Checks& c, const std::string& field, std::string_view address);

/// A listen address (IP or localhost, and a port up to 65535); empty is an
/// issue only when `required`.
void check_listen(Checks& c, const std::string& field, const std::string& address, bool required);

/// TLS blocks: the files exist and are PEM, each key matches its
/// certificate. A client block's certificate and key go together; a server
/// block needs both, and a client_ca_file when `require_client_ca`.
void check_client_tls(Checks& c, const std::string& field, const v1::ClientTls& tls);
void check_server_tls(Checks& c, const std::string& field, const v1::ServerTls& tls, bool require_client_ca);

/// A tracing block: the endpoint is an http(s) URL, the CA bundle loads,
/// the sample ratio is from 0 to 1.
void check_tracing(Checks& c, const std::string& field, const v1::TracingConfig& tracing);

}  // namespace postern::config
