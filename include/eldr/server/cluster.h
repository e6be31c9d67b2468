// -----------------------------------------------------------------------------
// File: server/cluster.h
// -----------------------------------------------------------------------------
// The router's view of its workers, free of I/O: per-worker state (in-flight counts, circuit,
// signature sources seen), immutable routing snapshots (workers, prefill ring, signature space
// and the policy actually in force), the decode decision, the admin operations and the
// rendering of worker state for /metrics and /admin/workers. The proxy (proxy.cc) does the I/O
// and owns one Cluster.
//
//   Cluster::Snap()        -> shared_ptr<const Snapshot>: what a request routes with, kept for
//                             its whole life (admin changes and reloads publish a new one)
//   Cluster::RouteDecode() -> Decision, with the snapshot's effective policy
//
// Time is passed in (`now_us`, microseconds on a monotonic clock), never read here, except to
// measure the decision's own latency.
//
// Thread-safety: Snap, Publish-based admin operations, RouteDecode (with a PolicySlot per
// thread), WorkersJson and RenderMetrics are thread-safe. Worker counters are atomics. A
// PolicySlot belongs to one thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "eldr/geometry.h"
#include "eldr/mutex.h"
#include "eldr/policy.h"
#include "eldr/rng.h"
#include "eldr/server/balance.h"
#include "eldr/server/config.h"
#include "eldr/server/metrics.h"
#include "eldr/server/pd.h"
#include "eldr/server/shadow.h"
#include "eldr/signature_space.h"

namespace eldr::server {

// A resolved upstream address, defined by the I/O layer (it holds a socket endpoint).
struct UpstreamAddress;

struct Worker {
  Worker(WorkerSpec s, std::string r, std::shared_ptr<const UpstreamAddress> a,
         const ServeOptions& o);
  WorkerSpec spec;
  std::string role;  // "prefill" or "decode"
  std::shared_ptr<const UpstreamAddress> address;
  std::atomic<int64_t> in_flight{0};
  std::atomic<uint64_t> requests{0}, errors{0};
  std::atomic<bool> draining{false};
  // Prefill answers by the signature source they carried (kNone: without a usable one), the
  // answers whose payload covered part of the prompt or was rejected, and the last warning's time.
  std::atomic<uint64_t> signatures[kSignatureSources] = {};
  std::atomic<uint64_t> signatures_partial{0}, signatures_rejected{0};
  std::atomic<int> last_source{-1};
  std::atomic<int64_t> last_signature_warning_us{std::numeric_limits<int64_t>::min() / 2};
  CircuitBreaker breaker;
  Histogram latency;
  // Decode workers: what clients saw of the requests this worker answered, measured on the
  // relayed stream (time to first token, time per output token, whole request).
  Histogram ttft, tpot, duration;
  // Shadow mode (decode workers only, null otherwise): the requests in flight here under the real
  // routing and under the shadow one, for the expected-distinct-experts estimate (shadow.h); and
  // the shadow routing's in-flight count, the load the shadow policy sees.
  std::unique_ptr<ExpertLoad> actual_experts, shadow_experts;
  std::atomic<int64_t> shadow_in_flight{0};
  std::string labels;  // role="...",worker="..."

  // Not draining, and its circuit closed, or half-open with no trial request under way
  // (CircuitBreaker::Admits on the in-flight count).
  bool Available(int64_t now_us) const {
    return !draining.load(std::memory_order_relaxed) &&
           breaker.Admits(now_us, in_flight.load(std::memory_order_relaxed));
  }

  // Counts a prefill answer by its signature source. True when the answer had no usable
  // signature (or a partial one) and no warning was due for this worker in the last minute:
  // the caller then says why, so that a misconfigured engine is never silently load-balanced.
  bool CountSignature(const PrefillResult& pr, int64_t now_us);
};

// True if any of `ws` may be chosen now.
bool AnyAvailable(const std::vector<std::shared_ptr<Worker>>& ws, int64_t now_us);

// Counts a request in on a worker for as long as it lives (moves transfer the count).
class Ticket {
 public:
  Ticket() = default;
  explicit Ticket(std::shared_ptr<Worker> w);
  Ticket(Ticket&& o) noexcept : w_(std::move(o.w_)) {}
  Ticket& operator=(Ticket&& o) noexcept;
  ~Ticket() { Release(); }
  void Release();

 private:
  std::shared_ptr<Worker> w_;
};

// The policy a snapshot routes with: the configured one, or jsq when it cannot run (an eldr
// space whose k differs from the decoders after an admin change); `degraded` then says why.
struct EffectivePolicy {
  PolicyOptions options;
  std::string degraded;
};

struct Snapshot {
  uint64_t version = 0;
  std::vector<std::shared_ptr<Worker>> prefill, decode;
  std::shared_ptr<const PrefillRing> ring;
  std::shared_ptr<const SignatureSpace> space;
  EffectivePolicy policy;
  // policy: shadow: the candidate computed beside the routing policy; nullopt when off or when
  // it cannot run (shadow_degraded then says why, e.g. a space for another decoder count).
  std::optional<PolicyOptions> shadow;
  std::string shadow_degraded;
};

// One thread's policy instance for the current snapshot (policies keep cursors and are not
// thread-safe; the space they share is immutable) and its scratch space.
struct PolicySlot {
  explicit PolicySlot(uint64_t seed) : rng(seed), seed(seed) {}
  uint64_t version = ~uint64_t{0};
  std::unique_ptr<RoutingPolicy> policy;
  Rng rng;
  uint64_t seed;
  std::vector<int64_t> loads;
  std::vector<uint8_t> avail;
  std::unique_ptr<RoutingPolicy> shadow_policy;  // shadow mode's candidate
  std::vector<int64_t> shadow_loads;
};

struct Decision {
  int decoder = -1;  // -1: no decode worker available
  bool fallback = false;
  int band = 0;
  int shadow = -1;  // shadow mode: the candidate's choice (-1: none, e.g. no signature)
};

// While it lives, a request counts on its real decoder's actual_experts (when the estimate is on:
// expert_estimate or shadow mode) and, in shadow mode, on its shadow decoder's shadow_experts and
// shadow_in_flight. In shadow mode a request without a shadow choice counts on neither.
class ShadowTicket {
 public:
  ShadowTicket() = default;
  ShadowTicket(const Snapshot& s, const Decision& d, const ExpertCounts* counts, int top_k);
  ShadowTicket(ShadowTicket&& o) noexcept = default;
  ShadowTicket& operator=(ShadowTicket&&) = delete;
  ~ShadowTicket();

 private:
  std::shared_ptr<Worker> actual_, shadow_;
  ShadowFootprint footprint_;
};

class Cluster {
 public:
  using Resolver = std::function<Result<std::shared_ptr<const UpstreamAddress>>(const WorkerSpec&)>;

  // Validates the workers, resolves their addresses and loads the signature space (checked
  // against the geometry and the decoder count).
  static Result<std::unique_ptr<Cluster>> Create(const ServeOptions& o, const ModelGeometry& g,
                                                 Resolver resolve);

  std::shared_ptr<const Snapshot> Snap() const ELDR_EXCLUDES(snap_mu_);

  // The decode worker for a request with prompt counts `counts` (null: unknown), among the
  // available decoders not `excluded`. Counts the decision in the metrics below.
  // `label`: the request's X-Eldr-Label (policy domain).
  Decision RouteDecode(const Snapshot& s, PolicySlot& slot, const ExpertCounts* counts,
                       std::span<const uint8_t> excluded, int64_t now_us,
                       std::string_view label = {});

  // Admin operations; each publishes a new snapshot (in-flight requests keep theirs).
  Status AddWorker(const std::string& role, const std::string& url) ELDR_EXCLUDES(admin_mu_);
  Status RemoveWorker(const std::string& role, const std::string& url) ELDR_EXCLUDES(admin_mu_);
  Status Drain(const std::string& role, const std::string& url, bool drain);
  // Loads `path` (or the configured space when empty) and swaps it in atomically.
  Status Reload(const std::string& path) ELDR_EXCLUDES(admin_mu_);
  // Swaps in `next` (an online refit of `expected`) unless the live space is no longer
  // `expected` (reloaded or refitted meanwhile: FailedPrecondition, nothing changed) or next's k
  // differs from the decoders.
  Status SwapSpace(const std::shared_ptr<const SignatureSpace>& expected,
                   std::shared_ptr<const SignatureSpace> next) ELDR_EXCLUDES(admin_mu_);

  // {"workers":[...], "policy", "space_k", "version"}.
  std::string WorkersJson(int64_t now_us) const;
  // The worker families, the signature sources, the decision latency and band size, and
  // eldr_policy_fallbacks_total, in Prometheus text.
  void RenderMetrics(std::string* out, int64_t now_us) const;

 private:
  Cluster(const ServeOptions& o, const ModelGeometry& g, Resolver resolve);
  Result<std::shared_ptr<Worker>> MakeWorker(const WorkerSpec& spec, const std::string& role);
  Result<std::shared_ptr<const SignatureSpace>> LoadSpace(const std::string& path,
                                                          size_t decoders) const;
  // Fills in the effective policy (logging a degradation once, when it is published).
  // REQUIRES: admin_mu_ held since the snapshot `s` was copied from was read.
  void Publish(std::shared_ptr<Snapshot> s) ELDR_REQUIRES(admin_mu_) ELDR_EXCLUDES(snap_mu_);

  const ServeOptions& o_;
  ModelGeometry geometry_;
  Resolver resolve_;
  mutable Mutex snap_mu_;
  Mutex admin_mu_ ELDR_ACQUIRED_BEFORE(snap_mu_);  // serialises the admin read-modify-publish
  std::shared_ptr<const Snapshot> snap_ ELDR_GUARDED_BY(snap_mu_);
  std::atomic<uint64_t> fallbacks_{0};
  std::atomic<uint64_t> shadow_agree_{0}, shadow_disagree_{0}, shadow_unknown_{0};
  Histogram decision_s_{
      {0.5e-6, 1e-6, 2e-6, 3e-6, 5e-6, 7.5e-6, 10e-6, 20e-6, 50e-6, 100e-6, 1000e-6}};
  Histogram band_{{1, 2, 3, 4, 6, 8, 12, 16, 32, 64}};
};

}  // namespace eldr::server
