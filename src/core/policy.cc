#include "eldr/policy.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <limits>
#include <map>

namespace eldr {

namespace {

constexpr std::array<std::string_view, 7> kNames = {"rr",     "random", "jsq",      "p2c",
                                                    "domain", "eldr",   "eldr-plus"};

bool Avail(const ClusterView& v, int i) { return v.available.empty() || v.available[i] != 0; }

Status CheckView(const ClusterView& v, int decoders) {
  if (v.in_flight.size() != static_cast<size_t>(decoders)) {
    return InvalidArgument("cluster view has {} decoders, policy was built for {}",
                           v.in_flight.size(), decoders)
        .error();
  }
  if (!v.available.empty() && v.available.size() != v.in_flight.size()) {
    return InvalidArgument("availability mask has {} entries for {} decoders", v.available.size(),
                           v.in_flight.size())
        .error();
  }
  return Status::Ok();
}

// JSQ over [begin, end) with uniform random tie-break (reservoir sampling over the minima, so
// one pass and no allocation). Returns -1 when no decoder in range is available.
int JsqRandomTie(const ClusterView& v, int begin, int end, Rng& rng) {
  int best = -1, ties = 0;
  int64_t best_load = std::numeric_limits<int64_t>::max();
  for (int i = begin; i < end; ++i) {
    if (!Avail(v, i)) continue;
    const int64_t l = v.in_flight[i];
    if (l < best_load) {
      best_load = l;
      best = i;
      ties = 1;
    } else if (l == best_load && rng.Uniform(++ties) == 0) {
      best = i;
    }
  }
  return best;
}

Result<RouteDecision> Done(int decoder, bool fallback = false) {
  if (decoder < 0) return Unavailable("no decoder is available");
  RouteDecision d;
  d.decoder = decoder;
  d.fallback = fallback;
  return d;
}

// Scores of a request against every centroid: from its embedded signature when it has one of the
// space's size, else from its counts. False when neither is usable (the caller falls back).
bool ScoreRequest(const SignatureSpace& space, const RouteRequest& req,
                  std::vector<float>& scores) {
  if (req.signature.size() == static_cast<size_t>(space.dims())) {
    space.ScoreSignature(req.signature, scores);
    return true;
  }
  return req.counts != nullptr && space.Score(*req.counts, scores).ok();
}

// The decoder of the band {i : eligible(i) and scores[i] >= threshold} with the fewest in-flight
// requests; ties go to the lowest index, or with `prefer_score` to the better score.
template <class Eligible>
RouteDecision PickInBand(const ClusterView& v, std::span<const float> scores, float threshold,
                         float best, Eligible eligible, bool prefer_score) {
  RouteDecision d;
  d.best_score = best;
  for (int i = 0; i < static_cast<int>(scores.size()); ++i) {
    if (!eligible(i) || scores[i] < threshold) continue;
    ++d.band_size;
    const int p = d.decoder;
    if (p < 0 || v.in_flight[i] < v.in_flight[p] ||
        (prefer_score && v.in_flight[i] == v.in_flight[p] && scores[i] > scores[p])) {
      d.decoder = i;
    }
  }
  return d;
}

class RoundRobin final : public RoutingPolicy {
 public:
  explicit RoundRobin(int n) : RoutingPolicy(n), n_(n) {}
  std::string_view Name() const override { return "rr"; }
  Result<RouteDecision> Choose(const RouteRequest&, const ClusterView& v, Rng&) override {
    for (int tries = 0; tries < n_; ++tries) {
      const int i = next_;
      next_ = (next_ + 1) % n_;
      if (Avail(v, i)) return Done(i);
    }
    return Done(-1);
  }

 private:
  int n_;
  int next_ = 0;
};

class RandomPolicy final : public RoutingPolicy {
 public:
  explicit RandomPolicy(int n) : RoutingPolicy(n), n_(n) {}
  std::string_view Name() const override { return "random"; }
  Result<RouteDecision> Choose(const RouteRequest&, const ClusterView& v, Rng& rng) override {
    if (v.available.empty()) return Done(static_cast<int>(rng.Uniform(n_)));
    // Uniform over available decoders: reservoir sample of size one.
    int pick = -1, seen = 0;
    for (int i = 0; i < n_; ++i)
      if (Avail(v, i) && rng.Uniform(++seen) == 0) pick = i;
    return Done(pick);
  }

 private:
  int n_;
};

class Jsq final : public RoutingPolicy {
 public:
  explicit Jsq(int n) : RoutingPolicy(n), n_(n) {}
  std::string_view Name() const override { return "jsq"; }
  Result<RouteDecision> Choose(const RouteRequest&, const ClusterView& v, Rng& rng) override {
    return Done(JsqRandomTie(v, 0, n_, rng));
  }

 private:
  int n_;
};

class P2c final : public RoutingPolicy {
 public:
  explicit P2c(int n) : RoutingPolicy(n), n_(n) {}
  std::string_view Name() const override { return "p2c"; }
  Result<RouteDecision> Choose(const RouteRequest&, const ClusterView& v, Rng& rng) override {
    if (n_ == 1) return Done(Avail(v, 0) ? 0 : -1);
    if (!v.available.empty()) {
      // With unavailable decoders, sample among the available ones.
      int avail = 0;
      for (int i = 0; i < n_; ++i) avail += Avail(v, i);
      if (avail == 0) return Done(-1);
      auto nth = [&](int k) {
        for (int i = 0; i < n_; ++i)
          if (Avail(v, i) && k-- == 0) return i;
        return -1;
      };
      if (avail == 1) return Done(nth(0));
      const int a = static_cast<int>(rng.Uniform(avail));
      int b = static_cast<int>(rng.Uniform(avail - 1));
      if (b >= a) ++b;
      const int ia = nth(a), ib = nth(b);
      return Done(v.in_flight[ib] < v.in_flight[ia] ? ib : ia);
    }
    const int a = static_cast<int>(rng.Uniform(n_));
    int b = static_cast<int>(rng.Uniform(n_ - 1));
    if (b >= a) ++b;
    return Done(v.in_flight[b] < v.in_flight[a] ? b : a);
  }

 private:
  int n_;
};

class DomainPolicy final : public RoutingPolicy {
 public:
  DomainPolicy(int n, DomainPools pools) : RoutingPolicy(n), n_(n), pools_(std::move(pools)) {
    for (size_t i = 0; i < pools_.labels.size(); ++i) {
      if (pools_.labels[i].empty()) {
        misc_ = static_cast<int>(i);
      } else {
        index_.emplace(pools_.labels[i], static_cast<int>(i));
      }
    }
  }
  std::string_view Name() const override { return "domain"; }
  Result<RouteDecision> Choose(const RouteRequest& req, const ClusterView& v, Rng& rng) override {
    int pool = -1;
    if (!req.label.empty()) {
      auto it = index_.find(req.label);
      pool = it != index_.end() ? it->second : misc_;
    }
    if (pool >= 0) {
      auto [b, e] = pools_.ranges[pool];
      const int d = JsqRandomTie(v, b, e, rng);
      if (d >= 0) return Done(d);
    }
    return Done(JsqRandomTie(v, 0, n_, rng), /*fallback=*/true);
  }

 private:
  int n_;
  DomainPools pools_;
  std::map<std::string, int, std::less<>> index_;
  int misc_ = -1;
};

class EldrPolicy final : public RoutingPolicy {
 public:
  EldrPolicy(int n, double tau, int band_min, std::shared_ptr<const SignatureSpace> space)
      : RoutingPolicy(n),
        n_(n),
        tau_(static_cast<float>(tau)),
        band_min_(band_min),
        space_(std::move(space)),
        scores_(n) {
    avail_scores_.reserve(n);
  }
  std::string_view Name() const override { return "eldr"; }

  Result<RouteDecision> Choose(const RouteRequest& req, const ClusterView& v, Rng& rng) override {
    if (!ScoreRequest(*space_, req, scores_)) {
      return Done(JsqRandomTie(v, 0, n_, rng), /*fallback=*/true);
    }
    // Band around the best *available* centroid: an unavailable decoder must not pull the band's
    // threshold up and leave it empty.
    float best = -std::numeric_limits<float>::infinity();
    for (int i = 0; i < n_; ++i)
      if (Avail(v, i)) best = std::max(best, scores_[i]);
    if (best == -std::numeric_limits<float>::infinity()) return Done(-1);
    float threshold = best - tau_;
    if (band_min_ > 1) {
      // Widen a narrow band to the band_min best available scores.
      avail_scores_.clear();
      for (int i = 0; i < n_; ++i) {
        if (Avail(v, i)) avail_scores_.push_back(scores_[i]);
      }
      const size_t m = std::min(avail_scores_.size(), static_cast<size_t>(band_min_));
      std::nth_element(avail_scores_.begin(), avail_scores_.begin() + (m - 1), avail_scores_.end(),
                       std::greater<float>());
      threshold = std::min(threshold, avail_scores_[m - 1]);
    }
    return PickInBand(
        v, scores_, threshold, best, [&](int i) { return Avail(v, i); }, /*prefer_score=*/false);
  }

 private:
  int n_;
  float tau_;
  int band_min_;
  std::shared_ptr<const SignatureSpace> space_;
  std::vector<float> scores_;
  std::vector<float> avail_scores_;  // band_min > 1: scratch
};

class EldrPlusPolicy final : public RoutingPolicy {
 public:
  EldrPlusPolicy(int n, PolicyOptions::Plus o, std::shared_ptr<const SignatureSpace> space)
      : RoutingPolicy(n),
        n_(n),
        tau_(static_cast<float>(o.tau)),
        slack_(o.slack),
        sqrt_slack_(o.sqrt_slack),
        relative_(o.relative_band),
        space_(std::move(space)),
        scores_(n) {}
  std::string_view Name() const override { return "eldr-plus"; }

  Result<RouteDecision> Choose(const RouteRequest& req, const ClusterView& v, Rng& rng) override {
    if (!ScoreRequest(*space_, req, scores_)) {
      return Done(JsqRandomTie(v, 0, n_, rng), /*fallback=*/true);
    }
    int64_t total = 0;
    int avail = 0;
    for (int i = 0; i < n_; ++i) {
      if (!Avail(v, i)) continue;
      total += std::max<int64_t>(0, v.in_flight[i]);
      ++avail;
    }
    if (avail == 0) return Done(-1);
    // Bounded loads: with this request placed, no decoder may hold more than the capacity. The
    // least loaded decoder always fits, so the eligible set is never empty.
    const double mean = static_cast<double>(total + 1) / static_cast<double>(avail);
    const double room =
        sqrt_slack_ > 0 ? std::min(slack_ * mean, sqrt_slack_ * std::sqrt(mean)) : slack_ * mean;
    const double capacity = std::ceil(mean + room);
    auto eligible = [&](int i) {
      return Avail(v, i) && static_cast<double>(v.in_flight[i]) + 1 <= capacity;
    };
    float best = -std::numeric_limits<float>::infinity();
    float worst = std::numeric_limits<float>::infinity();
    for (int i = 0; i < n_; ++i) {
      if (!eligible(i)) continue;
      best = std::max(best, scores_[i]);
      worst = std::min(worst, scores_[i]);
    }
    if (best == -std::numeric_limits<float>::infinity()) {
      return Done(JsqRandomTie(v, 0, n_, rng), /*fallback=*/true);
    }
    const float threshold = best - (relative_ ? tau_ * (best - worst) : tau_);
    return PickInBand(v, scores_, threshold, best, eligible, /*prefer_score=*/true);
  }

 private:
  int n_;
  float tau_;
  double slack_;
  double sqrt_slack_;
  bool relative_;
  std::shared_ptr<const SignatureSpace> space_;
  std::vector<float> scores_;
};

}  // namespace

Result<RouteDecision> RoutingPolicy::Route(const RouteRequest& req, const ClusterView& view,
                                           Rng& rng) {
  ELDR_RETURN_IF_ERROR(CheckView(view, decoders_));
  ELDR_ASSIGN_OR_RETURN(RouteDecision d, Choose(req, view, rng));
  if (d.decoder < 0 || d.decoder >= decoders_) {
    return Internal("policy {} chose decoder {} of {} (a policy bug)", Name(), d.decoder,
                    decoders_);
  }
  if (!Avail(view, d.decoder)) {
    return Internal("policy {} chose unavailable decoder {} (a policy bug)", Name(), d.decoder);
  }
  return d;
}

std::span<const std::string_view> PolicyNames() { return kNames; }

std::span<const std::string_view> LoadBalancingPolicyNames() {
  return std::span<const std::string_view>(kNames).first(4);  // rr, random, jsq, p2c
}

bool IsLoadBalancingPolicy(std::string_view name) {
  const auto lb = LoadBalancingPolicyNames();
  return std::find(lb.begin(), lb.end(), name) != lb.end();
}

Status PolicyOptions::Validate() const {
  if (std::find(kNames.begin(), kNames.end(), name) == kNames.end()) {
    return InvalidArgument("unknown policy '{}' (rr, random, jsq, p2c, domain, eldr, eldr-plus)",
                           name)
        .error();
  }
  if (decoders <= 0) return InvalidArgument("policy needs at least one decoder").error();
  if (name == "eldr") {
    if (!(tau >= 0 && tau <= 2)) {  // cosines lie in [-1, 1]: a band of 2 holds every decoder
      return InvalidArgument("tau must be in [0, 2] (got {})", tau).error();
    }
    if (band_min < 1) {
      return InvalidArgument("band_min must be >= 1 (got {})", band_min).error();
    }
  }
  if (name == "eldr-plus") {
    if (!(plus.tau >= 0 && plus.tau <= 2)) {
      return InvalidArgument("eldr-plus tau must be in [0, 2] (got {})", plus.tau).error();
    }
    if (!std::isfinite(plus.sqrt_slack) || plus.sqrt_slack < 0) {
      return InvalidArgument("eldr-plus sqrt_slack must be finite and >= 0 (got {})",
                             plus.sqrt_slack)
          .error();
    }
    if (!std::isfinite(plus.slack) || plus.slack < 0) {
      return InvalidArgument("eldr-plus slack must be finite and >= 0 (got {})", plus.slack)
          .error();
    }
  }
  if (name == "eldr" || name == "eldr-plus") {
    if (!space) return InvalidArgument("policy '{}' needs a signature space", name).error();
    if (space->k() != decoders) {
      return FailedPrecondition(
                 "signature space has {} centroids but there are {} decoders: refit with "
                 "K = {} (one centroid per decoder)",
                 space->k(), decoders, decoders)
          .error();
    }
  }
  if (name == "domain" && label_shares.empty()) {
    return InvalidArgument("policy 'domain' needs the calibration label mix").error();
  }
  return Status::Ok();
}

Result<DomainPools> ComputeDomainPools(std::span<const LabelShare> shares, int decoders) {
  if (decoders <= 0) return InvalidArgument("domain pools need decoders");
  double total = 0;
  for (const auto& s : shares) {
    if (!std::isfinite(s.share) || s.share < 0) return InvalidArgument("bad label share");
    if (s.label.empty()) return InvalidArgument("empty label in the label mix");
    total += s.share;
  }
  if (!(total > 0)) return InvalidArgument("label mix has no mass");
  // Big labels by share (descending, then name) and a misc pool for the rest.
  std::vector<LabelShare> big;
  double misc = 0;
  for (const auto& s : shares) {
    const double f = s.share / total;
    if (f >= 1.0 / decoders) {
      big.push_back({s.label, f});
    } else {
      misc += f;
    }
  }
  std::sort(big.begin(), big.end(), [](const LabelShare& a, const LabelShare& b) {
    return a.share != b.share ? a.share > b.share : a.label < b.label;
  });
  DomainPools p;
  std::vector<int> size;
  std::vector<double> frac;
  for (const auto& b : big) {
    p.labels.push_back(b.label);
    size.push_back(static_cast<int>(std::floor(decoders * b.share)));
    frac.push_back(decoders * b.share - size.back());
  }
  if (misc > 0) {
    p.labels.push_back("");
    size.push_back(std::max(1, static_cast<int>(std::floor(decoders * misc))));
    frac.push_back(decoders * misc - std::floor(decoders * misc));
  }
  int used = 0;
  for (int s : size) used += s;
  // Leftover decoders by largest fractional part (ties to the earlier pool).
  while (used < decoders) {
    size_t best = 0;
    for (size_t i = 1; i < frac.size(); ++i)
      if (frac[i] > frac[best]) best = i;
    ++size[best];
    frac[best] = -1;
    ++used;
  }
  // A forced misc decoder can overshoot by one: take it from the largest pool.
  while (used > decoders) {
    size_t big_i = 0;
    for (size_t i = 1; i < size.size(); ++i)
      if (size[i] > size[big_i]) big_i = i;
    --size[big_i];
    --used;
  }
  int begin = 0;
  for (int s : size) {
    p.ranges.emplace_back(begin, begin + s);
    begin += s;
  }
  return p;
}

Result<std::unique_ptr<RoutingPolicy>> MakePolicy(const PolicyOptions& o) {
  if (Status s = o.Validate(); !s.ok()) return tl::unexpected<Status>(s);
  std::unique_ptr<RoutingPolicy> p;
  if (o.name == "rr") p = std::make_unique<RoundRobin>(o.decoders);
  if (o.name == "random") p = std::make_unique<RandomPolicy>(o.decoders);
  if (o.name == "jsq") p = std::make_unique<Jsq>(o.decoders);
  if (o.name == "p2c") p = std::make_unique<P2c>(o.decoders);
  if (o.name == "eldr") p = std::make_unique<EldrPolicy>(o.decoders, o.tau, o.band_min, o.space);
  if (o.name == "eldr-plus") p = std::make_unique<EldrPlusPolicy>(o.decoders, o.plus, o.space);
  if (o.name == "domain") {
    ELDR_ASSIGN_OR_RETURN(DomainPools pools, ComputeDomainPools(o.label_shares, o.decoders));
    p = std::make_unique<DomainPolicy>(o.decoders, std::move(pools));
  }
  return p;
}

}  // namespace eldr
