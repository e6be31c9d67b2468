// -----------------------------------------------------------------------------
// File: load_tracker.h
// -----------------------------------------------------------------------------
// LoadTracker: exact in-flight request counts per decoder, the load metric of ELDR and of the
// JSQ/P2C baselines (the ELDR paper, arXiv 2607.00466): a request counts from dispatch to
// completion. Acquire() returns a Ticket that counts the request out exactly once — when Release()
// is called or when the Ticket is destroyed, whichever comes first — so no error path can leak or
// double-count a request.
//
// Thread-safety: all methods are thread-safe (one atomic per decoder). Snapshot() is a per-slot
// consistent read, not a global atomic snapshot (loads may move while it runs).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace eldr {

class LoadTracker {
 public:
  explicit LoadTracker(int decoders);
  LoadTracker(const LoadTracker&) = delete;
  LoadTracker& operator=(const LoadTracker&) = delete;

  class Ticket {
   public:
    Ticket() = default;
    Ticket(Ticket&& o) noexcept : tracker_(o.tracker_), decoder_(o.decoder_) {
      o.tracker_ = nullptr;
    }
    Ticket& operator=(Ticket&& o) noexcept;
    ~Ticket() { Release(); }
    // Counts the request out (idempotent).
    void Release();
    int decoder() const { return decoder_; }
    bool active() const { return tracker_ != nullptr; }

   private:
    friend class LoadTracker;
    Ticket(LoadTracker* t, int d) : tracker_(t), decoder_(d) {}
    LoadTracker* tracker_ = nullptr;
    int decoder_ = -1;
  };

  // Counts one request in on `decoder`. REQUIRES: 0 <= decoder < size(). The tracker must
  // outlive the ticket.
  [[nodiscard]] Ticket Acquire(int decoder);

  int size() const { return static_cast<int>(n_); }
  int64_t InFlight(int decoder) const { return slots_[decoder].load(std::memory_order_relaxed); }
  // Copies every decoder's count into `out` (size() slots).
  void Snapshot(std::span<int64_t> out) const;
  int64_t Total() const;

 private:
  size_t n_;
  std::unique_ptr<std::atomic<int64_t>[]> slots_;
};

}  // namespace eldr
