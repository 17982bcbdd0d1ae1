#pragma once
// When each configured certificate stops being valid, for an alert that
// fires weeks before a handshake fails:
// postern_certificate_expiry_timestamp_seconds{field, file}, the notAfter
// time of the certificate a file holds (the earliest one in a chain or CA
// bundle), read again at each scrape when the file changed, so a renewal
// shows without a restart.

#include <prometheus/metric_family.h>

#include <optional>
#include <string>
#include <vector>

namespace postern::observability {

/// Exports the file's expiry from now on, labelled with the config field
/// that names it (e.g. "registration.tls.cert_file"). Thread-safe; the same
/// pair twice is kept once.
void track_certificate(const std::string& field, const std::string& file);

/// The earliest notAfter (seconds since the epoch) of the PEM certificates
/// in `file`; nullopt when it holds none or cannot be read.
std::optional<double> earliest_not_after(const std::string& file);

/// The family above, as of now (files that cannot be read are left out).
std::vector<prometheus::MetricFamily> certificate_metrics();

}  // namespace postern::observability
