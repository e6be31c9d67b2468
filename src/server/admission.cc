#include "eldr/server/admission.h"

#include <algorithm>
#include <utility>

namespace eldr::server {

AdmissionQueue::AdmissionQueue(const Clock& clock, int max_in_flight, int capacity)
    : clock_(clock), max_in_flight_(max_in_flight), capacity_(capacity) {}

AdmissionQueue::Entry AdmissionQueue::Enter(int64_t timeout_ms, Wake wake) {
  MutexLock lock(&mu_);
  if (shutdown_) return {Outcome::kShutdown};
  // A free slot goes to the newcomer only when nobody waits: otherwise it would overtake them.
  if (in_flight_ < max_in_flight_ && queue_.empty()) {
    ++in_flight_;
    return {Outcome::kAdmitted};
  }
  if (static_cast<int64_t>(queue_.size()) >= capacity_) return {Outcome::kQueueFull};
  const Ticket t = next_ticket_++;
  const int64_t deadline = clock_.NowUs() + std::max<int64_t>(0, timeout_ms) * 1000;
  queue_.push_back({t, deadline, std::move(wake)});
  return {Outcome::kQueued, t, deadline};
}

AdmissionQueue::Wake AdmissionQueue::Release() {
  MutexLock lock(&mu_);
  const int64_t now = clock_.NowUs();
  while (!queue_.empty() && !shutdown_) {
    Waiter w = std::move(queue_.front());
    queue_.pop_front();
    // Past its wait, its own timer resolves it as timed out; handing it the slot would waste it.
    if (now >= w.deadline_us) continue;
    resolved_.emplace(w.ticket, Resolution::kAdmitted);  // the slot passes on: in_flight_ stays
    return std::move(w.wake);
  }
  --in_flight_;
  return {};
}

AdmissionQueue::Resolution AdmissionQueue::Resolve(Ticket ticket) {
  MutexLock lock(&mu_);
  if (auto it = resolved_.find(ticket); it != resolved_.end()) {
    const Resolution r = it->second;
    resolved_.erase(it);
    return r;
  }
  auto q = std::find_if(queue_.begin(), queue_.end(),
                        [ticket](const Waiter& w) { return w.ticket == ticket; });
  if (q == queue_.end()) return Resolution::kTimedOut;  // dropped by Release(), or asked twice
  if (clock_.NowUs() < q->deadline_us) return Resolution::kWaiting;
  queue_.erase(q);
  return Resolution::kTimedOut;
}

std::vector<AdmissionQueue::Wake> AdmissionQueue::Shutdown() {
  MutexLock lock(&mu_);
  shutdown_ = true;
  std::vector<Wake> out;
  out.reserve(queue_.size());
  for (Waiter& w : queue_) {
    resolved_.emplace(w.ticket, Resolution::kShutdown);
    if (w.wake) out.push_back(std::move(w.wake));
  }
  queue_.clear();
  return out;
}

int64_t AdmissionQueue::InFlight() const {
  MutexLock lock(&mu_);
  return in_flight_;
}

int64_t AdmissionQueue::Waiting() const {
  MutexLock lock(&mu_);
  return static_cast<int64_t>(queue_.size());
}

}  // namespace eldr::server
