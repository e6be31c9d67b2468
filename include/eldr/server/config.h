// -----------------------------------------------------------------------------
// File: server/config.h
// -----------------------------------------------------------------------------
// ServeOptions: everything `eldr serve` is configured by. One file (YAML or JSON; JSON is valid
// YAML) sets it, flags override single fields (tools/ only). docs/serve.md documents every key;
// ParseServeConfig rejects unknown keys, so a typo never silently falls back to a default.
//
// Example (YAML):
//   listen: 127.0.0.1:8000
//   backend: vllm                 # vllm (NIXL pull flow) or sglang (bootstrap flow)
//   model: qwen3-30b-a3b          # geometry preset of the served model
//   prefill: [http://10.0.0.1:8100, http://10.0.0.2:8100]
//   decode:  [http://10.0.0.3:8200, {url: http://10.0.0.4:8200, dp_rank: 1}]
//   policy: eldr
//   tau: 0.1
//   space: /etc/eldr/space.json
//
// Thread-safety: plain values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "eldr/policy.h"
#include "eldr/server/balance.h"
#include "eldr/server/capture.h"
#include "eldr/server/refit_loop.h"
#include "eldr/server/retry.h"
#include "eldr/signature_cache.h"
#include "eldr/status.h"

namespace eldr::server {

enum class Backend { kVllm, kSglang };
std::string_view BackendName(Backend b);

struct WorkerSpec {
  std::string url;          // as configured, "http://host:port"
  std::string host;         // parsed from url
  int port = 0;             // parsed from url
  int bootstrap_port = 0;   // sglang prefill: the KV bootstrap port (0 = 8998, SGLang's default)
  int dp_rank = -1;         // >= 0: sent as X-Data-Parallel-Rank on every leg to this worker
  Status Validate() const;  // host non-empty, ports in range
};

// "http://host:port" (or "host:port") -> host, port. Only plain http upstreams are supported.
// `listen` also accepts port 0 (any free port).
Result<WorkerSpec> ParseWorkerUrl(std::string_view url, bool listen = false);

struct ServeOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0 = pick a free port (reported on stdout and in ready_file)
  int threads = 0;  // I/O threads; 0 = hardware concurrency
  // After its last event, an I/O thread polls its sockets without sleeping for this long before
  // it blocks: lower latency where waking a sleeping thread is slow (virtual machines), at the
  // cost of a busy core. 0 = always block (the default).
  int busy_poll_us = 0;
  Backend backend = Backend::kVllm;
  std::string model = "qwen3-30b-a3b";  // geometry: a preset or a Hugging Face config.json path
  // The model id /v1/models lists (set it to the engines' --served-model-name). Empty: `model`
  // when it is a preset name, else the name read from the config.json's directory.
  std::string served_model_name;
  std::vector<WorkerSpec> prefill, decode;

  std::string policy = "eldr";  // any core policy name (policy.h), or "shadow"
  // policy: shadow routes by `shadow_of` (rr, random, jsq or p2c) and computes, beside it, the
  // choice of `shadow_candidate` (eldr or eldr-plus, with `space`) for the shadow metrics.
  std::string shadow_of = "jsq";
  std::string shadow_candidate = "eldr";
  // policy: domain (the paper's oracle label pools, as a live A/B baseline): the label mix the
  // pools are sized by (config key label_shares, a map label -> share; flag --label-shares
  // a=0.5,b=0.5, or eldr serve --label-shares-from CALIBRATION). Requests carry their label in
  // the X-Eldr-Label header; one without a known label is balanced by jsq and counted as a
  // fallback.
  std::vector<LabelShare> label_shares;
  // Per decode worker, the expected distinct experts per step of its in-flight requests
  // (eldr_decode_expected_distinct_experts; shadow.h): always on with policy shadow, opt-in for
  // the others, as it costs one pass over each routed request's non-zero prompt counts.
  bool expert_estimate = false;
  double tau = 0.1;
  int band_min = 1;  // eldr: widen a narrower band to the band_min best decoders (policy.h)
  // eldr-plus: its band and load bound (config keys plus_tau, plus_slack; policy.h).
  double plus_tau = PolicyOptions::Plus{}.tau;
  double plus_slack = PolicyOptions::Plus{}.slack;
  double plus_sqrt_slack = PolicyOptions::Plus{}.sqrt_slack;  // config key plus_sqrt_slack
  std::string space;  // signature-space file; required by policies eldr and eldr-plus
  SignatureCacheOptions cache;

  double prefill_load_factor = 1.25;  // bounded-load consistent hashing: c >= 1
  int prefix_bytes = 256;             // prompt prefix bytes hashed to pick the prefill worker

  int64_t max_body_bytes = int64_t{8} << 20;  // client request body (413 beyond)
  int max_header_bytes = 60 << 10;            // request line + headers (431 beyond; Envoy's)
  int max_in_flight = 4096;         // proxied requests at once; beyond, requests queue for a slot
  int admission_queue = 1024;       // requests waiting for a slot at most (429 beyond)
  int admission_timeout_ms = 5000;  // longest wait for a slot (503 beyond)
  int64_t max_payload_bytes = int64_t{256} << 20;  // prefill response body (502 beyond)

  int connect_timeout_ms = 2000;
  int prefill_timeout_ms = 120000;     // whole prefill leg
  int first_byte_timeout_ms = 120000;  // decode leg until response headers
  int idle_timeout_ms = 60000;         // between two reads of a streaming decode
  int client_timeout_ms = 300000;      // a client connection's next request (idle keep-alive)

  // The whole request, from arrival to the last byte: prefill, retries, backoffs and decode
  // (0 = none). A client's X-Eldr-Deadline-Ms header may shorten it, never extend it. Past it,
  // an answer not begun is a 504; a stream ends with an SSE error event (code 504).
  int request_timeout_ms = 1800000;

  // Retries of a failed leg on another worker, with exponential backoff and jitter (retry.h
  // says which failures; never once the client has a byte of the answer). The config key
  // prefill_attempts (the old name) sets max_retries = prefill_attempts - 1.
  int max_retries = 2;
  int retry_initial_backoff_ms = 50;
  int retry_max_backoff_ms = 2000;
  double retry_backoff_multiplier = 1.5;
  double retry_jitter_factor = 0.2;

  int health_interval_ms = 2000;  // 0 = no active health checks
  int health_timeout_ms = 1000;
  // Circuit breaker per worker (balance.h): failure_threshold failures within breaker_window_ms
  // open it for open_ms; then half-open, one trial request at a time, and
  // breaker_success_threshold consecutive successes close it.
  int failure_threshold = 5;
  int breaker_window_ms = 10000;
  int open_ms = 5000;
  int breaker_success_threshold = 2;
  double breaker_failure_rate = 0.5;  // and failures >= this share of the window's outcomes
  // > 0: /metrics is served on this port too (same host), apart from the API, so that it can be
  // firewalled separately. 0: on the main port only (the default).
  int metrics_port = 0;

  // Engines started with --api-key: sent as "Authorization: Bearer <key>" on every leg and health
  // probe. tools/ also reads it from ELDR_UPSTREAM_API_KEY, so it stays out of process lists.
  std::string upstream_api_key;
  // Client authentication on /v1/*: off while both are empty. A request must send
  // "Authorization: Bearer <key>" with one of `api_keys` or of the keys in `api_keys_file` (one
  // per line, # comments; keeps keys out of the config and process lists); else 401 with
  // WWW-Authenticate. Probes and /metrics stay open.
  std::vector<std::string> api_keys;
  std::string api_keys_file;
  // Where prefill responses carry the prompt's routed experts: "auto" (detected per response) or
  // one of vllm, vllm-list, vllm-0.21, sglang, eldr-hooks to read only that place (pd.h).
  std::string signature_source = "auto";

  // Admin API (/admin/...): off while admin_token is empty; every call needs
  // "Authorization: Bearer <admin_token>" (401 otherwise) and, unless admin_remote, a loopback
  // peer (403 otherwise).
  std::string admin_token;
  bool admin_remote = false;
  std::string log_level = "info";  // trace, debug, info, warn, error, off
  // One line per completion request on stdout: "off", "kv" (key=value) or "json" (docs/serve.md).
  std::string access_log = "off";
  std::string ready_file;        // if set, {"port":N} is written there once listening
  int drain_timeout_ms = 30000;  // graceful shutdown: wait at most this long for in-flight
  // Calibration capture from live traffic (capture.h): config key `capture` (the path) and
  // capture_fraction, capture_max_file_bytes, capture_max_files, capture_queue_records,
  // capture_flush_interval_ms. Off while the path is empty.
  CaptureOptions capture;
  // Online refitting of the signature space (refit_loop.h): config key `refit` (a map of
  // interval_s, window_s, min_requests, max_window; `refit: {}` for the defaults), flag --refit.
  // Off when absent. Needs a policy with a space (eldr, eldr-plus, shadow).
  std::optional<RefitConfig> refit;

  Status Validate() const;
};

// The circuit-breaker and retry options the serve options amount to (balance.h, retry.h).
CircuitBreakerOptions BreakerOptions(const ServeOptions& o);
RetryOptions RetryOptionsOf(const ServeOptions& o);

// Parses a YAML or JSON config over `base` (keys absent from the text keep base's values).
// InvalidArgument names the offending key; unknown keys are errors.
Result<ServeOptions> ParseServeConfig(std::string_view text, ServeOptions base = {});

}  // namespace eldr::server
