#include "eldr/load_tracker.h"

namespace eldr {

LoadTracker::LoadTracker(int decoders)
    : n_(decoders > 0 ? decoders : 0), slots_(new std::atomic<int64_t>[n_]) {
  for (size_t i = 0; i < n_; ++i) slots_[i].store(0);
}

LoadTracker::Ticket LoadTracker::Acquire(int decoder) {
  slots_[decoder].fetch_add(1, std::memory_order_relaxed);
  return Ticket(this, decoder);
}

LoadTracker::Ticket& LoadTracker::Ticket::operator=(Ticket&& o) noexcept {
  if (this != &o) {
    Release();
    tracker_ = o.tracker_;
    decoder_ = o.decoder_;
    o.tracker_ = nullptr;
  }
  return *this;
}

void LoadTracker::Ticket::Release() {
  if (tracker_ != nullptr) {
    tracker_->slots_[decoder_].fetch_sub(1, std::memory_order_relaxed);
    tracker_ = nullptr;
  }
}

void LoadTracker::Snapshot(std::span<int64_t> out) const {
  for (size_t i = 0; i < n_ && i < out.size(); ++i)
    out[i] = slots_[i].load(std::memory_order_relaxed);
}

int64_t LoadTracker::Total() const {
  int64_t t = 0;
  for (size_t i = 0; i < n_; ++i) t += slots_[i].load(std::memory_order_relaxed);
  return t;
}

}  // namespace eldr
