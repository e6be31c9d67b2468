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
  queue_.push_back({t, deadline});
  state_.emplace(t, State::kWaiting);
  wake_.emplace(t, std::move(wake));
  return {Outcome::kQueued, t, deadline};
}

AdmissionQueue::Wake AdmissionQueue::Release() {
  MutexLock lock(&mu_);
  const int64_t now = clock_.NowUs();
  while (!queue_.empty() && !shutdown_) {
    const Waiter w = queue_.front();
    queue_.pop_front();
    auto node = wake_.extract(w.ticket);
    if (now >= w.deadline_us) {
      // Its own timer resolves it as timed out; handing it the slot would waste it.
      state_.erase(w.ticket);
      continue;
    }
    state_[w.ticket] = State::kGranted;  // the slot passes on: in_flight_ stays as it is
    return node.empty() ? Wake{} : std::move(node.mapped());
  }
  --in_flight_;
  return {};
}

AdmissionQueue::Resolution AdmissionQueue::Resolve(Ticket ticket) {
  MutexLock lock(&mu_);
  auto it = state_.find(ticket);
  if (it == state_.end()) return Resolution::kTimedOut;
  switch (it->second) {
    case State::kGranted:
      state_.erase(it);
      return Resolution::kAdmitted;
    case State::kShutdown:
      state_.erase(it);
      return Resolution::kShutdown;
    case State::kWaiting:
      break;
  }
  auto q = std::find_if(queue_.begin(), queue_.end(),
                        [ticket](const Waiter& w) { return w.ticket == ticket; });
  if (q != queue_.end() && clock_.NowUs() < q->deadline_us) return Resolution::kWaiting;
  if (q != queue_.end()) queue_.erase(q);
  state_.erase(it);
  wake_.erase(ticket);
  return Resolution::kTimedOut;
}

std::vector<AdmissionQueue::Wake> AdmissionQueue::Shutdown() {
  MutexLock lock(&mu_);
  shutdown_ = true;
  std::vector<Wake> out;
  out.reserve(queue_.size());
  for (const Waiter& w : queue_) {
    state_[w.ticket] = State::kShutdown;
    if (auto node = wake_.extract(w.ticket); !node.empty() && node.mapped()) {
      out.push_back(std::move(node.mapped()));
    }
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
