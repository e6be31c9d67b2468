// -----------------------------------------------------------------------------
// File: server/proxy.h
// -----------------------------------------------------------------------------
// Proxy: `eldr serve`, the OpenAI-compatible PD router (docs/serve.md).
//
//   POST /v1/completions, /v1/chat/completions   proxied: prefill leg, decode choice, decode leg
//   GET  /v1/models, /health, /metrics
//   /admin/...                                   token-protected (ServeOptions::admin_token)
//
// Per request: the prefill worker by bounded-load consistent hash of the prompt prefix (retried
// on another worker if the leg fails before a response); the prompt's expert counts from the
// prefill response and the signature cache; the decode worker by the configured policy of the
// core library; the decode leg streamed through as it arrives. Every exit path — success, error,
// timeout, client disconnect, upstream death — releases the request's in-flight counts exactly
// once (RAII tickets), and a client disconnect closes the open upstream leg.
//
// Threads: `threads` I/O threads, each with its own io_context and upstream connection pool;
// routing state is an immutable snapshot swapped under a mutex (admin changes, hot reload), so
// in-flight requests keep the snapshot they started with.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "eldr/clock.h"
#include "eldr/server/config.h"
#include "eldr/status.h"

namespace eldr::server {

// One prefill worker's answer to the self-check (`eldr serve --check`).
struct WorkerCheck {
  std::string url;
  int status = 0;       // HTTP status of the prefill leg; 0 if it failed before one
  std::string source;   // signature source name (pd.h SignatureSourceName), "none" if absent
  bool usable = false;  // a signature ELDR can route by came back
  std::string detail;   // the engine's error, why a payload was rejected, or the decode leg's fate
};

class Proxy {
 public:
  // Validates the options, resolves workers, loads the signature space (checked against the
  // model's geometry and the decoder count) and binds the listening socket. `clock` is what the
  // proxy's decisions read (circuits, deadlines, drain, health transitions); its I/O timers run
  // on std::chrono::steady_clock, which SteadyClock reads too. `clock` must outlive the proxy.
  static Result<std::unique_ptr<Proxy>> Create(const ServeOptions& options,
                                               const Clock& clock = SteadyClock::Get());
  virtual ~Proxy() = default;
  // The bound port (useful with port 0).
  virtual int port() const = 0;
  // Serves until SIGINT/SIGTERM or Shutdown(), then drains in-flight requests (at most
  // drain_timeout_ms) and returns.
  virtual Status Run() = 0;
  // Instead of Run(): sends one short request (max_tokens 1) through each prefill worker with
  // the configured PD flow, completed on a decode worker so that no KV is left behind, and
  // reports per worker whether a usable signature came back. Returns when every check is done.
  virtual std::vector<WorkerCheck> SelfCheck() = 0;
  // Thread-safe; may be called from a signal-handling thread.
  virtual void Shutdown() = 0;
};

}  // namespace eldr::server
