// Shared helpers for eldr's tests.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "eldr/geometry.h"
#include "eldr/rng.h"
#include "eldr/signature_space.h"

namespace eldr::testing {

// Random valid picks [tokens, L, k] for a geometry: distinct ids per (token, layer), biased to a
// per-layer hot set so that counts are not uniform.
inline std::vector<int32_t> RandomPicks(const ModelGeometry& g, int64_t tokens, Rng& rng) {
  std::vector<int32_t> out;
  out.reserve(static_cast<size_t>(tokens) * g.moe_layers * g.top_k);
  std::vector<int32_t> row(g.top_k);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int l = 0; l < g.moe_layers; ++l) {
      for (int j = 0; j < g.top_k; ++j) {
        for (;;) {
          const int32_t e =
              rng.Uniform(3) == 0
                  ? static_cast<int32_t>(rng.Uniform(g.experts))
                  : static_cast<int32_t>(rng.Uniform(std::max(g.top_k * 2, g.experts / 4)) %
                                         g.experts);
          bool dup = false;
          for (int i = 0; i < j; ++i) dup |= row[i] == e;
          if (!dup) {
            row[j] = e;
            break;
          }
        }
      }
      out.insert(out.end(), row.begin(), row.end());
    }
  }
  return out;
}

template <class T>
std::vector<uint8_t> AsBytes(const std::vector<int32_t>& v) {
  std::vector<uint8_t> out(v.size() * sizeof(T));
  for (size_t i = 0; i < v.size(); ++i) {
    const T x = static_cast<T>(v[i]);
    std::memcpy(out.data() + i * sizeof(T), &x, sizeof(T));
  }
  return out;
}

// One layer of k experts and k centroids, centroid j pointing at expert j (plus a little of every
// expert): a request's counts pick their centroid by their largest expert.
inline std::shared_ptr<const SignatureSpace> OneHotSpace(int k) {
  SignatureSpaceSpec s;
  s.model = "test";
  s.layers = 1;
  s.experts = k;
  s.layer_mask = {0};
  s.idf.assign(k, 1.0f);
  for (int j = 0; j < k; ++j) {
    std::vector<float> c(k, 0.1f);
    c[j] = 1.0f;
    s.centroids.push_back(c);
  }
  return *SignatureSpace::Build(s);
}

}  // namespace eldr::testing
