#include "eldr/sim/workload.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <numeric>

#include "eldr/rng.h"

namespace eldr::sim {

namespace {

struct Mix {
  std::vector<std::string> labels;
  std::vector<double> shares;
  // Sub-domains: task domains are built from several source datasets each (the ELDR paper:
  // legal 1, code 4, math 4, medical 3); language requests share topics across languages.
  std::vector<int> subdomains;  // per label (task); empty = shared topics (language)
};

// Task: the paper's four domains by prompt count. Language: WildChat-like skew, English +
// Chinese = 75%, top four (EN, ZH, RU, FR) = 87.6% (the ELDR paper, arXiv 2607.00466).
Mix MixFor(const std::string& kind) {
  if (kind == "task") {
    return {{"legal", "code", "math", "medical"}, {3600, 2779, 2744, 2545}, {1, 4, 4, 3}};
  }
  return {{"en", "zh", "ru", "fr", "es", "de", "pt", "ja", "ko", "ar", "it", "tr"},
          {0.55, 0.20, 0.075, 0.051, 0.030, 0.025, 0.020, 0.015, 0.012, 0.009, 0.008, 0.005},
          {}};
}

constexpr int kLanguageTopics = 4;
constexpr double kTopicShares[kLanguageTopics] = {0.4, 0.25, 0.2, 0.15};

// Per-kind defaults of the generative model, chosen so that MeasureWorkload lands in the
// published ranges (docs/calibration.md; tests/sim_test.cc keeps them there).
struct Knobs {
  double popularity, domain, subdomain, request, drift, domain_drift;
};
Knobs Defaults(const std::string& kind) {
  if (kind == "task") return {0.1, 2.0, 1.0, 1.0, 0.45, 0.6};
  return {0.2, 1.2, 1.0, 1.0, 0.45, 0.3};
}

// Distinct experts per MoE layer in one decode step of `members` (indices into `reqs`), each
// on a random one of its token patterns. Shared by the statistics and the cost calibration.
double StepDistinct(const Workload& w, const std::vector<WorkloadRequest>& reqs,
                    const std::vector<int>& members, Rng& rng) {
  const int L = w.geometry.moe_layers;
  std::vector<uint64_t> u(w.words);
  double sum = 0;
  for (int l = 0; l < L; ++l) {
    std::fill(u.begin(), u.end(), 0);
    for (int m : members) {
      const uint64_t* b = w.Bits(reqs[m], static_cast<int>(rng.Uniform(w.token_patterns)), l);
      for (int i = 0; i < w.words; ++i) u[i] |= b[i];
    }
    for (uint64_t x : u) sum += std::popcount(x);
  }
  return sum / L;
}

double Normal(Rng& rng) {
  // Irwin-Hall with four 16-bit uniforms from one draw: mean 0, unit variance, cheap.
  const uint64_t x = rng.Next();
  double s = 0;
  for (int i = 0; i < 4; ++i) s += static_cast<double>((x >> (16 * i)) & 0xFFFF) / 65536.0;
  return (s - 2.0) * std::sqrt(3.0);
}

// Walker alias table over E outcomes.
struct Alias {
  std::vector<float> prob;
  std::vector<int> alias;
  void Build(const std::vector<double>& p) {
    const int n = static_cast<int>(p.size());
    prob.assign(n, 0);
    alias.assign(n, 0);
    std::vector<double> scaled(n);
    std::vector<int> small, large;
    for (int i = 0; i < n; ++i) {
      scaled[i] = p[i] * n;
      (scaled[i] < 1 ? small : large).push_back(i);
    }
    while (!small.empty() && !large.empty()) {
      const int s = small.back(), l = large.back();
      small.pop_back();
      prob[s] = static_cast<float>(scaled[s]);
      alias[s] = l;
      scaled[l] -= 1 - scaled[s];
      if (scaled[l] < 1) {
        large.pop_back();
        small.push_back(l);
      }
    }
    for (int i : small) prob[i] = 1;
    for (int i : large) prob[i] = 1;
  }
  int Draw(Rng& rng) const {
    const uint64_t x = rng.Next();
    const int i = static_cast<int>((x >> 32) * prob.size() >> 32);
    return static_cast<double>(x & 0xFFFFFFFF) / 4294967296.0 < prob[i] ? i : alias[i];
  }
};

// Probability that an expert is among a token's k distinct picks, approximated from the
// per-draw probability p and rescaled so that the k inclusions sum to k.
std::vector<double> Inclusion(const std::vector<double>& p, int k) {
  std::vector<double> q(p.size());
  double s = 0;
  for (size_t i = 0; i < p.size(); ++i) s += q[i] = 1 - std::pow(1 - p[i], k);
  for (double& v : q) v = std::min(1.0, v * k / s);
  return q;
}

void Softmax(const std::vector<double>& logits, std::vector<double>* p) {
  const double m = *std::max_element(logits.begin(), logits.end());
  p->resize(logits.size());
  double s = 0;
  for (size_t i = 0; i < logits.size(); ++i) s += (*p)[i] = std::exp(logits[i] - m);
  for (double& v : *p) v /= s;
}

// Counts of `tokens` tokens from inclusion probabilities q (normal approximation, clamped).
void DrawCounts(const std::vector<double>& q, int tokens, Rng& rng, std::span<uint32_t> out) {
  for (size_t e = 0; e < q.size(); ++e) {
    const double mean = tokens * q[e];
    const double c = std::round(mean + std::sqrt(mean * (1 - q[e])) * Normal(rng));
    out[e] = static_cast<uint32_t>(std::clamp(c, 0.0, static_cast<double>(tokens)));
  }
}

class Generator {
 public:
  Generator(const ModelGeometry& g, const WorkloadOptions& o, const Mix& mix)
      : g_(g), o_(o), rng_(o.seed), words_((g.experts + 63) / 64) {
    const Knobs d = Defaults(o.kind);
    k_ = {o.popularity_sigma >= 0 ? o.popularity_sigma : d.popularity,
          o.domain_boost >= 0 ? o.domain_boost : d.domain,
          o.subdomain_boost >= 0 ? o.subdomain_boost : d.subdomain,
          o.request_boost >= 0 ? o.request_boost : d.request,
          o.drift_sigma >= 0 ? o.drift_sigma : d.drift,
          o.domain_drift >= 0 ? o.domain_drift : d.domain_drift};
    const int L = g.moe_layers, E = g.experts;
    pop_.resize(static_cast<size_t>(L) * E);
    for (auto& v : pop_) v = k_.popularity * Normal(rng_);
    // Each domain prefers a quarter of the experts of every layer.
    domain_pref_.resize(mix.labels.size());
    for (auto& pref : domain_pref_) pref = Subsets(E / 4);
    // Sub-domain preferences: per (label, source) for task, per topic for language.
    const bool topics = mix.subdomains.empty();
    sub_count_.assign(mix.labels.size(), topics ? kLanguageTopics : 1);
    if (!topics) sub_count_ = mix.subdomains;
    if (topics) {
      for (int t = 0; t < kLanguageTopics; ++t) topic_pref_.push_back(Subsets(E / 8));
    } else {
      sub_pref_.resize(mix.labels.size());
      for (size_t d = 0; d < mix.labels.size(); ++d)
        for (int t = 0; t < sub_count_[d]; ++t) sub_pref_[d].push_back(Subsets(E / 8));
    }
    domain_drift_.resize(mix.labels.size());
    for (auto& dd : domain_drift_) {
      dd.resize(static_cast<size_t>(L) * E);
      for (auto& v : dd) v = k_.domain_drift * Normal(rng_);
    }
    double total = std::accumulate(mix.shares.begin(), mix.shares.end(), 0.0);
    double acc = 0;
    for (double s : mix.shares) cum_share_.push_back(acc += s / total);
  }

  // The label mix of the following Make calls (normalised shares); the constructor sets the
  // calibrated mix.
  void SetShares(const std::vector<double>& shares) {
    cum_share_.clear();
    double acc = 0;
    for (double s : shares) cum_share_.push_back(acc += s);
  }

  // `with_decode`: also draw whole-output decode counts (calibration requests only: the fit's
  // rho and the workload statistics use them; the simulator uses the per-token picks).
  WorkloadRequest Make(int id, bool with_decode) {
    const int L = g_.moe_layers, E = g_.experts, K = g_.top_k;
    WorkloadRequest r;
    r.id = id;
    const double u = rng_.UniformDouble();
    r.label = static_cast<int>(std::lower_bound(cum_share_.begin(), cum_share_.end(), u) -
                               cum_share_.begin());
    r.label = std::min<int>(r.label, static_cast<int>(cum_share_.size()) - 1);
    // Sub-domain: uniform over a task domain's sources; topics by their shares.
    int sub;
    if (topic_pref_.empty()) {
      sub = static_cast<int>(rng_.Uniform(sub_count_[r.label]));
    } else {
      double v = rng_.UniformDouble(), acc = 0;
      sub = kLanguageTopics - 1;
      for (int t = 0; t < kLanguageTopics; ++t)
        if (v < (acc += kTopicShares[t])) {
          sub = t;
          break;
        }
    }
    const auto& sub_pref = topic_pref_.empty() ? sub_pref_[r.label][sub] : topic_pref_[sub];
    const double sigma = 0.8, mu = std::log(o_.mean_prompt) - sigma * sigma / 2;
    r.prompt_tokens = std::clamp(static_cast<int>(std::exp(mu + sigma * Normal(rng_))),
                                 o_.min_prompt, o_.max_prompt);
    r.output_tokens = o_.output_tokens;
    r.prefill = ExpertCounts(L, E);
    if (with_decode) r.decode = ExpertCounts(L, E);
    r.bits.assign(static_cast<size_t>(o_.token_patterns) * L * words_, 0);
    const auto own = Subsets(E / 16);
    std::vector<double> logits(E), p;
    Alias alias;
    for (int l = 0; l < L; ++l) {
      for (int e = 0; e < E; ++e) logits[e] = pop_[static_cast<size_t>(l) * E + e];
      for (int e : domain_pref_[r.label][l]) logits[e] += k_.domain;
      for (int e : sub_pref[l]) logits[e] += k_.subdomain;
      for (int e : own[l]) logits[e] += k_.request;
      Softmax(logits, &p);
      DrawCounts(Inclusion(p, K), r.prompt_tokens, rng_,
                 r.prefill.mutable_data().subspan(static_cast<size_t>(l) * E, E));
      const double* dd = domain_drift_[r.label].data() + static_cast<size_t>(l) * E;
      for (int e = 0; e < E; ++e) logits[e] += dd[e] + k_.drift * Normal(rng_);
      Softmax(logits, &p);
      if (with_decode) {
        DrawCounts(Inclusion(p, K), r.output_tokens, rng_,
                   r.decode.mutable_data().subspan(static_cast<size_t>(l) * E, E));
      }
      alias.Build(p);
      for (int t = 0; t < o_.token_patterns; ++t) {
        uint64_t* b = r.bits.data() + (static_cast<size_t>(t) * L + l) * words_;
        int picked = 0;
        for (int tries = 0; picked < K; ++tries) {
          int e = tries < 64 * K ? alias.Draw(rng_) : static_cast<int>(rng_.Uniform(E));
          if (b[e >> 6] & (uint64_t{1} << (e & 63))) continue;
          b[e >> 6] |= uint64_t{1} << (e & 63);
          ++picked;
        }
      }
    }
    return r;
  }

  Rng& rng() { return rng_; }
  int words() const { return words_; }

 private:
  // For every layer, `m` distinct experts chosen uniformly.
  std::vector<std::vector<int>> Subsets(int m) {
    std::vector<std::vector<int>> out(g_.moe_layers);
    std::vector<int> perm(g_.experts);
    for (auto& layer : out) {
      std::iota(perm.begin(), perm.end(), 0);
      for (int i = 0; i < m; ++i) std::swap(perm[i], perm[i + rng_.Uniform(g_.experts - i)]);
      layer.assign(perm.begin(), perm.begin() + std::max(1, m));
    }
    return out;
  }

  const ModelGeometry& g_;
  const WorkloadOptions& o_;
  Rng rng_;
  int words_;
  Knobs k_;
  std::vector<double> pop_;
  std::vector<std::vector<std::vector<int>>> domain_pref_;
  std::vector<std::vector<double>> domain_drift_;
  std::vector<int> sub_count_;
  std::vector<std::vector<std::vector<std::vector<int>>>> sub_pref_;  // [label][source][layer]
  std::vector<std::vector<std::vector<int>>> topic_pref_;             // [topic][layer]
  std::vector<double> cum_share_;
};

}  // namespace

Status WorkloadOptions::Validate() const {
  if (kind != "task" && kind != "language") {
    return InvalidArgument("workload kind must be 'task' or 'language', not '{}'", kind).error();
  }
  if (requests < 1 || calibration < 0) return InvalidArgument("bad request counts").error();
  if (!(rate_qps > 0) || !std::isfinite(rate_qps)) {
    return InvalidArgument("rate must be a positive number of requests per second").error();
  }
  if (output_tokens < 2) return InvalidArgument("output_tokens must be >= 2").error();
  if (token_patterns < 1) return InvalidArgument("token_patterns must be >= 1").error();
  if (min_prompt < 1 || max_prompt < min_prompt || !(mean_prompt > 0)) {
    return InvalidArgument("bad prompt length bounds").error();
  }
  if (!(mix_drift >= 0 && mix_drift <= 1)) {
    return InvalidArgument("mix_drift must be in [0, 1], not {}", mix_drift).error();
  }
  return Status::Ok();
}

Result<Workload> MakeSyntheticWorkload(const ModelGeometry& g, const WorkloadOptions& o) {
  if (Status s = o.Validate(); !s.ok()) return tl::unexpected<Status>(s);
  if (Status s = g.Validate(); !s.ok()) return tl::unexpected<Status>(s);
  const Mix mix = MixFor(o.kind);
  Workload w;
  w.geometry = g;
  w.kind = o.kind;
  w.labels = mix.labels;
  const double total = std::accumulate(mix.shares.begin(), mix.shares.end(), 0.0);
  for (double s : mix.shares) w.label_shares.push_back(s / total);
  w.token_patterns = o.token_patterns;
  Generator gen(g, o, mix);
  w.words = gen.words();
  for (int i = 0; i < o.calibration; ++i) w.calibration.push_back(gen.Make(-1 - i, true));
  double t = 0;
  for (int i = 0; i < o.requests; ++i) {
    // Without drift the generator keeps the cumulative shares it was built with, so that the
    // workload is bit for bit the one from before the option existed.
    if (o.mix_drift > 0) {
      const double progress = o.requests > 1 ? static_cast<double>(i) / (o.requests - 1) : 0;
      gen.SetShares(DriftedShares(w.label_shares, o.mix_drift, progress));
    }
    WorkloadRequest r = gen.Make(i, false);
    t += -std::log(1 - gen.rng().UniformDouble()) / o.rate_qps;  // Poisson arrivals
    r.arrival_us = static_cast<int64_t>(t * 1e6);
    w.requests.push_back(std::move(r));
  }
  return w;
}

Status UseDecodeSignatures(Workload* w) {
  const int L = w->geometry.moe_layers, E = w->geometry.experts;
  for (const auto& r : w->calibration) {
    if (r.decode.empty()) {
      return FailedPrecondition(
                 "decode signatures: calibration request {} has no decode counts (a capture "
                 "recorded without them)",
                 r.id)
          .error();
    }
  }
  for (auto& r : w->calibration) r.prefill = r.decode;
  for (auto& r : w->requests) {
    ExpertCounts c(L, E);
    const int patterns = std::min(w->token_patterns, r.output_tokens);
    for (int t = 0; t < patterns; ++t) {
      for (int l = 0; l < L; ++l) {
        const uint64_t* b = w->Bits(r, t, l);
        for (int e = 0; e < E; ++e) c.at(l, e) += (b[e >> 6] >> (e & 63)) & 1;
      }
    }
    r.prefill = std::move(c);
  }
  return Status::Ok();
}

std::vector<double> DriftedShares(const std::vector<double>& shares, double mix_drift,
                                  double progress) {
  std::vector<double> out = shares;
  const double a = mix_drift * progress;
  if (a == 0 || out.empty()) return out;
  const double first = shares[0] + a * (1 - shares[0]);
  const double scale = shares[0] < 1 ? (1 - first) / (1 - shares[0]) : 0;
  out[0] = first;
  for (size_t i = 1; i < out.size(); ++i) out[i] = shares[i] * scale;
  return out;
}

WorkloadStats MeasureWorkload(const Workload& w, int batch, uint64_t seed) {
  const int L = w.geometry.moe_layers, E = w.geometry.experts;
  // Decode counts exist for calibration requests only.
  const auto& reqs = w.calibration;
  WorkloadStats st;
  st.batch = batch;
  if (reqs.empty()) return st;
  // Prefill -> decode correlation: one point per (domain, layer, expert): the expert's share of
  // its layer's picks during prefill vs during decode, pooled over domains.
  const size_t D = w.labels.size();
  std::vector<double> pre(D * L * E, 0), dec(D * L * E, 0);
  for (const auto& r : reqs) {
    auto p = r.prefill.data(), d = r.decode.data();
    for (size_t i = 0; i < p.size(); ++i) {
      pre[r.label * p.size() + i] += p[i];
      dec[r.label * p.size() + i] += d[i];
    }
  }
  std::vector<double> xs, ys;
  for (size_t dom = 0; dom < D; ++dom) {
    for (int l = 0; l < L; ++l) {
      double sp = 0, sd = 0;
      for (int e = 0; e < E; ++e) {
        sp += pre[(dom * L + l) * E + e];
        sd += dec[(dom * L + l) * E + e];
      }
      if (sp <= 0 || sd <= 0) continue;
      for (int e = 0; e < E; ++e) {
        xs.push_back(pre[(dom * L + l) * E + e] / sp);
        ys.push_back(dec[(dom * L + l) * E + e] / sd);
      }
    }
  }
  {
    const double n = static_cast<double>(xs.size());
    double mx = std::accumulate(xs.begin(), xs.end(), 0.0) / n;
    double my = std::accumulate(ys.begin(), ys.end(), 0.0) / n;
    double sxy = 0, sxx = 0, syy = 0;
    for (size_t i = 0; i < xs.size(); ++i) {
      sxy += (xs[i] - mx) * (ys[i] - my);
      sxx += (xs[i] - mx) * (xs[i] - mx);
      syy += (ys[i] - my) * (ys[i] - my);
    }
    st.prefill_decode_correlation = sxy / std::sqrt(sxx * syy);
  }
  // Distinct experts of one decode step: same-domain vs mixed batches. Batches are drawn without
  // replacement (a request is never in a batch twice, as in serving); a domain with fewer
  // requests than `batch` gives a batch of all of them, compared with a mixed batch of that size.
  Rng rng(seed);
  std::vector<std::vector<int>> by_label(D);
  for (size_t i = 0; i < reqs.size(); ++i) by_label[reqs[i].label].push_back(static_cast<int>(i));
  std::vector<int> everyone(reqs.size());
  std::iota(everyone.begin(), everyone.end(), 0);
  std::vector<int> members;
  // The first n entries of `pool`, after a partial Fisher-Yates shuffle: n distinct requests.
  auto draw = [&](std::vector<int>& pool, size_t n) {
    for (size_t i = 0; i < n; ++i) std::swap(pool[i], pool[i + rng.Uniform(pool.size() - i)]);
    members.assign(pool.begin(), pool.begin() + static_cast<std::ptrdiff_t>(n));
  };
  double same = 0, mixed = 0;
  const int trials = 200;
  for (int t = 0; t < trials; ++t) {
    auto& pool = by_label[reqs[rng.Uniform(reqs.size())].label];  // domain by share
    const size_t n = std::min(static_cast<size_t>(std::max(batch, 1)), pool.size());
    draw(pool, n);
    same += StepDistinct(w, reqs, members, rng);
    draw(everyone, n);
    mixed += StepDistinct(w, reqs, members, rng);
  }
  st.same_domain_reduction = 1 - same / mixed;
  // Hot-expert skew of decode load per layer.
  double ratio = 0;
  for (int l = 0; l < L; ++l) {
    double mx = 0, sum = 0;
    for (int e = 0; e < E; ++e) {
      double load = 0;
      for (const auto& r : reqs) load += r.decode.at(l, e);
      mx = std::max(mx, load);
      sum += load;
    }
    ratio += sum > 0 ? mx / (sum / E) : 0;
  }
  st.hot_expert_ratio = ratio / L;
  return st;
}

}  // namespace eldr::sim

namespace eldr::sim {

double MeanMixedDistinct(const Workload& w, int batch, uint64_t seed, int trials) {
  const auto& reqs = w.calibration.empty() ? w.requests : w.calibration;
  Rng rng(seed);
  double total = 0;
  std::vector<int> members(batch);
  for (int t = 0; t < trials; ++t) {
    for (int& m : members) m = static_cast<int>(rng.Uniform(reqs.size()));
    total += StepDistinct(w, reqs, members, rng);
  }
  return total / trials;
}

}  // namespace eldr::sim
