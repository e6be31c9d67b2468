#include "eldr/sim/simulator.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <deque>
#include <numeric>

#include "eldr/rng.h"

namespace eldr::sim {

Status ClusterOptions::Validate() const {
  if (prefill_workers < 1 || decode_workers < 1) {
    return InvalidArgument("need at least one prefill and one decode worker").error();
  }
  if (max_batch < 1) return InvalidArgument("max_batch must be >= 1").error();
  if (kv_capacity_tokens < 1) return InvalidArgument("kv_capacity_tokens must be >= 1").error();
  if (!(prefill_load_bound >= 1) || !std::isfinite(prefill_load_bound)) {
    return InvalidArgument("prefill_load_bound must be >= 1").error();
  }
  return Status::Ok();
}

Status SimRefitOptions::Validate() const {
  if (interval_us < 1 || window_us < 1) {
    return InvalidArgument("refit: interval and window must be >= 1 us").error();
  }
  ELDR_RETURN_IF_ERROR(fit.Validate());
  if (max_window < fit.min_requests) {
    return InvalidArgument("refit: max_window {} is below min_requests {}: every refit would fail",
                           max_window, fit.min_requests)
        .error();
  }
  return Status::Ok();
}

namespace {

uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

class Cluster {
 public:
  Cluster(const Workload& w, const SimOptions& o, PolicyOptions po,
          std::unique_ptr<RoutingPolicy> policy, EventQueue& q)
      : w_(w),
        o_(o),
        c_(o.cluster),
        po_(std::move(po)),
        policy_(std::move(policy)),
        q_(q),
        rng_(o.seed),
        req_(o.max_requests > 0 ? std::min<size_t>(w.requests.size(), o.max_requests)
                                : w.requests.size()),
        prefill_(c_.prefill_workers),
        decoder_(c_.decode_workers),
        in_flight_(c_.decode_workers, 0),
        distinct_(w.geometry.moe_layers),
        scratch_(w.words) {
    if (o.ep_ranks > 1 && o.placement.empty())
      contiguous_ = ContiguousPlacement(w.geometry, o.ep_ranks);
    refit_ =
        o.refit.enabled && po_.space != nullptr && (po_.name == "eldr" || po_.name == "eldr-plus");
    next_refit_us_ = o.refit.interval_us;
  }

  Result<SimResult> Run() {
    for (size_t id = 0; id < req_.size(); ++id) {
      q_.Push({Arrival(static_cast<int>(id)), EventKind::kArrival, static_cast<int>(id)});
    }
    while (auto e = q_.Pop()) {
      // Refits due by this event run first, each at its own scheduled time.
      while (refit_ && e->time_us >= next_refit_us_ && routed_ < req_.size()) {
        now_ = next_refit_us_;
        ELDR_RETURN_IF_ERROR(RefitNow());
        next_refit_us_ += o_.refit.interval_us;
      }
      now_ = e->time_us;
      Status s;
      switch (e->kind) {
        case EventKind::kArrival:
          OnArrival(e->key);
          break;
        case EventKind::kPrefillDone:
          s = OnPrefillDone(e->key);
          break;
        case EventKind::kKvArrived:
          OnKvArrived(e->key);
          break;
        case EventKind::kStepDone:
          OnStepDone(e->key);
          break;
      }
      if (!s.ok()) return tl::unexpected<Status>(s);
    }
    return Finish();
  }

 private:
  struct Req {
    int decoder = -1;
    int generated = 0;  // tokens emitted so far (the first comes from prefill)
    int64_t first_token_us = -1, finish_us = -1;
    double distinct_sum = 0;  // over the decode steps this request was batched in
    int steps = 0;
  };
  struct PrefillWorker {
    std::deque<int> queue;
    int current = -1;
    int Load() const { return static_cast<int>(queue.size()) + (current >= 0); }
  };
  struct Decoder {
    std::vector<int> batch;
    std::deque<int> waiting;
    bool busy = false;
    int64_t kv_used = 0;
    int64_t served = 0;
  };

  const WorkloadRequest& R(int id) const { return w_.requests[id]; }
  int64_t Arrival(int id) const {
    return o_.time_scale == 1.0
               ? R(id).arrival_us
               : std::llround(static_cast<double>(R(id).arrival_us) * o_.time_scale);
  }

  void OnArrival(int id) {
    // Prefix-hash choice bounded by load (the ELDR paper); synthetic prompts share no prefix, so
    // the hash is of the request.
    const int P = c_.prefill_workers;
    int p = static_cast<int>(Mix64(static_cast<uint64_t>(id)) % P);
    int total = 0;
    for (const auto& pw : prefill_) total += pw.Load();
    if (prefill_[p].Load() > (total + 1.0) / P * c_.prefill_load_bound) {
      p = 0;
      for (int i = 1; i < P; ++i)
        if (prefill_[i].Load() < prefill_[p].Load()) p = i;
    }
    PrefillWorker& pw = prefill_[p];
    pw.queue.push_back(id);
    if (pw.current < 0) StartPrefill(p);
  }

  void StartPrefill(int p) {
    PrefillWorker& pw = prefill_[p];
    pw.current = pw.queue.front();
    pw.queue.pop_front();
    q_.Push(
        {now_ + Us(o_.cost.PrefillUs(R(pw.current).prompt_tokens)), EventKind::kPrefillDone, p});
  }

  Status OnPrefillDone(int p) {
    PrefillWorker& pw = prefill_[p];
    const int id = pw.current;
    pw.current = -1;
    Req& r = req_[id];
    r.first_token_us = now_;
    r.generated = 1;
    RouteRequest rq{.counts = &R(id).prefill, .label = w_.labels[R(id).label]};
    auto d = policy_->Route(rq, {in_flight_}, rng_);
    if (!d) return d.error();
    ++routed_;
    if (refit_) routed_ids_.push_back(id);
    fallbacks_ += d->fallback;
    r.decoder = d->decoder;
    ++in_flight_[r.decoder];  // in flight from dispatch to completion, as in the paper
    peak_in_flight_ = std::max(peak_in_flight_, ++total_in_flight_);
    q_.Push({now_ + Us(o_.cost.KvUs(R(id).prompt_tokens)), EventKind::kKvArrived, id});
    if (!pw.queue.empty()) StartPrefill(p);
    return Status::Ok();
  }

  void OnKvArrived(int id) {
    Decoder& d = decoder_[req_[id].decoder];
    d.waiting.push_back(id);
    if (!d.busy) StartStep(req_[id].decoder);
  }

  void OnStepDone(int di) {
    Decoder& d = decoder_[di];
    d.busy = false;
    auto& b = d.batch;
    for (size_t i = 0; i < b.size();) {
      Req& r = req_[b[i]];
      if (++r.generated == R(b[i]).output_tokens) {
        r.finish_us = now_;
        --in_flight_[di];
        --total_in_flight_;
        ++d.served;
        d.kv_used -= R(b[i]).prompt_tokens + R(b[i]).output_tokens;
        end_us_ = std::max(end_us_, now_);
        b.erase(b.begin() + static_cast<std::ptrdiff_t>(i));
      } else {
        ++i;
      }
    }
    StartStep(di);
  }

  void StartStep(int di) {
    Decoder& d = decoder_[di];
    // Admit waiting requests FIFO while the batch and the KV capacity allow; a request that
    // alone exceeds the capacity is admitted into an empty batch rather than starved.
    while (!d.waiting.empty() && static_cast<int>(d.batch.size()) < c_.max_batch) {
      const int id = d.waiting.front();
      const int64_t need = R(id).prompt_tokens + R(id).output_tokens;
      if (d.kv_used + need > c_.kv_capacity_tokens && !d.batch.empty()) break;
      d.waiting.pop_front();
      d.kv_used += need;
      d.batch.push_back(id);
    }
    if (d.batch.empty()) return;
    const int L = w_.geometry.moe_layers;
    int64_t ctx = 0;
    for (int id : d.batch) ctx += R(id).prompt_tokens + req_[id].generated;
    double layer_sum = 0, busiest_sum = 0;
    for (int l = 0; l < L; ++l) {
      std::fill(scratch_.begin(), scratch_.end(), 0);
      for (int id : d.batch) {
        // Decode token t (t = generated - 1) uses the request's pattern t mod patterns.
        const uint64_t* bits = w_.Bits(R(id), req_[id].generated - 1, l);
        for (int i = 0; i < w_.words; ++i) scratch_[i] |= bits[i];
      }
      int n = 0;
      for (uint64_t x : scratch_) n += std::popcount(x);
      layer_sum += n;
      if (o_.ep_ranks > 1) {
        // The layer waits for its busiest rank: charge the largest per-rank distinct count.
        const uint64_t* pl = Placement(di) + static_cast<size_t>(l) * o_.ep_ranks * w_.words;
        int busiest = 0;
        for (int r = 0; r < o_.ep_ranks; ++r) {
          int m = 0;
          for (int i = 0; i < w_.words; ++i) m += std::popcount(scratch_[i] & pl[r * w_.words + i]);
          busiest = std::max(busiest, m);
        }
        n = busiest;
        busiest_sum += busiest;
      }
      distinct_[l] = n;
    }
    ++steps_;
    distinct_sum_ += layer_sum / L;
    for (int id : d.batch) {
      req_[id].distinct_sum += layer_sum / L;
      ++req_[id].steps;
    }
    busiest_sum_ += busiest_sum / L;
    batch_sum_ += static_cast<double>(d.batch.size());
    d.busy = true;
    const double us = o_.cost.StepUs(static_cast<int>(d.batch.size()), ctx, distinct_);
    q_.Push({now_ + Us(us), EventKind::kStepDone, di});
  }

  Status RefitNow() {
    const int64_t from = now_ - o_.refit.window_us;  // the window is (from, now]
    // Dispatch order is close to arrival order: dropping expired ids from the front keeps the
    // deque short, and the filter below is exact.
    while (!routed_ids_.empty() && Arrival(routed_ids_.front()) <= from) routed_ids_.pop_front();
    std::vector<int> ids;
    for (int id : routed_ids_) {
      if (Arrival(id) > from) ids.push_back(id);
    }
    auto by_arrival = [&](int a, int b) {
      return std::pair{Arrival(a), a} < std::pair{Arrival(b), b};
    };
    std::sort(ids.begin(), ids.end(), by_arrival);
    if (ids.size() > static_cast<size_t>(o_.refit.max_window)) {
      ids.erase(ids.begin(), ids.end() - o_.refit.max_window);
    }
    std::vector<ExpertCounts> window;
    window.reserve(ids.size());
    for (int id : ids) window.push_back(R(id).prefill);
    SimRefit ev{.time_us = now_, .window = static_cast<int>(window.size())};
    auto r = Refit(*po_.space, window, o_.refit.fit);
    if (r) {
      po_.space = r->space;
      ELDR_ASSIGN_OR_RETURN(policy_, MakePolicy(po_));
      ev.swapped = true;
      ev.movement = r->report.centroid_movement;
      ev.churn = r->report.churn;
      ev.old_score = r->report.old_score;
      ev.new_score = r->report.new_score;
      ++refits_swapped_;
    } else if (r.error().code() == StatusCode::kFailedPrecondition) {
      ++refits_failed_;  // too few requests or a degenerate fit: keep the current space
      ev.refused = r.error().message();
    } else {
      return r.error().WithContext(fmt::format("refit at {} us", now_));
    }
    refits_.push_back(ev);
    return Status::Ok();
  }

  const uint64_t* Placement(int d) const {
    return o_.placement.empty() ? contiguous_.data() : o_.placement[d].data();
  }

  static int64_t Us(double us) { return std::max<int64_t>(1, std::llround(us)); }

  Result<SimResult> Finish() {
    SimResult res;
    for (size_t id = 0; id < req_.size(); ++id) {
      const Req& r = req_[id];
      if (r.finish_us < 0) {
        return Internal("request {} never finished (simulator bug)", id);
      }
      if (Arrival(static_cast<int>(id)) < o_.warmup_us) continue;
      RequestResult rr;
      rr.id = static_cast<int>(id);
      rr.decoder = r.decoder;
      rr.arrival_us = Arrival(static_cast<int>(id));
      rr.first_token_us = r.first_token_us;
      rr.finish_us = r.finish_us;
      rr.output_tokens = R(static_cast<int>(id)).output_tokens;
      rr.mean_distinct = r.steps ? r.distinct_sum / r.steps : 0;
      res.requests.push_back(rr);
    }
    for (int64_t f : in_flight_) {
      if (f != 0) return Internal("in-flight count {} left after the run (simulator bug)", f);
    }
    res.steps = steps_;
    res.mean_distinct = steps_ ? distinct_sum_ / steps_ : 0;
    res.mean_batch = steps_ ? batch_sum_ / steps_ : 0;
    res.mean_busiest_rank = steps_ ? busiest_sum_ / steps_ : 0;
    res.fallbacks = fallbacks_;
    res.peak_in_flight = peak_in_flight_;
    res.end_us = end_us_;
    for (const auto& d : decoder_) res.decoder_requests.push_back(d.served);
    res.refits = std::move(refits_);
    res.refits_swapped = refits_swapped_;
    res.refits_failed = refits_failed_;
    return res;
  }

  const Workload& w_;
  const SimOptions& o_;
  const ClusterOptions& c_;
  PolicyOptions po_;  // the policy's options; refits replace the space
  std::unique_ptr<RoutingPolicy> policy_;
  EventQueue& q_;
  Rng rng_;
  std::vector<Req> req_;
  std::vector<PrefillWorker> prefill_;
  std::vector<Decoder> decoder_;
  std::vector<int64_t> in_flight_;
  std::vector<int> distinct_;
  std::vector<uint64_t> scratch_;
  int64_t now_ = 0, end_us_ = 0, steps_ = 0, fallbacks_ = 0;
  int64_t total_in_flight_ = 0, peak_in_flight_ = 0;
  double distinct_sum_ = 0, batch_sum_ = 0, busiest_sum_ = 0;
  std::vector<uint64_t> contiguous_;
  bool refit_ = false;
  int64_t next_refit_us_ = 0, refits_swapped_ = 0, refits_failed_ = 0;
  size_t routed_ = 0;
  std::deque<int> routed_ids_;  // refit: routed requests, in dispatch order, not yet expired
  std::vector<SimRefit> refits_;
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double pos = p * (static_cast<double>(v.size()) - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(v.size() - 1, lo + 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

}  // namespace

std::vector<uint64_t> ContiguousPlacement(const ModelGeometry& g, int ranks) {
  const int words = (g.experts + 63) / 64;
  std::vector<uint64_t> p(static_cast<size_t>(g.moe_layers) * ranks * words, 0);
  for (int l = 0; l < g.moe_layers; ++l)
    for (int e = 0; e < g.experts; ++e) {
      const int r = static_cast<int>(static_cast<int64_t>(e) * ranks / g.experts);
      p[(static_cast<size_t>(l) * ranks + r) * words + e / 64] |= uint64_t{1} << (e % 64);
    }
  return p;
}

std::vector<uint64_t> BalancedPlacement(const ModelGeometry& g, int ranks,
                                        const ExpertCounts& activation) {
  const int words = (g.experts + 63) / 64;
  std::vector<uint64_t> p(static_cast<size_t>(g.moe_layers) * ranks * words, 0);
  std::vector<int> order(g.experts);
  for (int l = 0; l < g.moe_layers; ++l) {
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return activation.at(l, a) > activation.at(l, b); });
    for (int i = 0; i < g.experts; ++i) {
      const int round = i / ranks, pos = i % ranks;
      const int r = round % 2 == 0 ? pos : ranks - 1 - pos;  // snake
      const int e = order[i];
      p[(static_cast<size_t>(l) * ranks + r) * words + e / 64] |= uint64_t{1} << (e % 64);
    }
  }
  return p;
}

Result<SimResult> SimulateWithQueue(const Workload& w, const SimOptions& o, EventQueue& queue) {
  if (Status s = o.cluster.Validate(); !s.ok()) return tl::unexpected<Status>(s);
  if (Status s = o.cost.Validate(); !s.ok()) return tl::unexpected<Status>(s);
  if (!(o.time_scale > 0) || !std::isfinite(o.time_scale) || o.max_requests < 0) {
    return InvalidArgument("time_scale must be > 0 and max_requests >= 0");
  }
  ELDR_RETURN_IF_ERROR(o.refit.Validate());
  if (o.ep_ranks < 1 || o.ep_ranks > w.geometry.experts) {
    return InvalidArgument("ep_ranks must be in [1, experts]");
  }
  if (!o.placement.empty()) {
    const size_t want = static_cast<size_t>(w.geometry.moe_layers) * o.ep_ranks * w.words;
    if (o.placement.size() != static_cast<size_t>(o.cluster.decode_workers)) {
      return InvalidArgument("placement has {} decoders, the cluster {}", o.placement.size(),
                             o.cluster.decode_workers);
    }
    for (const auto& p : o.placement) {
      if (p.size() != want) return InvalidArgument("placement of the wrong shape");
    }
  }
  for (size_t i = 0; i < w.requests.size(); ++i) {
    if (w.requests[i].id != static_cast<int>(i)) {
      return InvalidArgument("workload requests must be numbered 0..n-1 in order");
    }
  }
  PolicyOptions po = o.policy;
  po.decoders = o.cluster.decode_workers;
  ELDR_ASSIGN_OR_RETURN(auto policy, MakePolicy(po));
  Cluster c(w, o, std::move(po), std::move(policy), queue);
  return c.Run();
}

Result<SimResult> Simulate(const Workload& w, const SimOptions& o) {
  HeapEventQueue q;
  return SimulateWithQueue(w, o, q);
}

SimSummary Summarize(const SimResult& r) {
  SimSummary s;
  std::vector<double> tpot, ttft;
  double request_distinct = 0;
  for (const auto& q : r.requests) {
    tpot.push_back(q.TpotMs());
    ttft.push_back(q.TtftMs());
    request_distinct += q.mean_distinct;
  }
  s.request_distinct = r.requests.empty() ? 0 : request_distinct / r.requests.size();
  int64_t served = 0, most = 0;
  for (int64_t n : r.decoder_requests) {
    served += n;
    most = std::max(most, n);
  }
  s.max_decoder_share = served ? static_cast<double>(most) / served : 0;
  s.tpot_p50 = Percentile(tpot, 0.5);
  s.tpot_p99 = Percentile(tpot, 0.99);
  s.ttft_p50 = Percentile(ttft, 0.5);
  s.mean_distinct = r.mean_distinct;
  s.mean_batch = r.mean_batch;
  s.requests = static_cast<int64_t>(r.requests.size());
  return s;
}

}  // namespace eldr::sim
