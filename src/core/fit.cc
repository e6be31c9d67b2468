#include "eldr/fit.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <queue>

#include "eldr/rng.h"
#include "eldr/sha256.h"
#include "simd.h"

namespace eldr {

namespace internal {

namespace {
// Independent lanes hide the FMA latency: 32 lanes = four AVX registers (16 lanes ran 1.8x
// slower, 64 spilled registers); AVX-512 prefers 64 (docs/perf.md).
template <int kLanes>
ELDR_INLINE_BODY float DotBody(const float* a, const float* b, int d) {
  float acc[kLanes] = {0};
  int j = 0;
  for (; j + kLanes <= d; j += kLanes)
    for (int t = 0; t < kLanes; ++t) acc[t] += a[j + t] * b[j + t];
  float s = 0;
  for (int t = 0; t < kLanes; ++t) s += acc[t];
  for (; j < d; ++j) s += a[j] * b[j];
  return s;
}
ELDR_TARGET_AVX512 float DotAvx512(const float* a, const float* b, int d) {
  return DotBody<64>(a, b, d);
}
ELDR_TARGET_AVX2 float DotAvx2(const float* a, const float* b, int d) {
  return DotBody<32>(a, b, d);
}
float DotBase(const float* a, const float* b, int d) { return DotBody<32>(a, b, d); }
}  // namespace

float Dot(const float* a, const float* b, int d) {
#if ELDR_X86_DISPATCH
  switch (CpuIsa()) {
    case Isa::kAvx512:
      return DotAvx512(a, b, d);
    case Isa::kAvx2:
      return DotAvx2(a, b, d);
    case Isa::kBase:
      break;
  }
#endif
  return DotBase(a, b, d);
}

}  // namespace internal

namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

float Transformed(SignatureTransform t, uint32_t c) {
  if (t == SignatureTransform::kBinary) return c > 0 ? 1.0f : 0.0f;
  return static_cast<float>(c);
}

// Average ranks (1-based) of v; ties share the mean of their positions.
std::vector<double> Ranks(std::span<const double> v) {
  const size_t n = v.size();
  std::vector<uint32_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0u);
  std::sort(idx.begin(), idx.end(), [&](uint32_t a, uint32_t b) { return v[a] < v[b]; });
  std::vector<double> r(n);
  for (size_t i = 0; i < n;) {
    size_t j = i + 1;
    while (j < n && v[idx[j]] == v[idx[i]]) ++j;
    const double avg = (static_cast<double>(i) + static_cast<double>(j - 1)) / 2.0 + 1.0;
    for (size_t t = i; t < j; ++t) r[idx[t]] = avg;
    i = j;
  }
  return r;
}

// Average ranks like Ranks(), ranking the values rounded to float, by LSD radix sort on the
// order-preserving integer image of each float (4 passes of 8 bits). The greedy mask ranks
// 30,000 candidate distances once per (step, layer): O(n) here instead of O(n log n) made the
// 48-layer mask ~10x faster (docs/perf.md).
std::vector<double> RanksFast(std::span<const double> v, std::vector<uint64_t>& a,
                              std::vector<uint64_t>& b) {
  const size_t n = v.size();
  a.resize(n);
  b.resize(n);
  for (size_t i = 0; i < n; ++i) {
    float f = static_cast<float>(v[i]);
    if (f == 0.0f) f = 0.0f;  // -0 and +0 rank as equal
    uint32_t u;
    std::memcpy(&u, &f, 4);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    a[i] = (static_cast<uint64_t>(u) << 32) | i;
  }
  for (int shift = 32; shift < 64; shift += 8) {
    size_t count[257] = {0};
    for (size_t i = 0; i < n; ++i) ++count[((a[i] >> shift) & 0xFF) + 1];
    for (int c = 0; c < 256; ++c) count[c + 1] += count[c];
    for (size_t i = 0; i < n; ++i) b[count[(a[i] >> shift) & 0xFF]++] = a[i];
    a.swap(b);
  }
  std::vector<double> r(n);
  for (size_t i = 0; i < n;) {
    size_t j = i + 1;
    while (j < n && (a[j] >> 32) == (a[i] >> 32)) ++j;
    const double avg = (static_cast<double>(i) + static_cast<double>(j - 1)) / 2.0 + 1.0;
    for (size_t t = i; t < j; ++t) r[a[t] & 0xFFFFFFFFu] = avg;
    i = j;
  }
  return r;
}

double Pearson(std::span<const double> a, std::span<const double> b) {
  const size_t n = a.size();
  if (n < 2) return std::numeric_limits<double>::quiet_NaN();
  double ma = 0, mb = 0;
  for (size_t i = 0; i < n; ++i) {
    ma += a[i];
    mb += b[i];
  }
  ma /= n;
  mb /= n;
  double sab = 0, saa = 0, sbb = 0;
  for (size_t i = 0; i < n; ++i) {
    const double x = a[i] - ma, y = b[i] - mb;
    sab += x * y;
    saa += x * x;
    sbb += y * y;
  }
  if (saa <= 0 || sbb <= 0) return std::numeric_limits<double>::quiet_NaN();
  return sab / std::sqrt(saa * sbb);
}

}  // namespace

std::vector<float> ComputeIdf(std::span<const CalibrationRequest> reqs) {
  if (reqs.empty()) return {};
  const size_t m = reqs[0].prefill.data().size();
  std::vector<uint32_t> df(m, 0);
  for (const auto& r : reqs) {
    auto c = r.prefill.data();
    for (size_t i = 0; i < m && i < c.size(); ++i) df[i] += c[i] > 0;
  }
  std::vector<float> idf(m);
  const double n1 = static_cast<double>(reqs.size()) + 1.0;
  for (size_t i = 0; i < m; ++i) idf[i] = static_cast<float>(std::log(n1 / (df[i] + 1.0)));
  return idf;
}

double Spearman(std::span<const double> a, std::span<const double> b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::quiet_NaN();
  auto ra = Ranks(a), rb = Ranks(b);
  return Pearson(ra, rb);
}

// ---- exact capacitated assignment -------------------------------------------------------------
//
// Min-cost flow source -> point (cap 1) -> cluster (cost c[p][k]) -> sink (cap `cap`), solved by
// successive shortest paths, inserting points one at a time. Points are never graph nodes: the
// residual edge a -> b between clusters costs min over points p in a of c[p][b] - c[p][a], kept
// in a lazy min-heap per ordered pair, so each Dijkstra runs over K+1 nodes. Node potentials keep
// reduced costs non-negative. Inserting a new source into a min-cost flow and augmenting along a
// shortest path keeps it min-cost (the new node has no incoming residual edge, so it closes no
// negative cycle), hence the final assignment is optimal, as the Hungarian reference test checks.
Result<std::vector<int>> CapacitatedAssign(std::span<const double> cost, int n, int k, int cap) {
  if (n < 0 || k <= 0 || cap < 0) return InvalidArgument("assign: bad sizes");
  if (cost.size() != static_cast<size_t>(n) * k) {
    return InvalidArgument("assign: cost has {} entries, n*k = {}", cost.size(),
                           static_cast<size_t>(n) * k);
  }
  if (static_cast<int64_t>(cap) * k < n) {
    return InvalidArgument("assign: {} clusters of capacity {} cannot hold {} points", k, cap, n);
  }
  using Item = std::pair<double, int>;
  using Heap = std::priority_queue<Item, std::vector<Item>, std::greater<Item>>;
  std::vector<int> assign(n, -1), size(k, 0);
  std::vector<double> pi(k + 1, 0.0);  // node k is the sink
  std::vector<Heap> heaps(static_cast<size_t>(k) * k);
  auto push_point = [&](int p, int a) {
    const double* cp = &cost[static_cast<size_t>(p) * k];
    for (int b = 0; b < k; ++b)
      if (b != a) heaps[static_cast<size_t>(a) * k + b].push({cp[b] - cp[a], p});
  };
  auto top = [&](int a, int b) -> const Item* {
    Heap& h = heaps[static_cast<size_t>(a) * k + b];
    while (!h.empty() && assign[h.top().second] != a) h.pop();
    return h.empty() ? nullptr : &h.top();
  };
  constexpr double kInf = std::numeric_limits<double>::infinity();
  std::vector<double> dist(k + 1);
  std::vector<int> prev(k + 1), via(k + 1);
  std::vector<char> done(k + 1);
  for (int i = 0; i < n; ++i) {
    const double* ci = &cost[static_cast<size_t>(i) * k];
    double shift = -kInf;
    for (int c = 0; c < k; ++c) shift = std::max(shift, pi[c] - ci[c]);
    for (int c = 0; c < k; ++c) {
      dist[c] = ci[c] - pi[c] + shift;
      prev[c] = -1;
      done[c] = 0;
    }
    dist[k] = kInf;
    prev[k] = -1;
    done[k] = 0;
    for (;;) {
      int u = -1;
      for (int v = 0; v <= k; ++v)
        if (!done[v] && (u < 0 || dist[v] < dist[u])) u = v;
      if (u < 0 || u == k || dist[u] == kInf) break;
      done[u] = 1;
      if (size[u] < cap) {
        const double nd = dist[u] + std::max(0.0, pi[u] - pi[k]);
        if (nd < dist[k]) {
          dist[k] = nd;
          prev[k] = u;
        }
      }
      if (size[u] == 0) continue;
      for (int b = 0; b < k; ++b) {
        if (b == u || done[b]) continue;
        const Item* it = top(u, b);
        if (it == nullptr) continue;
        // Rounding can leave a reduced cost at -1e-16; clamping keeps Dijkstra's invariant.
        const double nd = dist[u] + std::max(0.0, it->first + pi[u] - pi[b]);
        if (nd < dist[b]) {
          dist[b] = nd;
          prev[b] = u;
          via[b] = it->second;
        }
      }
    }
    if (prev[k] < 0) return Internal("assign: no augmenting path (capacity accounting broken)");
    const double dt = dist[k];
    for (int v = 0; v <= k; ++v) pi[v] += std::min(dist[v], dt);
    // Walk back from the spare cluster, moving each edge's point one cluster along the path.
    // Intermediate clusters lose one point and gain one; only the spare cluster grows.
    int v = prev[k];
    ++size[v];
    while (prev[v] >= 0) {
      const int p = via[v];
      assign[p] = v;
      push_point(p, v);
      v = prev[v];
    }
    assign[i] = v;
    push_point(i, v);
  }
  return assign;
}

// ---- spherical k-means -----------------------------------------------------------------------

Result<Clustering> SphericalKMeans(std::span<const float> x, int n, int d, int k, ClusterAlgo algo,
                                   uint64_t seed, int max_iters, std::span<const float> init) {
  if (k < 1 || n < k) return InvalidArgument("k-means: need 1 <= k <= n (k = {}, n = {})", k, n);
  if (d < 1 || x.size() != static_cast<size_t>(n) * d) {
    return InvalidArgument("k-means: data has {} values, n*d = {}", x.size(),
                           static_cast<size_t>(n) * d);
  }
  Rng rng(seed);
  Clustering out;
  out.centroids.assign(static_cast<size_t>(k) * d, 0.0f);
  auto row = [&](int i) { return x.data() + static_cast<size_t>(i) * d; };
  auto cen = [&](int j) { return out.centroids.data() + static_cast<size_t>(j) * d; };
  if (!init.empty() && init.size() != static_cast<size_t>(k) * d) {
    return InvalidArgument("k-means: initial centroids have {} values, k*d = {}", init.size(),
                           static_cast<size_t>(k) * d);
  }
  if (!init.empty()) {
    std::copy(init.begin(), init.end(), out.centroids.begin());
  } else {
    // k-means++ with squared Euclidean D^2 sampling on unit vectors (|x - c|^2 = 2 - 2 x.c).
    std::vector<double> d2(n, std::numeric_limits<double>::infinity());
    int pick = static_cast<int>(rng.Uniform(n));
    for (int j = 0; j < k; ++j) {
      std::copy(row(pick), row(pick) + d, cen(j));
      double total = 0;
      for (int i = 0; i < n; ++i) {
        const double dd = std::max(0.0, 2.0 - 2.0 * internal::Dot(row(i), cen(j), d));
        d2[i] = std::min(d2[i], dd);
        total += d2[i];
      }
      if (j + 1 == k) break;
      if (total <= 0) {
        pick = static_cast<int>(rng.Uniform(n));
      } else {
        double r = rng.UniformDouble() * total;
        pick = n - 1;
        for (int i = 0; i < n; ++i) {
          r -= d2[i];
          if (r < 0) {
            pick = i;
            break;
          }
        }
      }
    }
  }
  const int cap = (n + k - 1) / k;
  std::vector<double> cost(static_cast<size_t>(n) * k);
  std::vector<double> sums(static_cast<size_t>(k) * d);
  std::vector<int> counts(k);
  out.assignment.assign(n, -1);
  for (int iter = 0; iter < std::max(1, max_iters); ++iter) {
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < k; ++j)
        cost[static_cast<size_t>(i) * k + j] = -double{internal::Dot(row(i), cen(j), d)};
    if (algo == ClusterAlgo::kBalanced) {
      ELDR_ASSIGN_OR_RETURN(out.assignment, CapacitatedAssign(cost, n, k, cap));
    } else {
      for (int i = 0; i < n; ++i) {
        const double* ci = &cost[static_cast<size_t>(i) * k];
        out.assignment[i] = static_cast<int>(std::min_element(ci, ci + k) - ci);
      }
    }
    std::fill(sums.begin(), sums.end(), 0.0);
    std::fill(counts.begin(), counts.end(), 0);
    for (int i = 0; i < n; ++i) {
      const int j = out.assignment[i];
      ++counts[j];
      double* s = &sums[static_cast<size_t>(j) * d];
      const float* xi = row(i);
      for (int t = 0; t < d; ++t) s[t] += xi[t];
    }
    bool close = true;
    for (int j = 0; j < k; ++j) {
      if (counts[j] == 0) continue;  // an empty cluster keeps its centroid
      const double* s = &sums[static_cast<size_t>(j) * d];
      double n2 = 0;
      for (int t = 0; t < d; ++t) n2 += s[t] * s[t];
      if (n2 <= 0) continue;
      const double inv = 1.0 / std::sqrt(n2);
      float* c = cen(j);
      for (int t = 0; t < d; ++t) {
        const float nv = static_cast<float>(s[t] * inv);
        if (std::fabs(nv - c[t]) > 1e-8 + 1e-5 * std::fabs(c[t])) close = false;
        c[t] = nv;
      }
    }
    out.iterations = iter + 1;
    if (close) {
      out.converged = true;
      break;
    }
  }
  return out;
}

// ---- Fit -------------------------------------------------------------------------------------

Status FitOptions::Validate() const {
  if (k < 1) return InvalidArgument("fit: k must be >= 1").error();
  if (rho_pairs < 10) return InvalidArgument("fit: rho_pairs must be >= 10").error();
  if (max_iters < 1) return InvalidArgument("fit: max_iters must be >= 1").error();
  if (!training_sha256.empty() && !IsSha256Hex(training_sha256)) {
    return InvalidArgument("fit: training_sha256 must be 64 lowercase hex digits").error();
  }
  return Status::Ok();
}

namespace {

// Greedy layer selection. Per-layer dot products of transformed, IDF-weighted prefill counts are
// computed once per pair; a candidate subset's cosine is then a sum over its layers.
void GreedyMask(std::span<const CalibrationRequest> reqs, std::span<const float> weight,
                const FitOptions& o, int L, int E, FitReport* rep) {
  std::vector<int> with_decode;
  for (size_t i = 0; i < reqs.size(); ++i)
    if (!reqs[i].decode.empty() && reqs[i].decode.Total() > 0) with_decode.push_back(i);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  rep->peak_rho = rep->all_layers_rho = nan;
  if (!o.fixed_mask.empty()) {
    rep->layer_mask = o.fixed_mask;
    return;
  }
  if (!o.greedy_mask || with_decode.size() < 2) {
    for (int l = 0; l < L; ++l) rep->layer_mask.push_back(l);
    return;
  }
  Rng rng(o.seed);
  std::vector<std::pair<int, int>> pairs;
  pairs.reserve(o.rho_pairs);
  for (int p = 0; p < o.rho_pairs; ++p) {
    const int i = with_decode[rng.Uniform(with_decode.size())];
    const int j = with_decode[rng.Uniform(with_decode.size())];
    if (i != j) pairs.emplace_back(i, j);  // drop self-pairs, as the artifact does
  }
  const size_t P = pairs.size();
  // Target: cosine distance of L2-normalised decode activation vectors.
  std::vector<double> dnorm(reqs.size(), 0.0);
  for (int i : with_decode) {
    double s = 0;
    for (uint32_t c : reqs[i].decode.data()) s += static_cast<double>(c) * c;
    dnorm[i] = std::sqrt(s);
  }
  std::vector<double> target(P);
  for (size_t p = 0; p < P; ++p) {
    auto a = reqs[pairs[p].first].decode.data(), b = reqs[pairs[p].second].decode.data();
    double dot = 0;
    for (size_t t = 0; t < a.size(); ++t) dot += static_cast<double>(a[t]) * b[t];
    target[p] = 1.0 - dot / (dnorm[pairs[p].first] * dnorm[pairs[p].second]);
  }
  const std::vector<double> target_ranks = Ranks(target);
  // Per layer: pair dots G[l][p] and request squared norms N[l][i].
  std::vector<double> G(static_cast<size_t>(L) * P), Nn(static_cast<size_t>(L) * reqs.size());
  std::vector<float> xi(E), xj(E);
  auto fill = [&](const ExpertCounts& c, int l, std::vector<float>& out) {
    auto cl = c.layer(l);
    for (int e = 0; e < E; ++e)
      out[e] = Transformed(o.transform, cl[e]) * weight[static_cast<size_t>(l) * E + e];
  };
  for (int l = 0; l < L; ++l) {
    for (int i : with_decode) {
      fill(reqs[i].prefill, l, xi);
      Nn[static_cast<size_t>(l) * reqs.size() + i] = internal::Dot(xi.data(), xi.data(), E);
    }
    for (size_t p = 0; p < P; ++p) {
      fill(reqs[pairs[p].first].prefill, l, xi);
      fill(reqs[pairs[p].second].prefill, l, xj);
      G[static_cast<size_t>(l) * P + p] = internal::Dot(xi.data(), xj.data(), E);
    }
  }
  std::vector<double> dot_sum(P, 0.0), norm_sum(reqs.size(), 0.0), cand(P);
  std::vector<uint64_t> scratch_a, scratch_b;
  std::vector<char> used(L, 0);
  for (int step = 0; step < L; ++step) {
    double best_rho = -2;
    int best_l = -1;
    for (int l = 0; l < L; ++l) {
      if (used[l]) continue;
      const double* g = &G[static_cast<size_t>(l) * P];
      const double* nl = &Nn[static_cast<size_t>(l) * reqs.size()];
      for (size_t p = 0; p < P; ++p) {
        const auto [i, j] = pairs[p];
        const double den = std::sqrt((norm_sum[i] + nl[i]) * (norm_sum[j] + nl[j]));
        cand[p] = den > 0 ? 1.0 - (dot_sum[p] + g[p]) / den : 1.0;
      }
      double rho = Pearson(RanksFast(cand, scratch_a, scratch_b), target_ranks);
      if (std::isnan(rho)) rho = -1;
      if (rho > best_rho) {
        best_rho = rho;
        best_l = l;
      }
    }
    used[best_l] = 1;
    const double* g = &G[static_cast<size_t>(best_l) * P];
    const double* nl = &Nn[static_cast<size_t>(best_l) * reqs.size()];
    for (size_t p = 0; p < P; ++p) dot_sum[p] += g[p];
    for (size_t i = 0; i < reqs.size(); ++i) norm_sum[i] += nl[i];
    rep->greedy_order.push_back(best_l);
    rep->rho_path.push_back(best_rho);
    if (o.progress) o.progress("layer mask", static_cast<double>(step + 1) / L);
  }
  const size_t peak =
      std::max_element(rep->rho_path.begin(), rep->rho_path.end()) - rep->rho_path.begin();
  rep->peak_rho = rep->rho_path[peak];
  rep->all_layers_rho = rep->rho_path.back();
  rep->layer_mask.assign(rep->greedy_order.begin(), rep->greedy_order.begin() + peak + 1);
  std::sort(rep->layer_mask.begin(), rep->layer_mask.end());
}

}  // namespace

Result<FitResult> Fit(std::span<const CalibrationRequest> reqs, const ModelGeometry& g,
                      const FitOptions& o) {
  if (Status s = o.Validate(); !s.ok()) return tl::unexpected<Status>(s);
  if (Status s = g.Validate(); !s.ok()) return tl::unexpected<Status>(s);
  const int L = g.moe_layers, E = g.experts;
  for (size_t i = 0; i < o.fixed_mask.size(); ++i) {
    const int l = o.fixed_mask[i];
    if (l < 0 || l >= L || (i > 0 && l <= o.fixed_mask[i - 1])) {
      return InvalidArgument(
          "fit: the fixed layer mask must be sorted, unique layers in [0, {}) ({} has {} MoE "
          "layers); entry {} is {}",
          L, g.display_name, L, i, l);
    }
  }
  for (size_t i = 0; i < reqs.size(); ++i) {
    const auto& r = reqs[i];
    if (r.prefill.layers() != L || r.prefill.experts() != E) {
      return InvalidArgument("request {} ('{}'): prefill counts are {}x{}, {} needs {}x{}", i, r.id,
                             r.prefill.layers(), r.prefill.experts(), g.display_name, L, E);
    }
    if (!r.decode.empty() && (r.decode.layers() != L || r.decode.experts() != E)) {
      return InvalidArgument("request {} ('{}'): decode counts are {}x{}, {} needs {}x{}", i, r.id,
                             r.decode.layers(), r.decode.experts(), g.display_name, L, E);
    }
  }
  if (static_cast<int>(reqs.size()) < o.k) {
    return InvalidArgument("fit: {} calibration requests cannot fill k = {} clusters", reqs.size(),
                           o.k);
  }
  FitResult res;
  FitReport& rep = res.report;
  std::vector<float> idf = ComputeIdf(reqs);
  std::vector<float> weight =
      o.transform == SignatureTransform::kCountIdf ? idf : std::vector<float>(idf.size(), 1.0f);
  auto t0 = Clock::now();
  GreedyMask(reqs, weight, o, L, E, &rep);
  rep.seconds_mask = Since(t0);

  const int d = static_cast<int>(rep.layer_mask.size()) * E;
  std::vector<float> x;
  x.reserve(reqs.size() * d);
  std::vector<float> sig(d);
  int zero_weight = 0;  // requests with picks, but only of experts whose weight is 0
  for (const auto& r : reqs) {
    double n2 = 0;
    for (size_t m = 0; m < rep.layer_mask.size(); ++m) {
      auto cl = r.prefill.layer(rep.layer_mask[m]);
      for (int e = 0; e < E; ++e) {
        const size_t w = static_cast<size_t>(rep.layer_mask[m]) * E + e;
        sig[m * E + e] = Transformed(o.transform, cl[e]) * weight[w];
        n2 += double{sig[m * E + e]} * sig[m * E + e];
      }
    }
    if (!(n2 > 0)) {
      ++rep.skipped;
      bool picked = false;
      for (size_t m = 0; m < rep.layer_mask.size() && !picked; ++m) {
        for (float c : r.prefill.layer(rep.layer_mask[m])) picked = picked || c > 0;
      }
      zero_weight += picked;
      continue;
    }
    const float inv = static_cast<float>(1.0 / std::sqrt(n2));
    for (float v : sig) x.push_back(v * inv);
  }
  rep.n = static_cast<int>(x.size() / d);
  if (rep.n < o.k) {
    if (zero_weight > 0) {
      // IDF is log(N / df): an expert every request picks weighs 0, so traffic of one repeated
      // prompt leaves nothing to cluster on.
      return InvalidArgument(
          "fit: only {} requests have expert picks on the masked layers; k = {}. {} requests "
          "picked only experts that every request picks, whose IDF weight is 0 (are the "
          "calibration prompts all alike?): use varied traffic, or --transform count",
          rep.n, o.k, zero_weight);
    }
    return InvalidArgument("fit: only {} requests have expert picks on the masked layers; k = {}",
                           rep.n, o.k);
  }
  t0 = Clock::now();
  if (o.progress) o.progress("clustering", 0.0);
  ELDR_ASSIGN_OR_RETURN(Clustering cl,
                        SphericalKMeans(x, rep.n, d, o.k, o.algo, o.seed, o.max_iters));
  rep.seconds_cluster = Since(t0);
  if (o.progress) o.progress("clustering", 1.0);
  rep.iterations = cl.iterations;
  rep.converged = cl.converged;
  rep.cluster_sizes.assign(o.k, 0);
  double obj = 0;
  for (int i = 0; i < rep.n; ++i) {
    const int j = cl.assignment[i];
    ++rep.cluster_sizes[j];
    obj +=
        internal::Dot(&x[static_cast<size_t>(i) * d], &cl.centroids[static_cast<size_t>(j) * d], d);
  }
  rep.objective = obj / rep.n;

  SignatureSpaceSpec spec;
  spec.model = g.name;
  spec.layers = L;
  spec.experts = E;
  spec.layer_mask = rep.layer_mask;
  spec.transform = o.transform;
  if (o.transform == SignatureTransform::kCountIdf) {
    for (int l : rep.layer_mask)
      spec.idf.insert(spec.idf.end(), idf.begin() + static_cast<size_t>(l) * E,
                      idf.begin() + static_cast<size_t>(l + 1) * E);
  }
  for (int j = 0; j < o.k; ++j)
    spec.centroids.emplace_back(cl.centroids.begin() + static_cast<size_t>(j) * d,
                                cl.centroids.begin() + static_cast<size_t>(j + 1) * d);
  spec.algo = o.algo == ClusterAlgo::kBalanced ? "kmbal" : "km";
  spec.n_fit = rep.n;
  spec.seed = o.seed;
  spec.fit_peak_rho = rep.peak_rho;
  spec.training_sha256 = o.training_sha256;
  ELDR_ASSIGN_OR_RETURN(res.space, SignatureSpace::Build(std::move(spec)));
  return res;
}

}  // namespace eldr
