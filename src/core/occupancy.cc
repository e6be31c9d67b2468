#include "eldr/occupancy.h"

#include <algorithm>

namespace eldr {

namespace {
// A request that picks an expert on nearly every token would make the idle product exactly 0 and
// Remove a division by zero; the clamp keeps it invertible.
constexpr float kMaxActivation = 0.95f;
}  // namespace

ExpertOccupancy::ExpertOccupancy(int decoders, int layers, int experts, int top_k)
    : decoders_(decoders),
      layers_(layers),
      experts_(experts),
      top_k_(top_k),
      idle_(static_cast<size_t>(decoders) * layers * experts, 1.0) {}

bool ExpertOccupancy::Activation(const ExpertCounts& counts, std::vector<float>* p) const {
  if (counts.layers() != layers_ || counts.experts() != experts_) return false;
  p->assign(static_cast<size_t>(layers_) * experts_, 0.0f);
  bool any = false;
  for (int l = 0; l < layers_; ++l) {
    const auto c = counts.layer(l);
    uint64_t sum = 0;
    for (uint32_t v : c) sum += v;
    if (sum == 0) continue;
    any = true;
    const float scale = static_cast<float>(top_k_) / static_cast<float>(sum);
    float* out = p->data() + static_cast<size_t>(l) * experts_;
    for (int e = 0; e < experts_; ++e) out[e] = std::min(kMaxActivation, c[e] * scale);
  }
  return any;
}

void ExpertOccupancy::Add(int decoder, std::span<const float> p) {
  double* q = idle_.data() + static_cast<size_t>(decoder) * p.size();
  for (size_t i = 0; i < p.size(); ++i) q[i] *= 1.0 - p[i];
}

void ExpertOccupancy::Remove(int decoder, std::span<const float> p) {
  double* q = idle_.data() + static_cast<size_t>(decoder) * p.size();
  for (size_t i = 0; i < p.size(); ++i) q[i] = std::min(1.0, q[i] / (1.0 - p[i]));
}

double ExpertOccupancy::Added(int decoder, std::span<const float> p) const {
  const double* q = idle_.data() + static_cast<size_t>(decoder) * p.size();
  double s = 0;
  for (size_t i = 0; i < p.size(); ++i) s += p[i] * q[i];
  return s;
}

double ExpertOccupancy::ExpectedDistinct(int decoder) const {
  const size_t n = static_cast<size_t>(layers_) * experts_;
  const double* q = idle_.data() + static_cast<size_t>(decoder) * n;
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += 1.0 - q[i];
  return s;
}

}  // namespace eldr
