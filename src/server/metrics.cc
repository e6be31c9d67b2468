#include "eldr/server/metrics.h"

#include <fmt/format.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

namespace eldr::server {

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), buckets_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0);
}

void Histogram::Observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

void Histogram::Render(std::string* out, std::string_view name, std::string_view labels) const {
  const std::string sep = labels.empty() ? "" : ",";
  uint64_t cum = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cum += buckets_[i].load(std::memory_order_relaxed);
    const std::string le = i < bounds_.size() ? fmt::format("{}", bounds_[i]) : "+Inf";
    fmt::format_to(std::back_inserter(*out), "{}_bucket{{{}{}le=\"{}\"}} {}\n", name, labels, sep,
                   le, cum);
  }
  const std::string l = labels.empty() ? "" : fmt::format("{{{}}}", labels);
  fmt::format_to(std::back_inserter(*out), "{}_sum{} {}\n{}_count{} {}\n", name, l, Sum(), name, l,
                 cum);
}

double Histogram::Quantile(double q) const {
  std::vector<uint64_t> c(bounds_.size() + 1);
  uint64_t total = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) total += c[i] = buckets_[i].load();
  if (total == 0) return NAN;
  const double rank = q * static_cast<double>(total);
  uint64_t cum = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    if (static_cast<double>(cum + c[i]) >= rank && c[i] > 0) {
      if (i == bounds_.size()) return bounds_.empty() ? NAN : bounds_.back();
      const double lo = i == 0 ? 0 : bounds_[i - 1];
      return lo + (bounds_[i] - lo) * (rank - static_cast<double>(cum)) / static_cast<double>(c[i]);
    }
    cum += c[i];
  }
  return bounds_.empty() ? NAN : bounds_.back();
}

void MetricHeader(std::string* out, std::string_view name, std::string_view type,
                  std::string_view help) {
  fmt::format_to(std::back_inserter(*out), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

void MetricSample(std::string* out, std::string_view name, std::string_view labels, double value) {
  if (labels.empty()) {
    fmt::format_to(std::back_inserter(*out), "{} {}\n", name, value);
  } else {
    fmt::format_to(std::back_inserter(*out), "{}{{{}}} {}\n", name, labels, value);
  }
}

std::string LabelValue(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out.push_back('\\');
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out.push_back(c);
  }
  return out;
}

}  // namespace eldr::server

namespace eldr::server {

void RenderProcessMetrics(std::string* out, double start_unix_s) {
  // /proc/self/stat: the command name may hold spaces, so fields are counted after its ')'.
  std::FILE* f = std::fopen("/proc/self/stat", "r");
  if (f != nullptr) {
    char buf[4096];
    const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    buf[n] = '\0';
    const char* p = std::strrchr(buf, ')');
    std::vector<double> fields;  // fields[0] is field 3 (state) of proc(5)
    if (p != nullptr) {
      for (const char* q = p + 2; *q != '\0';) {
        char* end = nullptr;
        const double v = std::strtod(q, &end);
        fields.push_back(end == q ? 0 : v);
        q = end == q ? q + 1 : end;
        while (*q == ' ') ++q;
      }
    }
    const long tick = sysconf(_SC_CLK_TCK);
    const long page = sysconf(_SC_PAGESIZE);
    if (fields.size() > 21 && tick > 0 && page > 0) {
      MetricHeader(out, "process_cpu_seconds_total", "counter",
                   "User and system CPU time spent, in seconds");
      MetricSample(out, "process_cpu_seconds_total", "",
                   (fields[11] + fields[12]) / static_cast<double>(tick));
      MetricHeader(out, "process_threads", "gauge", "Threads of the process");
      MetricSample(out, "process_threads", "", fields[17]);
      MetricHeader(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes");
      MetricSample(out, "process_virtual_memory_bytes", "", fields[20]);
      MetricHeader(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes");
      MetricSample(out, "process_resident_memory_bytes", "", fields[21] * page);
    }
  }
  std::error_code ec;
  size_t fds = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++fds;
  }
  if (!ec) {
    MetricHeader(out, "process_open_fds", "gauge", "Open file descriptors");
    MetricSample(out, "process_open_fds", "", static_cast<double>(fds));
  }
  if (rlimit rl{}; getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    MetricHeader(out, "process_max_fds", "gauge", "Maximum open file descriptors");
    MetricSample(out, "process_max_fds", "", static_cast<double>(rl.rlim_cur));
  }
  MetricHeader(out, "process_start_time_seconds", "gauge",
               "Start time of the process since the Unix epoch, in seconds");
  MetricSample(out, "process_start_time_seconds", "", start_unix_s);
}

}  // namespace eldr::server
