// Test-only reference: a deliberately naive cluster simulator written from the semantics in
// include/eldr/sim/simulator.h, sharing no code with src/sim/simulator.cc beyond the policies and
// the cost formula. There is no event queue: at every moment it scans every decoder, prefill
// worker and request for what happens next, then handles, in this fixed order, decode steps that
// end now (by decoder), prefills that end now (by worker), KV transfers that land now (by request)
// and arrivals now (by request). Slow (O(entities) per moment) and obvious.
#pragma once

#include <algorithm>
#include <bit>
#include <climits>
#include <cmath>
#include <vector>

#include "eldr/rng.h"
#include "eldr/sim/simulator.h"

namespace eldr::reference {

inline std::vector<sim::RequestResult> NaiveSimulate(const sim::Workload& w,
                                                     const sim::SimOptions& o) {
  const auto& c = o.cluster;
  const int n = static_cast<int>(w.requests.size()), L = w.geometry.moe_layers;
  PolicyOptions po = o.policy;
  po.decoders = c.decode_workers;
  auto policy = std::move(*MakePolicy(po));
  Rng rng(o.seed);
  auto us = [](double x) { return std::max<int64_t>(1, std::llround(x)); };
  auto mix = [](uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
  };
  struct Req {
    int decoder = -1, generated = 0;
    int64_t kv_at = -1, first = -1, finish = -1;
    bool arrived = false;
  };
  struct Pre {
    std::vector<int> queue;  // front = next
    int current = -1;
    int64_t done = -1;
  };
  struct Dec {
    std::vector<int> batch, waiting;
    int64_t step_end = -1, kv = 0;
  };
  std::vector<Req> req(n);
  std::vector<Pre> pre(c.prefill_workers);
  std::vector<Dec> dec(c.decode_workers);
  std::vector<int64_t> in_flight(c.decode_workers, 0);
  auto R = [&](int id) -> const sim::WorkloadRequest& { return w.requests[id]; };
  auto start_prefill = [&](int p, int64_t now) {
    pre[p].current = pre[p].queue.front();
    pre[p].queue.erase(pre[p].queue.begin());
    pre[p].done = now + us(o.cost.PrefillUs(R(pre[p].current).prompt_tokens));
  };
  auto start_step = [&](int d, int64_t now) {
    Dec& x = dec[d];
    while (!x.waiting.empty() && static_cast<int>(x.batch.size()) < c.max_batch) {
      const int id = x.waiting.front();
      const int64_t need = R(id).prompt_tokens + R(id).output_tokens;
      if (x.kv + need > c.kv_capacity_tokens && !x.batch.empty()) break;
      x.waiting.erase(x.waiting.begin());
      x.kv += need;
      x.batch.push_back(id);
    }
    if (x.batch.empty()) {
      x.step_end = -1;
      return;
    }
    std::vector<int> distinct(L);
    int64_t ctx = 0;
    for (int id : x.batch) ctx += R(id).prompt_tokens + req[id].generated;
    for (int l = 0; l < L; ++l) {
      std::vector<bool> seen(w.geometry.experts, false);
      for (int id : x.batch) {
        const uint64_t* b = w.Bits(R(id), req[id].generated - 1, l);
        for (int e = 0; e < w.geometry.experts; ++e)
          if ((b[e / 64] >> (e % 64)) & 1) seen[e] = true;
      }
      distinct[l] = static_cast<int>(std::count(seen.begin(), seen.end(), true));
    }
    x.step_end = now + us(o.cost.StepUs(static_cast<int>(x.batch.size()), ctx, distinct));
  };
  int64_t now = 0;
  for (;;) {
    int64_t next = LLONG_MAX;
    for (const auto& x : dec)
      if (x.step_end >= 0) next = std::min(next, x.step_end);
    for (const auto& p : pre)
      if (p.current >= 0) next = std::min(next, p.done);
    for (int id = 0; id < n; ++id) {
      if (req[id].kv_at >= 0) next = std::min(next, req[id].kv_at);
      if (!req[id].arrived) next = std::min(next, R(id).arrival_us);
    }
    if (next == LLONG_MAX) break;
    now = next;
    for (int d = 0; d < c.decode_workers; ++d) {
      if (dec[d].step_end != now) continue;
      std::vector<int> keep;
      for (int id : dec[d].batch) {
        if (++req[id].generated == R(id).output_tokens) {
          req[id].finish = now;
          --in_flight[d];
          dec[d].kv -= R(id).prompt_tokens + R(id).output_tokens;
        } else {
          keep.push_back(id);
        }
      }
      dec[d].batch = keep;
      start_step(d, now);
    }
    for (int p = 0; p < c.prefill_workers; ++p) {
      if (pre[p].current < 0 || pre[p].done != now) continue;
      const int id = pre[p].current;
      pre[p].current = -1;
      req[id].first = now;
      req[id].generated = 1;
      RouteRequest rq{.counts = &R(id).prefill, .label = w.labels[R(id).label]};
      const int d = policy->Route(rq, {in_flight}, rng)->decoder;
      req[id].decoder = d;
      ++in_flight[d];
      req[id].kv_at = now + us(o.cost.KvUs(R(id).prompt_tokens));
      if (!pre[p].queue.empty()) start_prefill(p, now);
    }
    for (int id = 0; id < n; ++id) {
      if (req[id].kv_at != now) continue;
      req[id].kv_at = -1;
      const int d = req[id].decoder;
      dec[d].waiting.push_back(id);
      if (dec[d].step_end < 0) start_step(d, now);
    }
    for (int id = 0; id < n; ++id) {
      if (req[id].arrived || R(id).arrival_us != now) continue;
      req[id].arrived = true;
      const int P = c.prefill_workers;
      int p = static_cast<int>(mix(static_cast<uint64_t>(id)) % P);
      int total = 0;
      for (const auto& x : pre) total += static_cast<int>(x.queue.size()) + (x.current >= 0);
      auto load = [&](int i) {
        return static_cast<int>(pre[i].queue.size()) + (pre[i].current >= 0);
      };
      if (load(p) > (total + 1.0) / P * c.prefill_load_bound) {
        p = 0;
        for (int i = 1; i < P; ++i)
          if (load(i) < load(p)) p = i;
      }
      pre[p].queue.push_back(id);
      if (pre[p].current < 0) start_prefill(p, now);
    }
  }
  std::vector<sim::RequestResult> out;
  for (int id = 0; id < n; ++id) {
    sim::RequestResult r;
    r.id = id;
    r.decoder = req[id].decoder;
    r.arrival_us = R(id).arrival_us;
    r.first_token_us = req[id].first;
    r.finish_us = req[id].finish;
    r.output_tokens = R(id).output_tokens;
    out.push_back(r);
  }
  return out;
}

}  // namespace eldr::reference
