#include "eldr/server/shadow.h"

#include <algorithm>
#include <cmath>

namespace eldr::server {

ShadowFootprint ShadowFootprint::FromCounts(const ExpertCounts& c, int top_k, double q_max) {
  ShadowFootprint f;
  const int E = c.experts();
  for (int l = 0; l < c.layers(); ++l) {
    const auto row = c.layer(l);
    double total = 0;
    for (uint32_t x : row) total += x;
    if (total <= 0) continue;
    for (int e = 0; e < E; ++e) {
      if (row[e] == 0) continue;
      const double q = std::min(q_max, top_k * row[e] / total);
      f.index.push_back(static_cast<uint32_t>(l * E + e));
      f.log1m_q.push_back(std::log1p(-q));
    }
  }
  return f;
}

ExpertLoad::ExpertLoad(int layers, int experts)
    : layers_(layers), sum_(static_cast<size_t>(layers) * experts, 0.0) {}

void ExpertLoad::Add(const ShadowFootprint& f) {
  MutexLock lock(&mu_);
  for (size_t i = 0; i < f.index.size(); ++i) sum_[f.index[i]] += f.log1m_q[i];
  ++n_;
}

void ExpertLoad::Remove(const ShadowFootprint& f) {
  MutexLock lock(&mu_);
  if (--n_ <= 0) {
    // Exact zeros again, so rounding never accumulates over a long run.
    n_ = 0;
    std::fill(sum_.begin(), sum_.end(), 0.0);
    return;
  }
  for (size_t i = 0; i < f.index.size(); ++i) sum_[f.index[i]] -= f.log1m_q[i];
}

double ExpertLoad::ExpectedDistinct() const {
  MutexLock lock(&mu_);
  if (n_ == 0 || layers_ == 0) return 0;
  double d = 0;
  for (double s : sum_) d += s < 0 ? 1 - std::exp(s) : 0;
  return d / layers_;
}

int64_t ExpertLoad::requests() const {
  MutexLock lock(&mu_);
  return n_;
}

}  // namespace eldr::server
