// -----------------------------------------------------------------------------
// File: sim/event_queue.h
// -----------------------------------------------------------------------------
// Simulator events and the queue interface the cluster model schedules them on. Events are
// totally ordered by (time, kind, key) so that every run is reproducible and any correct queue
// yields the same simulation; the tests compare the production heap with a linear-scan list.
//
// Thread-safety: not thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <queue>
#include <tuple>
#include <vector>

namespace eldr::sim {

enum class EventKind : int {
  kStepDone = 0,     // key: decoder
  kPrefillDone = 1,  // key: prefill worker
  kKvArrived = 2,    // key: request
  kArrival = 3,      // key: request
};

struct Event {
  int64_t time_us;
  EventKind kind;
  int key;
  friend bool operator<(const Event& a, const Event& b) {
    return std::tie(a.time_us, a.kind, a.key) < std::tie(b.time_us, b.kind, b.key);
  }
  friend bool operator==(const Event&, const Event&) = default;
};

class EventQueue {
 public:
  virtual ~EventQueue() = default;
  virtual void Push(const Event& e) = 0;
  // The smallest event, removed; nullopt when empty.
  virtual std::optional<Event> Pop() = 0;
};

// Binary heap: O(log n) per operation.
class HeapEventQueue final : public EventQueue {
 public:
  void Push(const Event& e) override { heap_.push(e); }
  std::optional<Event> Pop() override {
    if (heap_.empty()) return std::nullopt;
    Event e = heap_.top();
    heap_.pop();
    return e;
  }

 private:
  struct Later {
    bool operator()(const Event& a, const Event& b) const { return b < a; }
  };
  std::priority_queue<Event, std::vector<Event>, Later> heap_;
};

}  // namespace eldr::sim
