// Private to src/server: the proxy's implementation, one class split over the translation units
// that include Boost.Beast, along the request path:
//   proxy.cc        start-up, accept, sessions, routes, admission, drain, health checks,
//                   self-check
//   admin.cc        the admin API, /metrics, per-request accounting (histograms, access log),
//                   the capture of completed requests
//   upstream.cc     the upstream client (connect, pooled POST exchanges, typed leg errors), the
//                   decode relay and the client-side writer
//   flow_vllm.cc    the vLLM NIXL flow (prefill, then the decode choice), one coroutine
//   flow_sglang.cc  the SGLang bootstrap flow (decode choice, then both legs), one coroutine
// Decisions live outside Beast code (cluster.h, prompt_signal.h, pd.h) and are unit-tested there.
#pragma once

#include <spdlog/spdlog.h>

#include <boost/json.hpp>
#include <csignal>
#include <deque>
#include <limits>
#include <thread>

#include "../net/http.h"
#include "eldr/block_hash.h"
#include "eldr/clock.h"
#include "eldr/geometry.h"
#include "eldr/mutex.h"
#include "eldr/net/wire.h"
#include "eldr/policy.h"
#include "eldr/rng.h"
#include "eldr/server/admission.h"
#include "eldr/server/balance.h"
#include "eldr/server/capture.h"
#include "eldr/server/cluster.h"
#include "eldr/server/decode_experts.h"
#include "eldr/server/drain.h"
#include "eldr/server/metrics.h"
#include "eldr/server/pd.h"
#include "eldr/server/prompt_signal.h"
#include "eldr/server/proxy.h"
#include "eldr/server/refit_loop.h"
#include "eldr/server/retry.h"
#include "eldr/signature_cache.h"
#include "eldr/signature_space.h"

namespace eldr::server {

struct UpstreamAddress {
  net::tcp::endpoint ep;
};

namespace proxy_internal {

using namespace eldr::net;  // NOLINT(google-build-using-namespace): Beast vocabulary
using namespace boost::asio::experimental::awaitable_operators;  // NOLINT
namespace json = boost::json;

// Per-request cancellation: the watcher of the client connection cancels whichever upstream
// socket is open when the client goes away; the proxied flow cancels the watcher when it ends.
struct RequestCtx {
  beast::tcp_stream* upstream = nullptr;
  bool client_gone = false;
  // The flow gave this leg up before the client had a byte, to send the request to another
  // prefill/decode pair (SGLang: the other leg of the pair failed): the leg ends quietly, writes
  // nothing to the client and counts no failure against its worker.
  bool abandoned = false;
  bool finished = false;
  bool drain_expired = false;  // the router's drain_timeout_ms passed: end the answer now
  // The request's deadline (request_timeout_ms, X-Eldr-Deadline-Ms): every upstream timeout and
  // backoff is clamped to it, and a leg that failed past it sets deadline_expired.
  Deadline deadline;
  int64_t budget_ms = 0;  // what the deadline was, for messages (0: none)
  bool deadline_expired = false;
  asio::steady_timer* backoff = nullptr;  // set while the flow waits before a retry
  bool response_complete = false;  // the client has its whole answer (background legs may run)
  std::optional<asio::steady_timer> done;  // set while a pipelined request waits for this one
  std::string rid_header;  // "X-Request-Id: ...\r\n", echoed on every response to the request
  bool http10 = false;     // the client spoke HTTP/1.0: no chunked encoding, close after
  // What the access log and the per-decoder histograms report (set along the flow).
  int status = 0;             // sent to the client; 0: none (the client went away first)
  int64_t start_us = 0;       // NowUs() when the request was read
  int64_t first_byte_us = 0;  // first response byte written to the client
  int64_t end_us = 0;         // last byte written
  int64_t bytes_out = 0;      // response body bytes written
  std::string prefill_url, decode_url;
  std::shared_ptr<Worker> decoder;  // the decode worker that answered (histograms)
  int band = 0;
  bool fallback = false;
  std::string_view source = "none";  // signature source of the prefill answer
  OutputTokenCounter tokens;         // output tokens relayed
  // Set for a captured request: reads (and where the router asked, strips) the generated
  // tokens' routed experts from the decode leg's 200 body.
  std::optional<DecodeExpertsTap> decode_tap;
  // The answer must end now: the drain deadline or the request's own passed.
  bool ended() const { return drain_expired || deadline_expired; }
  void CancelUpstream() {
    if (upstream) {
      boost::system::error_code ec;
      upstream->socket().cancel(ec);
    }
    if (backoff) backoff->cancel();
  }
};

// How an upstream exchange ended when no whole response arrived.
enum class LegError { kNone, kConnect, kTimeout, kClosed, kBodyLimit, kCancelled, kTransport };

inline std::string_view LegErrorName(LegError e) {
  switch (e) {
    case LegError::kNone:
      return "none";
    case LegError::kConnect:
      return "connect";
    case LegError::kTimeout:
      return "timeout";
    case LegError::kClosed:
      return "closed";
    case LegError::kBodyLimit:
      return "body_limit";
    case LegError::kCancelled:
      return "cancelled";
    default:
      return "transport";
  }
}

struct UpResult {
  LegError error = LegError::kNone;  // kNone: status, body and content_type hold the response
  std::string detail;                // what failed, for messages, when error != kNone
  int status = 0;
  std::string body;
  std::string content_type;
  bool ok() const { return error == LegError::kNone; }
};

inline constexpr int kStatusCodes[] = {200, 400, 401, 403, 404, 405, 413,
                                       429, 499, 500, 502, 503, 504};

class ProxyImpl final : public Proxy {
 public:
  ProxyImpl(ServeOptions o, const Clock& clock)
      : o_(std::move(o)),
        clock_(clock),
        retry_(RetryOptionsOf(o_)),
        admission_(clock_, o_.max_in_flight, o_.admission_queue) {
    for (size_t i = 0; i < std::size(kStatusCodes); ++i) responses_[i] = 0;
  }

  Status Init();

  int port() const override { return port_; }

  Status Run() override;

  // Runs one I/O thread's event loop. With busy polling, the thread keeps polling for
  // busy_poll_us after its last event before it blocks in epoll: a sleeping thread woken by a
  // packet costs tens of microseconds on a virtual machine, and a request wakes the proxy three
  // times or more.
  void RunLoop(asio::io_context& ioc);

  std::vector<WorkerCheck> SelfCheck() override;

  void Shutdown() override;

 private:
  // ---- per-thread state ------------------------------------------------------------------

  // What each I/O thread owns: its upstream connection pool, its routing-policy instance and a
  // random source. Found from the executor a coroutine runs on (no thread_local: two proxies in
  // one process, as in tests, never share a slot).
  struct ThreadState {
    ThreadState(asio::io_context* c, uint64_t seed) : ioc(c), policy(seed), rng(seed ^ 0x51u) {}
    asio::io_context* ioc;
    ConnectionPool pool;
    PolicySlot policy;
    Rng rng;
  };

  ThreadState& StateOf(const asio::any_io_executor& ex);

  std::shared_ptr<const Snapshot> Snap() const { return cluster_->Snap(); }

  Decision RouteDecode(ThreadState& ts, const Snapshot& s, const ExpertCounts* counts,
                       std::span<const uint8_t> excluded = {}, std::string_view label = {});

  // Counts what a prefill answer carried (Worker::CountSignature) and, when a warning is due,
  // says why ELDR has no signature from it.
  void RecordSignature(Worker& w, const PrefillResult& pr);

  std::string NoSignatureHint() const;

  // A prefill answer to `req`, whose rows were asked from `start`, parsed with the configured
  // model, payload limit and signature-source pin.
  Result<PrefillResult> ParsePrefill(std::string_view body, const ClientRequest& req,
                                     int64_t start) const {
    PrefillRequestInfo info;
    info.prompt_tokens =
        req.prompt_tokens.empty() ? -1 : static_cast<int64_t>(req.prompt_tokens.size());
    info.routed_experts_start = start;
    info.pin = signature_pin_;
    return ParsePrefillResponse(body, geometry_, payload_opts_, info);
  }

  void CountResponse(int status);

  // Admission in front of max_in_flight (eldr/server/admission.h), waiting on an Asio timer.
  enum class Admission { kAdmitted, kQueueFull, kTimedOut, kShutdown };
  // `timeout_ms`: admission_timeout_ms, clamped to the request's deadline.
  awaitable<Admission> Admit(asio::any_io_executor ex, int64_t timeout_ms);
  void ReleaseSlot();

  // Every time the proxy reads (shadows net::NowUs in its members): the injected clock.
  int64_t NowUs() const { return clock_.NowUs(); }

  // A leg's timeout `ms` clamped to the request's deadline.
  std::chrono::milliseconds Budget(const RequestCtx& ctx, int64_t ms) const {
    return std::chrono::milliseconds(ctx.deadline.ClampMs(ms));
  }
  // After a failed upstream operation: a clamped timer that fired means the deadline passed.
  static void NoteDeadline(RequestCtx& ctx) {
    if (ctx.deadline.Expired()) ctx.deadline_expired = true;
  }
  // The answer to a request ended by the drain (503) or its deadline (504) before its first
  // byte; and the terminal SSE event of a stream ended after it.
  awaitable<void> WriteEnded(beast::tcp_stream& client, RequestCtx& ctx);
  std::string EndedSseEvent(const RequestCtx& ctx) const;
  std::string DeadlineMessage(const RequestCtx& ctx) const {
    return fmt::format("the request deadline ({} ms) passed before the answer ended",
                       ctx.budget_ms);
  }
  // Waits `us` before a retry; the client leaving, the drain or the deadline cut it short. False
  // when the flow must stop instead of retrying: the client left, or the drain or the deadline
  // ended the request (its ending is written).
  awaitable<bool> WaitBeforeRetry(beast::tcp_stream& client, RequestCtx& ctx, int64_t us);

  // What a request still in flight when drain_timeout_ms passes is told.
  std::string DrainMessage() const {
    return fmt::format(
        "the router is shutting down: drain_timeout_ms ({}) passed before the answer ended",
        o_.drain_timeout_ms);
  }

  // ---- accept / session ---------------------------------------------------------------------

  awaitable<void> Accept();

  awaitable<void> WaitForShutdown();

  // metrics_port: GET /metrics and /liveness only, on the first I/O thread.
  awaitable<void> AcceptMetrics();
  awaitable<void> MetricsSession(tcp::socket sock);

  awaitable<void> Session(tcp::socket sock);

  // `count`: a response to a completion request (eldr_responses_total). `extra_headers`: complete
  // header lines added to the head (net::ResponseHead). `ctx`, if given, records the status,
  // bytes and times for the access log and the per-decoder histograms.
  awaitable<bool> WriteResponse(beast::tcp_stream& client, int status, std::string body,
                                std::string_view content_type, bool keep_alive = true,
                                bool count = true, std::string_view extra_headers = {},
                                RequestCtx* ctx = nullptr);

  awaitable<bool> WriteJsonError(beast::tcp_stream& client, int status, std::string_view message,
                                 bool keep_alive = true, bool count = true,
                                 std::string_view extra_headers = {}, RequestCtx* ctx = nullptr);

  // 405 naming the allowed method in `Allow` (RFC 9110 §15.5.6).
  awaitable<bool> WriteMethodNotAllowed(beast::tcp_stream& client, std::string_view target,
                                        std::string_view allow, bool count);

  awaitable<bool> Handle(beast::tcp_stream& client, beast::flat_buffer& buf,
                         http::request<http::string_body>& req, bool loopback);

  awaitable<bool> HandleHealth(beast::tcp_stream& client);

  // ---- the proxied request ---------------------------------------------------------------------

  awaitable<bool> HandleCompletion(beast::tcp_stream& client, beast::flat_buffer& buf,
                                   http::request<http::string_body>& req, Endpoint ep);

  awaitable<void> WatchClient(beast::tcp_stream& client, beast::flat_buffer& buf, RequestCtx& ctx);

  void FinishRequest(beast::tcp_stream& client, RequestCtx& ctx);

  awaitable<void> Proxied(beast::tcp_stream& client, const ClientRequest& req,
                          const std::string& rid, const std::string& path,
                          std::shared_ptr<const Snapshot> snap, RequestCtx& ctx);

  std::vector<uint8_t> PrefillAvailability(const Snapshot& s) const;

  std::vector<int64_t> PrefillLoads(const Snapshot& s) const;

  awaitable<void> ProxiedVllm(beast::tcp_stream& client, const ClientRequest& req,
                              const std::string& rid, const std::string& path, const Snapshot& s,
                              RequestCtx& ctx);

  awaitable<void> ProxiedSglang(beast::tcp_stream& client, const ClientRequest& req,
                                const std::string& rid, const std::string& path, const Snapshot& s,
                                RequestCtx& ctx);

  // One read of a response body into `chunk`: the error and the bytes read.
  awaitable<std::pair<boost::system::error_code, size_t>> ReadPiece(
      beast::tcp_stream& conn, beast::flat_buffer& b,
      http::response_parser<http::buffer_body>& parser, char* chunk, size_t size,
      const RequestCtx& ctx);

  // Returns a finished upstream connection to the pool when the worker keeps it alive.
  void Recycle(Worker& w, beast::tcp_stream& conn, bool keep_alive);

  // Opens (or, with `pooled`, reuses an idle) upstream connection to `w` within
  // connect_timeout_ms (clamped to the request's deadline). The retry after a pooled connection
  // turned out dead passes pooled = false: the pool's other idle connections to `w` were opened
  // to the same process and are likely dead too (a restarted engine).
  awaitable<std::optional<beast::tcp_stream>> Connect(Worker& w, bool* reused,
                                                      const RequestCtx& ctx, bool pooled);

  // Writes a POST of `body` to `w` on `conn`: one head and the body, gathered into one send.
  awaitable<boost::system::error_code> WritePost(beast::tcp_stream& conn, Worker& w,
                                                 const std::string& path, const std::string& body,
                                                 const std::string& rid);

  // A whole request/response exchange (the prefill leg). A pooled connection that fails before
  // any response byte is retried once on a fresh one (the engine never saw the request).
  awaitable<UpResult> Post(Worker& w, const std::string& path, const std::string& body,
                           const std::string& rid, int timeout_ms, RequestCtx& ctx);

  // The decode leg: response headers within first_byte_timeout, then the body relayed to the
  // client as it arrives (SSE events untouched).
  // kRetry: the leg failed before the client got any byte, retryably (retry.h), with a retry
  // left and time before the deadline: nothing was written; wait `wait_us` and try another
  // decoder. kDone: the client has its answer (or error), or is gone.
  enum class RelayOutcome { kDone, kRetry };
  struct RelayResult {
    RelayOutcome outcome = RelayOutcome::kDone;
    int64_t wait_us = 0;
  };
  static constexpr int kNoRetry = std::numeric_limits<int>::max();

  // The relayed body feeds ctx.tokens (output length, for the capture and the accounting).
  // `retries_done`: decode retries already made for this request (kNoRetry: none allowed, as
  // in the SGLang flow, whose prefill leg is bound to this decoder).
  awaitable<RelayResult> Relay(beast::tcp_stream& client, std::shared_ptr<Worker> wp,
                               const std::string& path, const std::string& body,
                               const std::string& rid, bool stream, RequestCtx& ctx,
                               int retries_done);

  // Whether a request is captured, drawn when it starts (capture.fraction) so that its decode
  // leg can be asked for routed experts; false, uncounted, when the capture is off.
  bool SampleCapture(ThreadState& ts);
  // Once a flow has answered: a sampled request whose answer the client got whole is offered to
  // the capture with its prompt's counts (null: its prefill left no signature, which is counted
  // instead) and the decode counts ctx.decode_tap read. `prompt_tokens` < 0: estimated from the
  // counts (their rows / (moe_layers x top_k)).
  void MaybeCapture(bool sampled, const ClientRequest& req, const std::string& rid,
                    const ExpertCounts* prompt_counts, int64_t prompt_tokens, const Worker& decoder,
                    const RequestCtx& ctx);
  // A decode tap for a sampled request, or none.
  void MaybeTapDecode(bool sampled, DecodeExpertsFormat format, const ClientRequest& req,
                      RequestCtx& ctx) const;

  // ---- self-check ----------------------------------------------------------------------------

  awaitable<void> CheckAll(std::vector<WorkerCheck>* out);

  // One short request through prefill worker `p` and a decode worker, as the configured flow
  // sends it; the decode leg completes the handoff so that the prefill engine frees its KV.
  awaitable<WorkerCheck> CheckOne(const Snapshot& s, size_t p);

  // ---- health checks -------------------------------------------------------------------------

  awaitable<void> HealthLoop();

  awaitable<bool> Probe(Worker& w);

  // ---- admin -----------------------------------------------------------------------------------

  awaitable<bool> AdminError(beast::tcp_stream& client, int status, std::string_view message);

  awaitable<bool> HandleAdmin(beast::tcp_stream& client, http::request<http::string_body>& req,
                              bool loopback);

  // ---- metrics ---------------------------------------------------------------------------------

  std::string RenderMetrics();

  ServeOptions o_;
  const Clock& clock_;
  const RetryOptions retry_;
  AdmissionQueue admission_;  // slots held: the requests being served
  ModelGeometry geometry_;
  std::string served_model_;                    // what /v1/models lists
  std::shared_ptr<spdlog::logger> access_log_;  // null: access_log off
  // The request's histograms on its decode worker and its access-log line.
  void FinishAccounting(const RequestCtx& ctx, const std::string& rid, std::string_view route,
                        bool stream);
  std::vector<std::string> api_keys_;  // client keys (api_keys + api_keys_file); empty: open
  const double process_start_unix_s_ =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  PayloadOptions payload_opts_;
  std::optional<SignatureSource> signature_pin_;
  std::unique_ptr<Cluster> cluster_;
  std::unique_ptr<PromptSignal> signal_;
  // Requests being proxied, with the executor that owns each (drain: their upstream legs are
  // cancelled on their own thread when drain_timeout_ms passes).
  Mutex active_mu_;
  std::vector<std::pair<RequestCtx*, asio::any_io_executor>> active_ctx_
      ELDR_GUARDED_BY(active_mu_);
  std::unique_ptr<CaptureWriter> capture_;    // null: capture off
  std::unique_ptr<OnlineRefitter> refitter_;  // null: refit off
  std::vector<std::unique_ptr<asio::io_context>> iocs_;
  std::vector<std::unique_ptr<ThreadState>> states_;  // after iocs_: pools destroyed first
  std::unique_ptr<tcp::acceptor> acceptor_;
  std::unique_ptr<tcp::acceptor> metrics_acceptor_;  // null: metrics_port off
  std::unique_ptr<asio::steady_timer> shutdown_timer_;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> admission_rejected_[2] = {};  // queue full, timed out
  Histogram admission_wait_{{0.001, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30}};
  std::atomic<uint64_t> responses_[std::size(kStatusCodes)];
  std::atomic<uint64_t> other_responses_{0}, prefill_retries_{0}, malformed_{0}, midstream_{0},
      disconnects_{0}, decode_retries_{0}, partial_signatures_{0}, capture_sampled_out_{0},
      capture_no_signature_{0}, deadline_exceeded_{0};
  std::atomic<uint64_t> capture_decode_[3] = {};  // recorded, absent, rejected
  Histogram retry_backoff_{{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}};
};

}  // namespace proxy_internal
}  // namespace eldr::server
