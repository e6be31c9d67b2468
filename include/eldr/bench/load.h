// -----------------------------------------------------------------------------
// File: bench/load.h
// -----------------------------------------------------------------------------
// An open-loop load generator for OpenAI-compatible servers (`eldr bench`), in the manner of
// `vllm bench serve`: requests start at Poisson arrival times whatever the server's state,
// stream their responses, and are measured per token: TTFT (request start to first content
// event), ITL (between content events), TPOT ((end - first) / (tokens - 1)) and end-to-end time.
//
// Prompts come from a file (JSON Lines with "prompt", or plain text lines) or are synthesised
// from seeded random words, so a run is repeatable.
//
// Threads: RunLoad runs one io_context on the calling thread.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "eldr/status.h"

namespace eldr::bench {

struct LoadOptions {
  std::string url = "http://127.0.0.1:8000";  // server base URL
  bool chat = false;                          // /v1/chat/completions instead of /v1/completions
  std::string model = "qwen3-30b-a3b";        // "model" field of every request
  double rate = 10;                           // requests per second (Poisson); <= 0: all at once
  int requests = 200;                         // requests to send
  int max_tokens = 64;                        // per request (ignore_eos is set)
  bool stream = true;
  int prompt_words = 300;            // mean synthetic prompt length (log-normal)
  std::vector<std::string> prompts;  // used round-robin when non-empty
  uint64_t seed = 1;
  int timeout_ms = 600000;  // per request
  std::string extra_body;   // JSON object merged into every request body
  Status Validate() const;
};

struct RequestRecord {
  bool ok = false;
  int status = 0;
  std::string error;
  double start_s = 0;  // since the run began
  double ttft_ms = 0, e2e_ms = 0, tpot_ms = 0;
  int64_t tokens = 0;
  std::vector<double> itl_ms;
};

struct Percentiles {
  double mean = 0, p50 = 0, p90 = 0, p99 = 0;
};

struct LoadReport {
  int sent = 0, ok = 0, failed = 0;
  double duration_s = 0;
  double request_throughput = 0, output_throughput = 0;  // per second
  Percentiles ttft_ms, tpot_ms, itl_ms, e2e_ms;
  std::vector<RequestRecord> records;
  std::string ToJson() const;
  std::string ToText() const;
};

// Prompts from a file: JSONL objects with "prompt" (or "text"), or one prompt per plain line.
Result<std::vector<std::string>> LoadPrompts(const std::string& text);
// A synthetic prompt of about `mean_words` words, deterministic in (seed, index).
std::string SyntheticPrompt(uint64_t seed, int index, int mean_words);
Percentiles ComputePercentiles(std::vector<double> v);

// `progress(done, total)` is called as requests finish (may be empty).
Result<LoadReport> RunLoad(const LoadOptions& options,
                           const std::function<void(int, int)>& progress = {});

}  // namespace eldr::bench
