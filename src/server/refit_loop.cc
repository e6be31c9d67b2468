#include "eldr/server/refit_loop.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>

#include "eldr/server/cluster.h"

namespace eldr::server {

Status RefitConfig::Validate() const {
  if (!(interval_s > 0) || !std::isfinite(interval_s)) {
    return InvalidArgument("refit.interval_s must be > 0, got {}", interval_s);
  }
  if (!(window_s > 0) || !std::isfinite(window_s)) {
    return InvalidArgument("refit.window_s must be > 0, got {}", window_s);
  }
  if (min_requests < 2) return InvalidArgument("refit.min_requests must be >= 2");
  if (max_window < min_requests) {
    return InvalidArgument("refit.max_window must be >= refit.min_requests ({} < {})", max_window,
                           min_requests);
  }
  return Status::Ok();
}

OnlineRefitter::OnlineRefitter(Cluster* cluster, RefitConfig config, RefitOptions options)
    : cluster_(cluster), config_(config), options_([&] {
        options.min_requests = config.min_requests;
        return options;
      }()) {}

OnlineRefitter::~OnlineRefitter() { Stop(); }

void OnlineRefitter::Observe(int64_t now_us, const ExpertCounts& counts) {
  ExpertCounts copy = counts;  // outside the lock
  MutexLock lock(&mu_);
  window_.emplace_back(now_us, std::move(copy));
  while (window_.size() > static_cast<size_t>(config_.max_window)) window_.pop_front();
}

Status OnlineRefitter::RunOnce(int64_t now_us) {
  MutexLock run(&run_mu_);
  if (paused_.load()) return FailedPrecondition("refit: paused");
  const int64_t horizon = now_us - static_cast<int64_t>(config_.window_s * 1e6);
  std::vector<ExpertCounts> recent;
  {
    MutexLock lock(&mu_);
    while (!window_.empty() && window_.front().first < horizon) window_.pop_front();
    counts_.window = static_cast<int64_t>(window_.size());
    recent.reserve(window_.size());
    for (const auto& [t, c] : window_) recent.push_back(c);
  }
  auto snap = cluster_->Snap();
  if (!snap->space) return FailedPrecondition("refit: no signature space to refit");
  if (static_cast<int>(recent.size()) < config_.min_requests) {
    MutexLock lock(&mu_);
    ++counts_.skipped;
    return FailedPrecondition("refit: {} requests in the last {} s, need {}", recent.size(),
                              config_.window_s, config_.min_requests);
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto r = Refit(*snap->space, recent, options_);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  Status swapped = r ? cluster_->SwapSpace(snap->space, r->space) : Status(r.error());
  MutexLock lock(&mu_);
  counts_.last_seconds = seconds;
  if (!swapped.ok()) {
    ++counts_.failed;
    spdlog::warn("event=refit_kept_old reason=\"{}\"", swapped.message());
    return swapped;
  }
  ++counts_.swapped;
  counts_.last_movement = r->report.centroid_movement;
  counts_.last_churn = r->report.churn;
  counts_.last_score = r->report.old_score;
  spdlog::info(
      "event=refit_swapped n={} seconds={:.3f} movement={:.4f} churn={:.3f} score_old={:.4f} "
      "score_new={:.4f}",
      r->report.n, seconds, r->report.centroid_movement, r->report.churn, r->report.old_score,
      r->report.new_score);
  return Status::Ok();
}

void OnlineRefitter::Start(std::function<int64_t()> now_us) {
  thread_ = std::thread([this, now_us = std::move(now_us)] { Loop(now_us); });
}

void OnlineRefitter::Loop(const std::function<int64_t()>& now_us) {
  const auto interval = std::chrono::microseconds(static_cast<int64_t>(config_.interval_s * 1e6));
  loop_mu_.Lock();
  for (;;) {
    // Until stopped or the interval passed (a wakeup without either waits on).
    const auto deadline = std::chrono::steady_clock::now() + interval;
    while (!stop_ && loop_cv_.WaitUntil(&loop_mu_, deadline)) {
    }
    if (stop_) break;
    loop_mu_.Unlock();
    (void)RunOnce(now_us());  // counted and logged inside
    loop_mu_.Lock();
  }
  loop_mu_.Unlock();
}

void OnlineRefitter::Stop() {
  {
    MutexLock lock(&loop_mu_);
    stop_ = true;
  }
  loop_cv_.SignalAll();
  if (thread_.joinable()) thread_.join();
}

OnlineRefitter::Counts OnlineRefitter::counts() const {
  MutexLock lock(&mu_);
  Counts c = counts_;
  c.window = static_cast<int64_t>(window_.size());
  return c;
}

}  // namespace eldr::server
