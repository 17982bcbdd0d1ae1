// The binaries' command lines as a user meets them: --help says what each
// is, its options, subcommands and exit codes; --version; bad usage is exit
// 2 on stderr; subcommand --help is help, not an error.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "support/files.hpp"
#include "support/process.hpp"

namespace postern::testing {
namespace {

const std::vector<std::string> kServices = {"edge", "broker", "connector", "policy"};

TEST(Cli, HelpSaysWhatEachBinaryIsItsOptionsAndExitCodes) {
  for (const auto& s : kServices) {
    const std::string name = "postern-" + s;
    for (const char* flag : {"--help", "-h"}) {
      const auto r = run_command({binary_path(name), flag});
      EXPECT_EQ(r.exit_code, 0) << name << " " << flag << "\n" << r.err;
      EXPECT_NE(r.out.find(name + " "), std::string::npos) << r.out;
      for (const char* option : {"--config FILE", "--log-level LEVEL", "--check-config", "--version"}) {
        EXPECT_NE(r.out.find(option), std::string::npos) << name << " lacks " << option << "\n" << r.out;
      }
      EXPECT_NE(r.out.find("exit codes:"), std::string::npos) << r.out;
      EXPECT_NE(r.out.find("  2  a bad command line"), std::string::npos) << r.out;
      // A sentence on what it is, not only a usage line.
      EXPECT_NE(r.out.find(s == "policy" ? "policy file" : "zone"), std::string::npos) << r.out;
    }
  }
  const auto policy = run_command({binary_path("postern-policy"), "--help"});
  EXPECT_NE(policy.out.find("validate FILE..."), std::string::npos) << policy.out;
  EXPECT_NE(policy.out.find("hash-password"), std::string::npos) << policy.out;
}

TEST(Cli, VersionIsPrintedAndExitsZero) {
  for (const auto& s : kServices) {
    const auto r = run_command({binary_path("postern-" + s), "--version"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out.rfind("postern-" + s + " ", 0), 0u) << r.out;
    EXPECT_NE(r.out.find_first_of("0123456789"), std::string::npos) << r.out;
  }
}

TEST(Cli, BadUsageIsExitTwoOnStderrPointingToHelp) {
  for (const auto& s : kServices) {
    const auto none = run_command({binary_path("postern-" + s)});
    EXPECT_EQ(none.exit_code, 2);
    EXPECT_NE(none.err.find("--config FILE is required"), std::string::npos) << none.err;
    EXPECT_NE(none.err.find("--help says more"), std::string::npos) << none.err;
    const auto unknown = run_command({binary_path("postern-" + s), "--bogus"});
    EXPECT_EQ(unknown.exit_code, 2);
    EXPECT_NE(unknown.err.find("unknown argument '--bogus'"), std::string::npos) << unknown.err;
  }
}

TEST(Cli, SubcommandHelpIsHelp) {
  const auto v = run_command({binary_path("postern-policy"), "validate", "--help"});
  EXPECT_EQ(v.exit_code, 0) << v.err;
  EXPECT_NE(v.out.find("usage: postern-policy validate FILE..."), std::string::npos) << v.out;
  const auto h = run_command({binary_path("postern-policy"), "hash-password", "--help"});
  EXPECT_EQ(h.exit_code, 0) << h.err;
  EXPECT_NE(h.out.find("usage: postern-policy hash-password"), std::string::npos) << h.out;
}

}  // namespace
}  // namespace postern::testing
