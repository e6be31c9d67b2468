// -----------------------------------------------------------------------------
// File: server/metrics.h
// -----------------------------------------------------------------------------
// Prometheus text exposition (format 0.0.4) for the proxy's own counters: fixed-bucket
// histograms and helpers that write counter/gauge samples. Nothing in Debian 12 provides this.
//
// Thread-safety: Histogram::Observe and Render may run concurrently from any thread (atomics;
// a render may see an observation in the count but not yet in the sum).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace eldr::server {

class Histogram {
 public:
  // `bounds`: strictly increasing finite upper bounds; +Inf is implicit.
  explicit Histogram(std::vector<double> bounds);
  void Observe(double v);
  uint64_t Count() const { return count_.load(std::memory_order_relaxed); }
  double Sum() const { return sum_.load(std::memory_order_relaxed); }
  // Appends name_bucket{labels,le=...}, name_sum and name_count lines. `labels` is either empty
  // or a comma-separated list like `worker="x"`.
  void Render(std::string* out, std::string_view name, std::string_view labels) const;
  // Value below which a fraction q of observations fall, by linear interpolation inside the
  // bucket (an estimate, as Prometheus' histogram_quantile).
  double Quantile(double q) const;

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // bounds_.size() + 1
  std::atomic<uint64_t> count_{0};
  std::atomic<double> sum_{0};
};

// "# HELP name help\n# TYPE name type\n"
void MetricHeader(std::string* out, std::string_view name, std::string_view type,
                  std::string_view help);
// name{labels} value
void MetricSample(std::string* out, std::string_view name, std::string_view labels, double value);
// Escapes a label value (backslash, quote, newline).
std::string LabelValue(std::string_view v);

// The standard process_* families of the Prometheus client libraries, read from /proc/self:
// process_cpu_seconds_total, process_resident_memory_bytes, process_virtual_memory_bytes,
// process_open_fds, process_max_fds, process_start_time_seconds (`start_unix_s`), and
// process_threads. A family whose /proc file cannot be read is left out.
void RenderProcessMetrics(std::string* out, double start_unix_s);

// eldr's version, as eldr_build_info reports it.
inline constexpr std::string_view kEldrVersion = "0.2.0";

}  // namespace eldr::server
