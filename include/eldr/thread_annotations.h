// -----------------------------------------------------------------------------
// File: thread_annotations.h
// -----------------------------------------------------------------------------
// Macros for clang's thread-safety analysis (-Wthread-safety;
// https://clang.llvm.org/docs/ThreadSafetyAnalysis.html). Under clang each expands to the
// attribute of the same meaning; under other compilers (GCC builds eldr normally) to nothing, so
// they cost nothing and change no code. The `make thread-safety` lane builds everything with
// clang and -Werror=thread-safety (docs/reliability.md, "Thread-safety lane").
//
// The analysis only sees locks whose type is a capability: use eldr::Mutex and eldr::MutexLock
// (eldr/mutex.h), not std::mutex, whose libstdc++ declaration carries no annotations.
//
// Thread-safety: compile-time only; nothing here exists at run time.
//
// Example:
//   class Counter {
//    public:
//     void Add(int n) ELDR_EXCLUDES(mu_) {
//       eldr::MutexLock lock(&mu_);
//       AddLocked(n);
//     }
//
//    private:
//     void AddLocked(int n) ELDR_REQUIRES(mu_) { total_ += n; }
//     eldr::Mutex mu_;
//     int64_t total_ ELDR_GUARDED_BY(mu_) = 0;  // read or written only with mu_ held
//   };
#pragma once

#if defined(__clang__) && defined(__has_attribute)
#if __has_attribute(guarded_by)
#define ELDR_THREAD_ANNOTATION_(x) __attribute__((x))
#endif
#endif
#ifndef ELDR_THREAD_ANNOTATION_
#define ELDR_THREAD_ANNOTATION_(x)  // not clang: no analysis
#endif

// On a class: its objects are capabilities (locks) named `x` in diagnostics ("mutex").
#define ELDR_CAPABILITY(x) ELDR_THREAD_ANNOTATION_(capability(x))

// On a class: an RAII object that acquires a capability in its constructor and releases it in
// its destructor.
#define ELDR_SCOPED_CAPABILITY ELDR_THREAD_ANNOTATION_(scoped_lockable)

// On a data member: read or written only while capability `x` is held.
#define ELDR_GUARDED_BY(x) ELDR_THREAD_ANNOTATION_(guarded_by(x))

// On a pointer member: the data it points to is accessed only while `x` is held.
#define ELDR_PT_GUARDED_BY(x) ELDR_THREAD_ANNOTATION_(pt_guarded_by(x))

// On a capability member: the lock order (checked by -Wthread-safety-beta only).
#define ELDR_ACQUIRED_BEFORE(...) ELDR_THREAD_ANNOTATION_(acquired_before(__VA_ARGS__))
#define ELDR_ACQUIRED_AFTER(...) ELDR_THREAD_ANNOTATION_(acquired_after(__VA_ARGS__))

// On a function: the caller must hold the capabilities (exclusively / shared) on entry, and
// still holds them on return.
#define ELDR_REQUIRES(...) ELDR_THREAD_ANNOTATION_(requires_capability(__VA_ARGS__))
#define ELDR_REQUIRES_SHARED(...) ELDR_THREAD_ANNOTATION_(requires_shared_capability(__VA_ARGS__))

// On a function: it acquires the capabilities (held on return, not on entry). Without an
// argument on a capability's own method: acquires `this`.
#define ELDR_ACQUIRE(...) ELDR_THREAD_ANNOTATION_(acquire_capability(__VA_ARGS__))
#define ELDR_ACQUIRE_SHARED(...) ELDR_THREAD_ANNOTATION_(acquire_shared_capability(__VA_ARGS__))

// On a function: it releases the capabilities (held on entry, not on return).
#define ELDR_RELEASE(...) ELDR_THREAD_ANNOTATION_(release_capability(__VA_ARGS__))
#define ELDR_RELEASE_SHARED(...) ELDR_THREAD_ANNOTATION_(release_shared_capability(__VA_ARGS__))
#define ELDR_RELEASE_GENERIC(...) ELDR_THREAD_ANNOTATION_(release_generic_capability(__VA_ARGS__))

// On a function: tries to acquire; the capability is held when it returns `success` (the first
// argument: true or false).
#define ELDR_TRY_ACQUIRE(...) ELDR_THREAD_ANNOTATION_(try_acquire_capability(__VA_ARGS__))

// On a function: the caller must not hold the capabilities (the function acquires them itself;
// calling it with one held would deadlock).
#define ELDR_EXCLUDES(...) ELDR_THREAD_ANNOTATION_(locks_excluded(__VA_ARGS__))

// On a function: checks at run time that `x` is held; the analysis assumes it from then on.
#define ELDR_ASSERT_CAPABILITY(x) ELDR_THREAD_ANNOTATION_(assert_capability(x))

// On a function: it returns (a reference to) capability `x`.
#define ELDR_RETURN_CAPABILITY(x) ELDR_THREAD_ANNOTATION_(lock_returned(x))

// On a function: not analysed. Keep rare, each with a comment saying why the analysis cannot
// follow the locking there.
#define ELDR_NO_THREAD_SAFETY_ANALYSIS ELDR_THREAD_ANNOTATION_(no_thread_safety_analysis)
