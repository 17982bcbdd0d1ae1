#include "common/observability/certificate_expiry.hpp"

#include <openssl/asn1.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <ctime>
#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include "common/file_watch.hpp"

namespace postern::observability {
namespace {

struct Tracked {
  FileStamp stamp;
  std::optional<double> not_after;
};

struct State {
  std::mutex mu;
  std::map<std::pair<std::string, std::string>, Tracked> files;  // (field, file)
};

State& state() {
  static State s;
  return s;
}

std::optional<double> to_epoch(const ASN1_TIME* t) {
  std::tm tm{};
  if (!t || ASN1_TIME_to_tm(t, &tm) != 1) return std::nullopt;
  return static_cast<double>(timegm(&tm));
}

}  // namespace

std::optional<double> earliest_not_after(const std::string& file) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_file(file.c_str(), "r"), BIO_free);
  if (!bio) return std::nullopt;
  std::optional<double> earliest;
  while (X509* raw = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    std::unique_ptr<X509, decltype(&X509_free)> cert(raw, X509_free);
    const auto t = to_epoch(X509_get0_notAfter(cert.get()));
    if (t && (!earliest || *t < *earliest)) earliest = t;
  }
  return earliest;
}

void track_certificate(const std::string& field, const std::string& file) {
  if (file.empty()) return;
  auto& s = state();
  std::lock_guard lock(s.mu);
  s.files.try_emplace({field, file});
}

std::vector<prometheus::MetricFamily> certificate_metrics() {
  auto& s = state();
  std::lock_guard lock(s.mu);
  if (s.files.empty()) return {};
  prometheus::MetricFamily f;
  f.name = "postern_certificate_expiry_timestamp_seconds";
  f.help =
      "When the certificate in each configured TLS file expires (notAfter; the earliest in a chain or bundle), "
      "seconds since the epoch. Alert on this minus time()";
  f.type = prometheus::MetricType::Gauge;
  for (auto& [key, t] : s.files) {
    const FileStamp now = stamp_file(key.second);
    if (!(now == t.stamp)) {
      t.stamp = now;
      t.not_after = earliest_not_after(key.second);
    }
    if (!t.not_after) continue;
    prometheus::ClientMetric m;
    m.label = {{"field", key.first}, {"file", key.second}};
    m.gauge.value = *t.not_after;
    f.metric.push_back(std::move(m));
  }
  if (f.metric.empty()) return {};
  return {std::move(f)};
}

}  // namespace postern::observability
