#include "common/observability/certificate_expiry.hpp"

#include <gtest/gtest.h>

#include <ctime>

#include "support/files.hpp"
#include "support/process.hpp"

namespace postern::observability {
namespace {

using testing::TempDir;

// A self-signed certificate valid for `days`, made by the openssl CLI.
std::string make_cert(const TempDir& dir, const std::string& name, int days) {
  const auto crt = dir.file(name + ".crt");
  const auto r = testing::run_command({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                                       "ec_paramgen_curve:P-256", "-nodes", "-keyout", dir.file(name + ".key"),
                                       "-out", crt, "-days", std::to_string(days), "-subj", "/CN=" + name});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return crt;
}

double days_from_now(double epoch) { return (epoch - static_cast<double>(std::time(nullptr))) / 86400.0; }

TEST(CertificateExpiry, ReadsNotAfterAndTheEarliestOfABundle) {
  TempDir dir;
  const auto short_lived = make_cert(dir, "short", 3);
  const auto long_lived = make_cert(dir, "long", 40);
  const auto t = earliest_not_after(short_lived);
  ASSERT_TRUE(t);
  EXPECT_NEAR(days_from_now(*t), 3.0, 0.01);

  const auto bundle = dir.file("bundle.crt");
  testing::write_file(bundle, testing::read_file(long_lived) + testing::read_file(short_lived));
  const auto b = earliest_not_after(bundle);
  ASSERT_TRUE(b);
  EXPECT_NEAR(days_from_now(*b), 3.0, 0.01);

  EXPECT_FALSE(earliest_not_after(dir.file("missing.crt")));
  testing::write_file(dir.file("junk.crt"), "not a certificate\n");
  EXPECT_FALSE(earliest_not_after(dir.file("junk.crt")));
}

TEST(CertificateExpiry, ExportsEachTrackedFileAndFollowsARenewal) {
  TempDir dir;
  const auto crt = dir.file("tracked.crt");
  testing::write_file(crt, testing::read_file(make_cert(dir, "first", 5)));
  track_certificate("relay.tls.cert_file", crt);
  track_certificate("relay.tls.cert_file", crt);  // once
  auto value = [&]() -> std::optional<double> {
    for (const auto& f : certificate_metrics()) {
      EXPECT_EQ(f.name, "postern_certificate_expiry_timestamp_seconds");
      int seen = 0;
      std::optional<double> v;
      for (const auto& m : f.metric) {
        if (m.label.size() == 2 && m.label[0].value == "relay.tls.cert_file" && m.label[1].value == crt) {
          ++seen;
          v = m.gauge.value;
        }
      }
      EXPECT_LE(seen, 1);
      return v;
    }
    return std::nullopt;
  };
  ASSERT_TRUE(value());
  EXPECT_NEAR(days_from_now(*value()), 5.0, 0.01);
  // A renewal (cert-manager writes a new file) shows at the next scrape.
  testing::write_file(crt, testing::read_file(make_cert(dir, "renewed", 90)) + "\n");
  ASSERT_TRUE(value());
  EXPECT_NEAR(days_from_now(*value()), 90.0, 0.01);
}

}  // namespace
}  // namespace postern::observability
