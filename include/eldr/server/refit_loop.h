// -----------------------------------------------------------------------------
// File: server/refit_loop.h
// -----------------------------------------------------------------------------
// Online refitting in `eldr serve` (config `refit: {interval_s, window_s, min_requests,
// max_window}`; docs/serve.md): the prompt counts of recently routed requests are kept in a
// bounded window, and every interval a background thread refits the live space on them
// (eldr::Refit, refit.h: warm start, exact decoder matching) and swaps the result in atomically
// (Cluster::SwapSpace). A refit that fails, is degenerate, or finds too few requests keeps the
// old space and is counted. The routing path only appends to the window (a mutex held for a
// move); it never waits for a fit.
//
// Thread-safety: Observe() and the accessors from any thread; RunOnce() from one thread at a time
// (the loop's, or a test's). Start()/Stop() from the owner.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <thread>

#include "eldr/expert_counts.h"
#include "eldr/mutex.h"
#include "eldr/refit.h"
#include "eldr/status.h"

namespace eldr::server {

class Cluster;

struct RefitConfig {
  double interval_s = 5;  // time between refits (> 0)
  double window_s = 10;   // requests routed in the last window_s seconds are refitted on (> 0)
  int min_requests = 64;  // fewer usable ones: the refit is skipped, the space kept (>= 2)
  int max_window = 1024;  // at most this many, the most recent (memory: max_window x L x E x 4 B)
  // InvalidArgument naming the first bad key (refit.<key>).
  Status Validate() const;
};

class OnlineRefitter {
 public:
  struct Counts {
    uint64_t swapped = 0, failed = 0, skipped = 0;  // skipped: too few requests in the window
    double last_seconds = 0;                        // wall time of the last fit
    double last_movement = 0;  // RefitReport::centroid_movement of the last swap
    double last_churn = 0;     // RefitReport::churn of the last swap
    double last_score = 0;     // the window's mean best cosine under the live space
    int64_t window = 0;        // requests in the window now
  };

  OnlineRefitter(Cluster* cluster, RefitConfig config, RefitOptions options = {});
  ~OnlineRefitter();  // Stop()

  // A routed request's prompt counts at time now_us (steady clock, microseconds).
  void Observe(int64_t now_us, const ExpertCounts& counts) ELDR_EXCLUDES(mu_);

  // One refit on the window as of now_us; swaps on success. The Status says why nothing was
  // swapped (also when paused: FailedPrecondition).
  Status RunOnce(int64_t now_us) ELDR_EXCLUDES(run_mu_, mu_);

  // The background loop: RunOnce every interval_s, timed by `now_us()`.
  void Start(std::function<int64_t()> now_us);
  void Stop() ELDR_EXCLUDES(loop_mu_);

  void Pause(bool paused) { paused_.store(paused); }
  bool paused() const { return paused_.load(); }
  Counts counts() const ELDR_EXCLUDES(mu_);

 private:
  void Loop(const std::function<int64_t()>& now_us) ELDR_EXCLUDES(loop_mu_);  // the thread's

  Cluster* cluster_;
  const RefitConfig config_;
  const RefitOptions options_;
  mutable Mutex mu_;
  std::deque<std::pair<int64_t, ExpertCounts>> window_ ELDR_GUARDED_BY(mu_);  // by time
  Counts counts_ ELDR_GUARDED_BY(mu_);
  std::atomic<bool> paused_{false};
  Mutex run_mu_ ELDR_ACQUIRED_BEFORE(mu_);  // one RunOnce at a time
  Mutex loop_mu_;
  CondVar loop_cv_;
  bool stop_ ELDR_GUARDED_BY(loop_mu_) = false;
  std::thread thread_;
};

}  // namespace eldr::server
