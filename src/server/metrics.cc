#include "eldr/server/metrics.h"

#include <fmt/format.h>

#include <cmath>

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
