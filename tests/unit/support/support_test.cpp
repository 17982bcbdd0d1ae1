// Self-test of the integration-test support library (tests/support).

#include "support/certs.hpp"
#include "support/files.hpp"
#include "support/http.hpp"
#include "support/process.hpp"
#include "support/sockets.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <regex>

namespace postern::testing {
namespace {

using namespace std::chrono_literals;

/// python3's http.server on 127.0.0.1, port 0, serving `dir`.
struct PythonServer {
  explicit PythonServer(const TempDir& dir)
      : process(Process::start({"python3", "-u", "-m", "http.server", "--bind", "127.0.0.1", "--directory", dir.path(),
                                "0"},
                               dir.file("http-server.log"))) {
    const std::string line = process->wait_for_log(R"(Serving HTTP on 127\.0\.0\.1 port \d+)");
    std::smatch m;
    std::regex_search(line, m, std::regex(R"(port (\d+))"));
    port = static_cast<std::uint16_t>(std::stoi(m[1].str()));
  }
  std::unique_ptr<Process> process;
  std::uint16_t port = 0;
};

TEST(SupportProcess, WaitForPortReadsTheListeningLine) {
  TempDir dir;
  auto p = Process::start(
      {"/bin/sh", "-c",
       R"(echo '{"msg":"listening","listener":"other","port":1111}'; )"
       R"(echo '{"ts":"t","level":"info","msg":"listening","listener":"x","address":"127.0.0.1","port":4242}'; sleep 5)"},
      dir.file("sh.log"));
  EXPECT_EQ(p->wait_for_port("x"), 4242);
  EXPECT_EQ(p->wait_for_port("other"), 1111);
  EXPECT_TRUE(p->running());
  EXPECT_GT(p->peak_rss_kib(), 0);
  EXPECT_GT(p->rss_kib(), 0);
  // Its own process group, so a test can kill everything it started.
  EXPECT_EQ(::getpgid(p->pid()), p->pid());
}

TEST(SupportProcess, WaitReturnsExitCodeOrSignal) {
  TempDir dir;
  auto exits = Process::start({"/bin/sh", "-c", "exit 3"}, dir.file("a.log"));
  EXPECT_EQ(exits->wait(5s), 3);
  EXPECT_EQ(exits->wait(0ms), 3);
  EXPECT_FALSE(exits->running());
  EXPECT_GT(exits->peak_rss_kib(), 0);  // from wait4() once reaped
  EXPECT_EQ(exits->rss_kib(), -1);

  auto sleeper = Process::start({"sleep", "30"}, dir.file("b.log"));
  EXPECT_EQ(sleeper->wait(50ms), std::nullopt);
  sleeper->signal(SIGTERM);
  EXPECT_EQ(sleeper->wait(5s), 128 + SIGTERM);
}

TEST(SupportProcess, WaitForLogFailsClearly) {
  TempDir dir;
  auto p = Process::start({"/bin/sh", "-c", "echo hello there; sleep 5"}, dir.file("a.log"));
  EXPECT_EQ(p->wait_for_log("^hello"), "hello there");
  try {
    p->wait_for_log("never printed", 200ms);
    FAIL() << "expected a timeout";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("timed out"), std::string::npos) << what;
    EXPECT_NE(what.find("never printed"), std::string::npos) << what;
    EXPECT_NE(what.find("hello there"), std::string::npos) << what;  // the log tail
  }

  auto quits = Process::start({"/bin/sh", "-c", "echo bye; exit 7"}, dir.file("b.log"));
  try {
    quits->wait_for_log("ready", 10s);
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("exited with status 7"), std::string::npos) << what;
    EXPECT_NE(what.find("bye"), std::string::npos) << what;
  }
}

TEST(SupportProcess, EnvironmentLogOffsetsAndRestarts) {
  TempDir dir;
  const std::string log = dir.file("svc.log");
  auto first = Process::start({"/bin/sh", "-c", "echo \"$POSTERN_X\"; echo \"$POSTERN_X\""}, log, {"POSTERN_X=one"});
  ASSERT_EQ(first->wait(5s), 0);
  EXPECT_EQ(first->count_log("^one$"), 2);
  EXPECT_EQ(first->log(), "one\none\n");

  // A restart appending to the same file sees only its own output.
  auto second = Process::start({"/bin/sh", "-c", "echo \"$POSTERN_X\"; read line; echo after"}, log, {"POSTERN_X=two"});
  ASSERT_EQ(second->wait(5s), 0);  // stdin is /dev/null, so `read` returns at once
  EXPECT_EQ(second->log(), "two\nafter\n");
  EXPECT_EQ(second->count_log("one"), 0);
  EXPECT_EQ(read_file(log), "one\none\ntwo\nafter\n");
  EXPECT_EQ(second->wait_for_log("after", 1s, second->log_size() - 6), "after");
}

TEST(SupportProcess, ChildInheritsNoDescriptors) {
  TempDir dir;
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);  // deliberately without O_CLOEXEC
  auto p = Process::start({"/bin/sh", "-c", "ls /proc/$$/fd"}, dir.file("fd.log"));
  ASSERT_EQ(p->wait(5s), 0);
  ::close(fds[0]);
  ::close(fds[1]);
  EXPECT_EQ(p->count_log("^" + std::to_string(fds[0]) + "$"), 0) << p->log();
  EXPECT_EQ(p->count_log("^" + std::to_string(fds[1]) + "$"), 0) << p->log();
  EXPECT_EQ(p->count_log("^[012]$"), 3) << p->log();
}

TEST(SupportProcess, StartThrowsWhenExecFails) {
  TempDir dir;
  EXPECT_THROW(Process::start({dir.file("missing-binary")}, dir.file("x.log")), std::runtime_error);
  EXPECT_THROW(Process::start({"no-such-program-anywhere"}, dir.file("x.log")), std::runtime_error);
}

TEST(SupportProcess, RunCommandSeparatesStreams) {
  const CommandResult r = run_command({"/bin/sh", "-c", "echo out; echo err >&2; exit 2"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.out, "out\n");
  EXPECT_EQ(r.err, "err\n");
  const CommandResult slow = run_command({"sleep", "30"}, 100ms);
  EXPECT_TRUE(slow.timed_out);
}

TEST(SupportSockets, ListeningSocketsFindsAnInProcessListener) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 8), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::uint16_t port = ntohs(addr.sin_port);

  const auto found = listening_sockets(::getpid());
  EXPECT_NE(std::find(found.begin(), found.end(), std::pair<std::string, std::uint16_t>("127.0.0.1", port)),
            found.end());
  EXPECT_TRUE(can_connect(port));

  const int fd6 = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in6 addr6{};
  addr6.sin6_family = AF_INET6;
  addr6.sin6_addr = in6addr_loopback;
  if (fd6 >= 0 && ::bind(fd6, reinterpret_cast<sockaddr*>(&addr6), sizeof addr6) == 0 && ::listen(fd6, 8) == 0) {
    len = sizeof addr6;
    ASSERT_EQ(::getsockname(fd6, reinterpret_cast<sockaddr*>(&addr6), &len), 0);
    const auto found6 = listening_sockets(::getpid());
    EXPECT_NE(std::find(found6.begin(), found6.end(),
                        std::pair<std::string, std::uint16_t>("::1", ntohs(addr6.sin6_port))),
              found6.end());
  }
  if (fd6 >= 0) ::close(fd6);

  ::close(fd);
  EXPECT_FALSE(can_connect(port));
  EXPECT_FALSE(wait_http_status(port, "/", 200, 100ms));
}

TEST(SupportHttp, MetricValueMatchesLabels) {
  const std::string text =
      "# HELP postern_edge_requests_total Requests.\n"
      "# TYPE postern_edge_requests_total counter\n"
      "postern_edge_requests_total{route=\"a\",code=\"200\"} 3\n"
      "postern_edge_requests_total{route=\"a\",code=\"503\"} 2 1700000000000\n"
      "postern_edge_requests_total{route=\"b\",code=\"200\"} 5\n"
      "postern_edge_requests_total_other{route=\"a\"} 100\n"
      "postern_edge_inflight 7\n"
      "postern_edge_latency_seconds_bucket{route=\"x\\\"y\",le=\"+Inf\"} 4\n"
      "postern_edge_latency_seconds{quantile=\"0.5\"} NaN\n";
  EXPECT_EQ(metric_value(text, "postern_edge_requests_total"), 10);
  EXPECT_EQ(metric_value(text, "postern_edge_requests_total", {{"route", "a"}}), 5);
  EXPECT_EQ(metric_value(text, "postern_edge_requests_total", {{"route", "a"}, {"code", "503"}}), 2);
  EXPECT_EQ(metric_value(text, "postern_edge_requests_total", {{"route", "c"}}), 0);
  EXPECT_EQ(metric_value(text, "postern_edge_inflight"), 7);
  EXPECT_EQ(metric_value(text, "postern_edge_latency_seconds_bucket", {{"route", "x\"y"}, {"le", "+Inf"}}), 4);
  EXPECT_EQ(metric_value(text, "postern_edge_latency_seconds"), 0);
  EXPECT_EQ(metric_value(text, "missing"), 0);
}

TEST(SupportHttp, ParseResponseHandlesChunkedAndInterim) {
  const RawResponse r = parse_response(
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A:  b \r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("x-a"), "b");
  EXPECT_EQ(r.body, "hello world");
  EXPECT_EQ(parse_response("garbage").status, 0);
  EXPECT_EQ(parse_response("HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\n\r\nbadxx").body, "bad");
}

TEST(SupportHttp, CurlHeadersTakeTheLastResponse) {
  CurlResult r;
  r.headers =
      "HTTP/1.1 302 Found\r\nLocation: /b\r\nSet-Cookie: a=1\r\n\r\n"
      "HTTP/1.1 200 OK\r\nSet-Cookie: b=2\r\nset-cookie: c=3\r\nContent-Type: text/plain\r\n\r\n";
  EXPECT_EQ(r.header("location"), "");
  EXPECT_EQ(r.header("CONTENT-TYPE"), "text/plain");
  EXPECT_EQ(r.header_values("Set-Cookie"), (std::vector<std::string>{"b=2", "c=3"}));
}

TEST(SupportFiles, PatternFileShaMatchesContent) {
  TempDir dir;
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  for (std::uint64_t size : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{251 * 4096 + 17}}) {
    const std::string path = dir.file("pattern-" + std::to_string(size));
    const std::string sha = make_pattern_file(path, size);
    const std::string content = read_file(path);
    ASSERT_EQ(content.size(), size);
    for (std::size_t i = 0; i < content.size(); i += 997) {
      ASSERT_EQ(static_cast<unsigned char>(content[i]), i % 251) << "at " << i;
    }
    EXPECT_EQ(sha, sha256_hex(content));
    EXPECT_EQ(sha, sha256_file_hex(path));
  }
}

TEST(SupportFiles, TempDirIsRemovedAndPathsAreRooted) {
  std::string path;
  {
    TempDir dir("postern-self");
    path = dir.path();
    write_file(dir.file("x.txt"), "x");
    EXPECT_TRUE(std::filesystem::is_directory(path));
    EXPECT_NE(path.find("postern-self-"), std::string::npos);
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_EQ(binary_path("postern-edge"), std::string(POSTERN_BINARY_DIR) + "/bin/postern-edge");
  EXPECT_EQ(source_path("deploy/certs"), std::string(POSTERN_SOURCE_DIR) + "/deploy/certs");
  EXPECT_THROW(read_file(path + "/nope"), std::runtime_error);
}

TEST(SupportHttp, CurlAgainstAPythonServer) {
  TempDir dir;
  write_file(dir.file("hello.txt"), "hello");
  PythonServer server(dir);

  const auto sockets = listening_sockets(server.process->pid());
  EXPECT_NE(std::find(sockets.begin(), sockets.end(), std::pair<std::string, std::uint16_t>("127.0.0.1", server.port)),
            sockets.end());
  EXPECT_TRUE(wait_http_status(server.port, "/hello.txt", 200, 5s));

  const std::string base = "http://127.0.0.1:" + std::to_string(server.port);
  const CurlResult ok = curl({base + "/hello.txt"}, 10s);
  EXPECT_EQ(ok.exit_code, 0) << ok.stderr_text;
  EXPECT_EQ(ok.status, 200);
  EXPECT_EQ(ok.body, "hello");
  EXPECT_EQ(ok.header("content-length"), "5");

  const CurlResult missing = curl({base + "/nope"}, 10s);
  EXPECT_EQ(missing.status, 404);

  const std::string big = dir.file("big.bin");
  const std::string sha = make_pattern_file(big, 3 * 1024 * 1024 + 5);
  const CurlResult download = curl({base + "/big.bin"}, 30s, dir.file("download.bin"));
  EXPECT_EQ(download.status, 200);
  EXPECT_TRUE(download.body.empty());
  EXPECT_EQ(sha256_file_hex(dir.file("download.bin")), sha);

  // http.server answers an unknown method with 501 (and malformed lines in HTTP/0.9 style).
  const RawResponse bad = parse_response(raw_exchange(server.port, "FROB / HTTP/1.1\r\nHost: x\r\n\r\n"));
  EXPECT_EQ(bad.status, 501);

  const CurlResult refused = curl({"http://127.0.0.1:1/"}, 5s);
  EXPECT_EQ(refused.status, 0);
  EXPECT_EQ(refused.exit_code, 7);
  EXPECT_FALSE(refused.stderr_text.empty());
}

TEST(SupportCerts, MakesTheDevPki) {
  if (!std::filesystem::exists(source_path("deploy/certs/make-dev-certs.sh"))) {
    GTEST_SKIP() << "deploy/certs/make-dev-certs.sh is not there yet";
  }
  const Certs& certs = test_certs();
  EXPECT_EQ(&certs, &test_certs());
  for (const std::string* file : {&certs.ca, &certs.edge_crt, &certs.rogue_connector_key}) {
    EXPECT_TRUE(std::filesystem::is_regular_file(*file)) << *file;
  }
  // The connector certificate chains to the CA, the rogue one does not.
  EXPECT_EQ(run_command({"openssl", "verify", "-CAfile", certs.ca, certs.connector_crt}).exit_code, 0);
  EXPECT_NE(run_command({"openssl", "verify", "-CAfile", certs.ca, certs.rogue_connector_crt}).exit_code, 0);
}

}  // namespace
}  // namespace postern::testing
