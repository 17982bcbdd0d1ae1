#include "support/ws.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <filesystem>

#include "support/files.hpp"
#include "support/process.hpp"

namespace postern::testing {

std::string system_python() {
  return std::filesystem::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
}

namespace {

boost::json::object run_json(const std::string& script, const std::vector<std::string>& args,
                             std::chrono::milliseconds timeout) {
  std::vector<std::string> argv{system_python(), source_path(script)};
  argv.insert(argv.end(), args.begin(), args.end());
  const auto r = run_command(argv, timeout);
  boost::system::error_code ec;
  auto v = boost::json::parse(r.out, ec);
  if (ec || !v.is_object()) {
    boost::json::object o;
    o["error"] = "no JSON from " + script + " (exit " + std::to_string(r.exit_code) + "): " + r.out + r.err;
    return o;
  }
  return v.as_object();
}

}  // namespace

boost::json::object ws_client(const std::vector<std::string>& args, std::chrono::milliseconds timeout) {
  return run_json("tests/support/wsclient.py", args, timeout);
}

boost::json::object browser(const std::vector<std::string>& args, std::chrono::milliseconds timeout) {
  return run_json("tests/support/browser.py", args, timeout);
}

std::string str(const boost::json::object& o, std::string_view key) {
  auto it = o.find(key);
  if (it == o.end() || !it->value().is_string()) return {};
  return std::string(it->value().as_string());
}

long long num(const boost::json::object& o, std::string_view key) {
  auto it = o.find(key);
  if (it == o.end()) return -1;
  if (it->value().is_int64()) return it->value().as_int64();
  if (it->value().is_uint64()) return static_cast<long long>(it->value().as_uint64());
  if (it->value().is_double()) return static_cast<long long>(it->value().as_double());
  return -1;
}

}  // namespace postern::testing
