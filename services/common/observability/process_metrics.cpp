#include "common/observability/process_metrics.hpp"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "common/version.hpp"

namespace postern::observability {
namespace {

prometheus::MetricFamily gauge(const char* name, const char* help, double value,
                               prometheus::MetricType type = prometheus::MetricType::Gauge) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  prometheus::ClientMetric m;
  if (type == prometheus::MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  f.metric.push_back(std::move(m));
  return f;
}

double boot_time_seconds() {
  std::ifstream in("/proc/stat");
  std::string key;
  double value = 0;
  while (in >> key) {
    if (key == "btime") {
      in >> value;
      return value;
    }
    in.ignore(1 << 16, '\n');
  }
  return 0;
}

int open_fds() {
  DIR* d = opendir("/proc/self/fd");
  if (!d) return -1;
  int n = 0;
  while (const dirent* e = readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(d);
  return n - 1;  // the directory's own descriptor
}

}  // namespace

std::vector<prometheus::MetricFamily> process_metrics() {
  std::vector<prometheus::MetricFamily> out;
  // /proc/self/stat: fields after the command name (which may hold spaces).
  std::ifstream stat("/proc/self/stat");
  std::string line;
  if (std::getline(stat, line)) {
    const auto close = line.rfind(')');
    if (close != std::string::npos) {
      std::istringstream rest(line.substr(close + 2));
      std::string f[64];
      int n = 0;
      while (n < 64 && rest >> f[n]) ++n;
      // Field k of proc(5) is f[k - 3]: utime 14, stime 15, num_threads 20,
      // starttime 22, vsize 23, rss 24.
      if (n >= 22) {
        const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
        const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
        out.push_back(gauge("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
                            (std::stod(f[11]) + std::stod(f[12])) / tick, prometheus::MetricType::Counter));
        out.push_back(gauge("process_threads", "Number of OS threads in the process.", std::stod(f[17])));
        out.push_back(gauge("process_start_time_seconds",
                            "Start time of the process since unix epoch in seconds.",
                            boot_time_seconds() + std::stod(f[19]) / tick));
        out.push_back(gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.", std::stod(f[20])));
        out.push_back(gauge("process_resident_memory_bytes", "Resident memory size in bytes.",
                            std::stod(f[21]) * page));
      }
    }
  }
  if (const int fds = open_fds(); fds >= 0) {
    out.push_back(gauge("process_open_fds", "Number of open file descriptors.", fds));
  }
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0) {
    out.push_back(gauge("process_max_fds", "Maximum number of open file descriptors.",
                        static_cast<double>(lim.rlim_cur)));
  }
  auto info = gauge("postern_build_info", "The running build: always 1, its version as a label.", 1);
  info.metric[0].label.push_back({"version", std::string(version())});
  out.push_back(std::move(info));
  return out;
}

}  // namespace postern::observability
