// Test-only reference: an unsorted event list whose Pop scans every pending event for the
// smallest (time, kind, key). O(n) per event and obviously correct; the simulator must produce
// exactly the same run on it as on its binary heap.
#pragma once

#include <algorithm>
#include <vector>

#include "eldr/sim/event_queue.h"

namespace eldr::reference {

class ListEventQueue final : public sim::EventQueue {
 public:
  void Push(const sim::Event& e) override { events_.push_back(e); }
  std::optional<sim::Event> Pop() override {
    if (events_.empty()) return std::nullopt;
    auto it = std::min_element(events_.begin(), events_.end());
    sim::Event e = *it;
    events_.erase(it);
    ++pops_;
    return e;
  }
  int64_t pops() const { return pops_; }

 private:
  std::vector<sim::Event> events_;
  int64_t pops_ = 0;
};

}  // namespace eldr::reference
