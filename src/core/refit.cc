#include "eldr/refit.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <string_view>

namespace eldr {

Status RefitOptions::Validate() const {
  if (min_requests < 2) return InvalidArgument("refit: min_requests must be >= 2");
  if (max_iters < 1) return InvalidArgument("refit: max_iters must be >= 1");
  if (!(max_score_loss >= 0) || !std::isfinite(max_score_loss)) {
    return InvalidArgument("refit: max_score_loss must be finite and >= 0");
  }
  if (!(max_centroid_cosine > 0 && max_centroid_cosine <= 1)) {
    return InvalidArgument("refit: max_centroid_cosine must be in (0, 1]");
  }
  return Status::Ok();
}

namespace {

// Mean best cosine of the rows of x under centroids `c` (k x d), and each row's best index.
double MeanBest(std::span<const float> x, int n, int d, std::span<const float> c, int k,
                std::vector<int>* best) {
  best->assign(n, 0);
  double sum = 0;
  for (int i = 0; i < n; ++i) {
    const float* xi = x.data() + static_cast<size_t>(i) * d;
    double top = -2;
    for (int j = 0; j < k; ++j) {
      const float* cj = c.data() + static_cast<size_t>(j) * d;
      double dot = 0;
      for (int t = 0; t < d; ++t) dot += static_cast<double>(xi[t]) * cj[t];
      if (dot > top) {
        top = dot;
        (*best)[i] = j;
      }
    }
    sum += top;
  }
  return n > 0 ? sum / n : 0;
}

// Mean cosine of the rows to their centroid under the assignment `algo` makes (capacitated with
// cap = ceil(n/k) when balanced, nearest otherwise).
Result<double> BalancedObjective(std::span<const float> x, int n, int d, std::span<const float> c,
                                 int k, ClusterAlgo algo) {
  std::vector<double> cost(static_cast<size_t>(n) * k);
  for (int i = 0; i < n; ++i) {
    const float* xi = x.data() + static_cast<size_t>(i) * d;
    for (int j = 0; j < k; ++j) {
      const float* cj = c.data() + static_cast<size_t>(j) * d;
      double dot = 0;
      for (int t = 0; t < d; ++t) dot += static_cast<double>(xi[t]) * cj[t];
      cost[static_cast<size_t>(i) * k + j] = -dot;
    }
  }
  std::vector<int> a(n);
  if (algo == ClusterAlgo::kBalanced) {
    ELDR_ASSIGN_OR_RETURN(a, CapacitatedAssign(cost, n, k, (n + k - 1) / k));
  } else {
    for (int i = 0; i < n; ++i) {
      const double* ci = &cost[static_cast<size_t>(i) * k];
      a[i] = static_cast<int>(std::min_element(ci, ci + k) - ci);
    }
  }
  double sum = 0;
  for (int i = 0; i < n; ++i) sum -= cost[static_cast<size_t>(i) * k + a[i]];
  return sum / n;
}

}  // namespace

Result<RefitResult> Refit(const SignatureSpace& current, std::span<const ExpertCounts> window,
                          const RefitOptions& o) {
  ELDR_RETURN_IF_ERROR(o.Validate());
  const SignatureSpaceSpec& spec = current.spec();
  const int k = current.k(), d = current.dims();
  RefitReport rep;
  std::vector<float> x;
  x.reserve(window.size() * static_cast<size_t>(d));
  std::vector<float> sig(d);
  for (const auto& c : window) {
    if (c.layers() != spec.layers || c.experts() != spec.experts) {
      return InvalidArgument("refit: counts shaped [{}][{}], the space is for [{}][{}]", c.layers(),
                             c.experts(), spec.layers, spec.experts);
    }
    if (!current.Embed(c, sig).ok()) {
      ++rep.skipped;
      continue;
    }
    x.insert(x.end(), sig.begin(), sig.end());
    ++rep.n;
  }
  if (rep.n < std::max(o.min_requests, k)) {
    return FailedPrecondition("refit: {} usable signatures in the window, need {}", rep.n,
                              std::max(o.min_requests, k));
  }
  std::vector<float> old_c(static_cast<size_t>(k) * d);
  for (int j = 0; j < k; ++j) {
    std::copy(spec.centroids[j].begin(), spec.centroids[j].end(),
              old_c.begin() + static_cast<ptrdiff_t>(j) * d);
  }
  ELDR_ASSIGN_OR_RETURN(Clustering cl,
                        SphericalKMeans(x, rep.n, d, k, o.algo, spec.seed, o.max_iters, old_c));
  rep.iterations = cl.iterations;
  for (float v : cl.centroids) {
    if (!std::isfinite(v)) return FailedPrecondition("refit: non-finite centroid");
  }
  // Exact matching of new clusters to decoders: cost -cos(old_i, new_j), each decoder one cluster.
  std::vector<double> cost(static_cast<size_t>(k) * k);
  for (int i = 0; i < k; ++i) {
    for (int j = 0; j < k; ++j) {
      double dot = 0;
      for (int t = 0; t < d; ++t) {
        dot += static_cast<double>(old_c[static_cast<size_t>(i) * d + t]) *
               cl.centroids[static_cast<size_t>(j) * d + t];
      }
      cost[static_cast<size_t>(i) * k + j] = -dot;
    }
  }
  ELDR_ASSIGN_OR_RETURN(std::vector<int> cluster_of_decoder, CapacitatedAssign(cost, k, k, 1));
  rep.decoder_of_cluster.assign(k, -1);
  SignatureSpaceSpec next = spec;
  std::vector<float> new_c(static_cast<size_t>(k) * d);
  double movement = 0;
  for (int i = 0; i < k; ++i) {
    const int j = cluster_of_decoder[i];
    rep.decoder_of_cluster[j] = i;
    const float* src = cl.centroids.data() + static_cast<size_t>(j) * d;
    next.centroids[i].assign(src, src + d);
    std::copy(src, src + d, new_c.begin() + static_cast<ptrdiff_t>(i) * d);
    movement += 1 + cost[static_cast<size_t>(i) * k + j];
  }
  rep.centroid_movement = movement / k;
  std::vector<int> best_old, best_new;
  rep.old_score = MeanBest(x, rep.n, d, old_c, k, &best_old);
  rep.new_score = MeanBest(x, rep.n, d, new_c, k, &best_new);
  int changed = 0;
  for (int i = 0; i < rep.n; ++i) changed += best_old[i] != best_new[i];
  rep.churn = static_cast<double>(changed) / rep.n;
  // A window dominated by one repeated prompt (a load test, a retry storm) makes balanced
  // k-means deal identical signatures to several clusters, whose centroids then coincide: the
  // decoders behind them lose the regions they had, and nothing in later traffic tells them
  // apart again. A rebalance of a grown domain gives close centroids too, but of different
  // requests, never equal ones.
  auto dot = [d](const float* a, const float* b) {
    double s = 0;
    for (int t = 0; t < d; ++t) s += static_cast<double>(a[t]) * b[t];
    return s;
  };
  for (int i = 0; i < k; ++i) {
    for (int j = i + 1; j < k; ++j) {
      const size_t oi = static_cast<size_t>(i) * d, oj = static_cast<size_t>(j) * d;
      if (dot(&new_c[oi], &new_c[oj]) >= o.max_centroid_cosine &&
          dot(&old_c[oi], &old_c[oj]) < o.max_centroid_cosine) {
        std::set<std::string_view> distinct;
        for (int r = 0; r < rep.n; ++r) {
          distinct.emplace(reinterpret_cast<const char*>(x.data() + static_cast<size_t>(r) * d),
                           sizeof(float) * d);
        }
        return FailedPrecondition(
            "refit: degenerate (decoders {} and {} would get the same centroid; the window's {} "
            "signatures hold {} distinct ones: a repeated prompt dominates it)",
            i, j, rep.n, distinct.size());
      }
    }
  }
  ELDR_ASSIGN_OR_RETURN(rep.old_balanced, BalancedObjective(x, rep.n, d, old_c, k, o.algo));
  ELDR_ASSIGN_OR_RETURN(rep.new_balanced, BalancedObjective(x, rep.n, d, new_c, k, o.algo));
  if (rep.new_balanced < rep.old_balanced - o.max_score_loss) {
    return FailedPrecondition(
        "refit: degenerate (balanced objective {:.4f} on the window, {:.4f} with the current "
        "space)",
        rep.new_balanced, rep.old_balanced);
  }
  next.n_fit = rep.n;
  ELDR_ASSIGN_OR_RETURN(auto space, SignatureSpace::Build(std::move(next)));
  return RefitResult{std::move(space), std::move(rep)};
}

}  // namespace eldr
