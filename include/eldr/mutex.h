// -----------------------------------------------------------------------------
// File: mutex.h
// -----------------------------------------------------------------------------
// Mutex, MutexLock and CondVar: std::mutex and std::condition_variable with clang's
// thread-safety annotations (eldr/thread_annotations.h), so that `-Wthread-safety` checks every
// member declared ELDR_GUARDED_BY a Mutex. Same cost and semantics as the std types they wrap
// (a non-recursive, non-timed exclusive lock; nothing is added at run time).
//
// Thread-safety: Mutex and CondVar are for sharing between threads; a MutexLock belongs to the
// thread that made it. Ownership: none of them is copyable or movable; a MutexLock must not
// outlive its Mutex.
//
// Example:
//   eldr::Mutex mu_;
//   eldr::CondVar cv_;
//   std::deque<Item> queue_ ELDR_GUARDED_BY(mu_);
//
//   void Push(Item item) ELDR_EXCLUDES(mu_) {
//     eldr::MutexLock lock(&mu_);
//     queue_.push_back(std::move(item));
//     cv_.Signal();
//   }
//   Item Pop() ELDR_EXCLUDES(mu_) {
//     eldr::MutexLock lock(&mu_);
//     while (queue_.empty()) cv_.Wait(&mu_);  // a plain loop: a predicate lambda would be
//     Item item = std::move(queue_.front());  // analysed apart, without mu_ held
//     queue_.pop_front();
//     return item;
//   }
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "eldr/thread_annotations.h"

namespace eldr {

class ELDR_CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  // Blocks until the calling thread holds the mutex. REQUIRES: not held by the caller.
  void Lock() ELDR_ACQUIRE() { mu_.lock(); }
  // REQUIRES: held by the caller.
  void Unlock() ELDR_RELEASE() { mu_.unlock(); }
  // True (and held) if the mutex was free; never blocks.
  [[nodiscard]] bool TryLock() ELDR_TRY_ACQUIRE(true) { return mu_.try_lock(); }
  // Tells the analysis the caller holds the mutex (where it cannot see the locking); does not
  // check it at run time (std::mutex cannot say who holds it).
  void AssertHeld() const ELDR_ASSERT_CAPABILITY(this) {}

 private:
  friend class CondVar;
  std::mutex mu_;
};

// Holds a Mutex for its scope.
class ELDR_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ELDR_ACQUIRE(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ELDR_RELEASE() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

// A condition variable waited on with a held Mutex. As with std::condition_variable, a wait may
// return without a Signal (spurious wakeup): wait in a loop over the condition, written out in
// the function that holds the lock so that the analysis sees the guarded reads.
class CondVar {
 public:
  CondVar() = default;
  CondVar(const CondVar&) = delete;
  CondVar& operator=(const CondVar&) = delete;

  // Releases `mu`, waits for a Signal, and holds `mu` again on return.
  void Wait(Mutex* mu) ELDR_REQUIRES(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    cv_.wait(lock);
    lock.release();  // still held: the caller's, as on entry
  }

  // As Wait(), up to `deadline`. False when the deadline passed (no Signal before it).
  template <class Clock, class Duration>
  bool WaitUntil(Mutex* mu, const std::chrono::time_point<Clock, Duration>& deadline)
      ELDR_REQUIRES(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    const bool signalled = cv_.wait_until(lock, deadline) == std::cv_status::no_timeout;
    lock.release();
    return signalled;
  }

  void Signal() { cv_.notify_one(); }
  void SignalAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

}  // namespace eldr
