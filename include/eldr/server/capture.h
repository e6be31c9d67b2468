// -----------------------------------------------------------------------------
// File: server/capture.h
// -----------------------------------------------------------------------------
// Calibration data captured from live traffic (`eldr serve --capture PATH`): one record per
// completed request, in the calibration format `eldr fit -i` reads unchanged (calibration.h,
// docs/formats.md), plus the fields `eldr simulate --trace` replays (prompt and output lengths,
// arrival time, the decoder chosen).
//
// The file is gzip, written as one gzip member per batch, so a file cut short by a crash keeps
// every complete batch and `eldr fit` / `eldr simulate` read it with the incomplete tail dropped
// (and say so). The first batch written after each open starts with a header line naming the
// model.
//
// Off the request path: Offer() only moves the record into a bounded queue (a mutex held for a
// push); a writer thread serialises, compresses and writes batches. A full queue (a slow disk)
// or a failed write (a full disk) drops records and counts them; a request never waits for, or
// fails because of, the capture. Rotation bounds the disk use to max_files x max_file_bytes:
// when the active file passes max_file_bytes it becomes PATH.1 (PATH.1 becomes PATH.2, ...; the
// oldest beyond max_files is deleted) and a new PATH is started.
//
// Thread-safety: Offer() and counts() may be called from any thread; Flush() and Close() from
// one thread at a time (the owner). Without the background thread (tests), nothing is written
// until Flush().
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "eldr/expert_counts.h"
#include "eldr/geometry.h"
#include "eldr/mutex.h"
#include "eldr/status.h"

namespace eldr::server {

struct CaptureOptions {
  std::string path;                             // empty: capture off
  double fraction = 1.0;                        // share of completed requests recorded, [0, 1]
  int64_t max_file_bytes = int64_t{256} << 20;  // compressed bytes before rotation (>= 4 KiB)
  int max_files = 4;                            // the active file plus rotated ones (>= 1)
  int queue_records = 4096;                     // records waiting at most; beyond: dropped
  int batch_records = 256;                      // a batch (gzip member) at most this many
  int flush_interval_ms = 1000;                 // the writer writes at least this often
  // Ask the decode leg of a sampled request for its generated tokens' routed experts where the
  // engine can send them (SGLang: `return_routed_experts`, taken out again unless the client
  // asked) and record them as `decode` (server/decode_experts.h).
  bool decode = true;
  // InvalidArgument naming the first bad field (config key capture_<field>).
  Status Validate() const;
};

struct CaptureRecord {
  std::string id;     // the request id (X-Request-Id or minted)
  std::string label;  // X-Eldr-Label, or empty
  ExpertCounts prefill;
  std::optional<ExpertCounts> decode;  // only where the decode engine returned them
  int64_t prompt_tokens = 0;
  int64_t output_tokens = 0;
  int64_t arrival_us = 0;  // Unix time, microseconds
  std::string decoder;     // URL of the decode worker chosen
};

// One record as a calibration JSON line (no trailing newline).
std::string CaptureRecordJson(const CaptureRecord& r);

// Counts output tokens in a relayed completion response, fed the body bytes as they pass
// (Feed() may split the body anywhere, even inside a key: the count does not depend on the
// cuts). The count is the last "completion_tokens" the body reports whose value ends within 32
// bytes of its key (usage: a non-streaming reply, or a stream with
// stream_options.include_usage); without one, the number of SSE data events that carry a
// non-empty "choices" list (one per token for vLLM and SGLang without speculative decoding: an
// approximation, which exact() reports).
class OutputTokenCounter {
 public:
  void Feed(std::string_view bytes);
  int64_t count() const { return usage_ >= 0 ? usage_ : events_; }
  bool exact() const { return usage_ >= 0; }

 private:
  void ScanLine(std::string_view line);
  std::string line_;  // the current line so far (its first 4 KiB)
  std::string tail_;  // kept for the next Feed(): a key's start, or a key and its value so far
  int64_t usage_ = -1;
  int64_t events_ = 0;
};

class CaptureWriter {
 public:
  struct Counts {
    uint64_t written = 0;        // records written to disk
    uint64_t dropped_queue = 0;  // the queue was full (writer behind)
    uint64_t dropped_write = 0;  // a write or rotation failed (disk full, permissions)
    uint64_t bytes = 0;          // compressed bytes written
    uint64_t rotations = 0;
  };

  // Opens PATH for appending (creating it) and, with `background`, starts the writer thread.
  // InvalidArgument for bad options, Unavailable when PATH cannot be opened (a missing directory,
  // permissions: a start-up error, not a silent loss).
  static Result<std::unique_ptr<CaptureWriter>> Open(const CaptureOptions& options,
                                                     const ModelGeometry& geometry,
                                                     bool background = true);
  ~CaptureWriter();  // Close()

  CaptureWriter(const CaptureWriter&) = delete;
  CaptureWriter& operator=(const CaptureWriter&) = delete;

  // Queues a record; false (and counted) when the queue is full or the writer is closed.
  bool Offer(CaptureRecord record) ELDR_EXCLUDES(mu_);

  // Writes every queued record now (the caller's thread). The first write error, if any.
  Status Flush() ELDR_EXCLUDES(io_mu_, mu_);

  // Stops the thread after it has written what was queued; later Offer()s are dropped.
  void Close() ELDR_EXCLUDES(io_mu_, mu_);

  Counts counts() const;
  const CaptureOptions& options() const { return o_; }

 private:
  CaptureWriter(CaptureOptions o, ModelGeometry g) : o_(std::move(o)), g_(std::move(g)) {}
  Status OpenActive() ELDR_REQUIRES(io_mu_);  // fd_ on PATH, appending; a header member when new
  Status WriteBatch(std::deque<CaptureRecord>& batch) ELDR_REQUIRES(io_mu_);
  Status RotateIfDue() ELDR_REQUIRES(io_mu_);
  void Run() ELDR_EXCLUDES(mu_);

  const CaptureOptions o_;
  const ModelGeometry g_;
  Mutex io_mu_ ELDR_ACQUIRED_BEFORE(mu_);  // serialises Flush() with the thread's writes
  int fd_ ELDR_GUARDED_BY(io_mu_) = -1;
  int64_t file_bytes_ ELDR_GUARDED_BY(io_mu_) = 0;  // of the active file
  bool header_pending_ ELDR_GUARDED_BY(io_mu_) = true;
  mutable Mutex mu_;
  CondVar cv_;
  std::deque<CaptureRecord> queue_ ELDR_GUARDED_BY(mu_);
  bool closed_ ELDR_GUARDED_BY(mu_) = false;
  std::thread thread_;
  std::atomic<uint64_t> written_{0}, dropped_queue_{0}, dropped_write_{0}, bytes_{0}, rotations_{0};
};

}  // namespace eldr::server
