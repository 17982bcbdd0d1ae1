#pragma once
// What every Prometheus client library exports about its process, which
// prometheus-cpp does not: process_cpu_seconds_total,
// process_resident_memory_bytes, process_virtual_memory_bytes,
// process_open_fds, process_max_fds, process_start_time_seconds,
// process_threads (from /proc/self), and postern_build_info{version}.
// Read at each scrape.

#include <prometheus/metric_family.h>

#include <vector>

namespace postern::observability {

/// The families above, as of now. Linux only; a file that cannot be read
/// leaves its family out.
std::vector<prometheus::MetricFamily> process_metrics();

}  // namespace postern::observability
