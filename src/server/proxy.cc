// The proxy: one of the three translation units that include Boost.Beast (src/net/http.h).
#include "eldr/server/proxy.h"

#include <spdlog/spdlog.h>

#include <boost/json.hpp>
#include <csignal>
#include <limits>
#include <thread>

#include "../net/http.h"
#include "eldr/net/wire.h"
#include "eldr/block_hash.h"
#include "eldr/geometry.h"
#include "eldr/policy.h"
#include "eldr/rng.h"
#include "eldr/server/balance.h"
#include "eldr/server/cluster.h"
#include "eldr/server/metrics.h"
#include "eldr/server/pd.h"
#include "eldr/server/prompt_signal.h"
#include "eldr/signature_cache.h"
#include "eldr/signature_space.h"

namespace eldr::server {

struct UpstreamAddress {
  net::tcp::endpoint ep;
};

namespace {

using namespace eldr::net;  // NOLINT(google-build-using-namespace): Beast vocabulary
using namespace boost::asio::experimental::awaitable_operators;  // NOLINT
namespace json = boost::json;

// Per-request cancellation: the watcher of the client connection cancels whichever upstream
// socket is open when the client goes away; the proxied flow cancels the watcher when it ends.
struct RequestCtx {
  beast::tcp_stream* upstream = nullptr;
  bool client_gone = false;
  bool finished = false;
  bool response_complete = false;  // the client has its whole answer (background legs may run)
  std::optional<asio::steady_timer> done;  // set while a pipelined request waits for this one
  void CancelUpstream() {
    if (upstream) {
      boost::system::error_code ec;
      upstream->socket().cancel(ec);
    }
  }
};

// How an upstream exchange ended when no whole response arrived.
enum class LegError { kNone, kConnect, kTimeout, kClosed, kBodyLimit, kCancelled, kTransport };

std::string_view LegErrorName(LegError e) {
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

constexpr int kStatusCodes[] = {200, 400, 401, 403, 404, 405, 413, 429, 499, 500, 502, 503, 504};

class ProxyImpl final : public Proxy {
 public:
  explicit ProxyImpl(ServeOptions o) : o_(std::move(o)) {
    for (size_t i = 0; i < std::size(kStatusCodes); ++i) responses_[i] = 0;
  }

  Status Init() {
    ELDR_RETURN_IF_ERROR(o_.Validate());
    ELDR_ASSIGN_OR_RETURN(geometry_, FindModel(o_.model));
    payload_opts_.max_decoded_bytes = static_cast<size_t>(o_.max_payload_bytes);
    ELDR_ASSIGN_OR_RETURN(signature_pin_, ParseSignatureSourcePin(o_.signature_source));
    ELDR_ASSIGN_OR_RETURN(cluster_,
                          Cluster::Create(o_, geometry_, [](const WorkerSpec& w)
                                                             -> Result<std::shared_ptr<const UpstreamAddress>> {
                            ELDR_ASSIGN_OR_RETURN(tcp::endpoint ep, Resolve(w.host, w.port));
                            return std::make_shared<const UpstreamAddress>(UpstreamAddress{ep});
                          }));
    {
      auto c = SignatureCache::Create(geometry_.moe_layers, geometry_.experts, o_.cache);
      if (!c) return c.error();
      signal_ = std::make_unique<PromptSignal>(std::move(*c), o_.cache.memory_budget_bytes);
    }
    const int threads =
        o_.threads > 0 ? o_.threads : std::max(1u, std::thread::hardware_concurrency());
    for (int i = 0; i < threads; ++i) {
      iocs_.push_back(std::make_unique<asio::io_context>(1));
      states_.push_back(std::make_unique<ThreadState>(
          iocs_.back().get(), static_cast<uint64_t>(NowUs()) * 0x9E3779B97F4A7C15ull + i));
    }
    acceptor_ = std::make_unique<tcp::acceptor>(*iocs_[0]);
    shutdown_timer_ = std::make_unique<asio::steady_timer>(*iocs_[0]);
    ELDR_ASSIGN_OR_RETURN(tcp::endpoint listen, Resolve(o_.host, o_.port));
    boost::system::error_code ec;
    acceptor_->open(listen.protocol(), ec);
    if (!ec) acceptor_->set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_->bind(listen, ec);
    if (!ec) acceptor_->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return Unavailable("cannot listen on {}:{}: {}", o_.host, o_.port, ec.message());
    port_ = acceptor_->local_endpoint().port();
    return Status::Ok();
  }

  int port() const override { return port_; }

  Status Run() override {
    asio::signal_set signals(*iocs_[0], SIGINT, SIGTERM);
    signals.async_wait([this](boost::system::error_code ec, int sig) {
      if (!ec) {
        spdlog::info("event=signal signal={} action=drain", sig);
        Shutdown();
      }
    });
    asio::co_spawn(*iocs_[0], Accept(), asio::detached);
    if (o_.health_interval_ms > 0) asio::co_spawn(*iocs_[0], HealthLoop(), asio::detached);
    std::vector<std::thread> threads;
    std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
    for (auto& ioc : iocs_) guards.push_back(asio::make_work_guard(*ioc));
    for (size_t i = 1; i < iocs_.size(); ++i) {
      threads.emplace_back([this, i] { RunLoop(*iocs_[i]); });
    }
    spdlog::info("event=listening host={} port={} backend={} policy={} prefill={} decode={}",
                 o_.host, port_, BackendName(o_.backend), o_.policy, o_.prefill.size(),
                 o_.decode.size());
    asio::co_spawn(*iocs_[0], WaitForShutdown(), [&](std::exception_ptr) {
      guards.clear();
      for (auto& ioc : iocs_) ioc->stop();
    });
    RunLoop(*iocs_[0]);
    for (auto& t : threads) t.join();
    spdlog::info("event=stopped active={}", active_.load());
    return Status::Ok();
  }

  // Runs one I/O thread's event loop. With busy polling, the thread keeps polling for
  // busy_poll_us after its last event before it blocks in epoll: a sleeping thread woken by a
  // packet costs tens of microseconds on a virtual machine, and a request wakes the proxy three
  // times or more.
  void RunLoop(asio::io_context& ioc) {
    if (o_.busy_poll_us <= 0) {
      ioc.run();
      return;
    }
    int64_t last = NowUs();
    while (!ioc.stopped()) {
      if (ioc.poll() > 0) {
        last = NowUs();
      } else if (NowUs() - last > o_.busy_poll_us) {
        ioc.run_one();
        last = NowUs();
      }
    }
  }

  std::vector<WorkerCheck> SelfCheck() override {
    std::vector<WorkerCheck> out;
    asio::co_spawn(*iocs_[0], CheckAll(&out), asio::detached);
    iocs_[0]->run();
    iocs_[0]->restart();
    return out;
  }

  void Shutdown() override {
    asio::post(*iocs_[0], [this] {
      if (stopping_.exchange(true)) return;
      boost::system::error_code ec;
      acceptor_->close(ec);
      shutdown_timer_->cancel();
    });
  }

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

  ThreadState& StateOf(const asio::any_io_executor& ex) {
    const auto* ctx = &asio::query(ex, asio::execution::context);
    for (auto& st : states_) {
      if (st->ioc == ctx) return *st;
    }
    return *states_[0];
  }

  std::shared_ptr<const Snapshot> Snap() const { return cluster_->Snap(); }

  Decision RouteDecode(ThreadState& ts, const Snapshot& s, const ExpertCounts* counts,
                       std::span<const uint8_t> excluded = {}) {
    return cluster_->RouteDecode(s, ts.policy, counts, excluded, NowUs());
  }

  static bool AnyAvailable(const std::vector<std::shared_ptr<Worker>>& ws) {
    const int64_t now = NowUs();
    for (const auto& w : ws) {
      if (w->Available(now)) return true;
    }
    return false;
  }

  // Counts what a prefill answer carried and, at most once a minute per worker, says why ELDR
  // has no signature from it: a misconfigured engine must never turn ELDR into JSQ silently.
  void RecordSignature(Worker& w, const PrefillResult& pr) {
    w.signatures[static_cast<int>(pr.source)].fetch_add(1, std::memory_order_relaxed);
    w.last_source.store(static_cast<int>(pr.source), std::memory_order_relaxed);
    if (pr.partial) w.signatures_partial.fetch_add(1, std::memory_order_relaxed);
    if (!pr.rejected.empty()) w.signatures_rejected.fetch_add(1, std::memory_order_relaxed);
    if (pr.source != SignatureSource::kNone && !pr.partial) return;
    const int64_t now = NowUs();
    int64_t last = w.last_signature_warning_us.load(std::memory_order_relaxed);
    if (now - last < int64_t{60} * 1000000 ||
        !w.last_signature_warning_us.compare_exchange_strong(last, now)) {
      return;
    }
    if (!pr.rejected.empty()) {
      spdlog::warn(
          "event=signature_rejected worker={} reason=\"{}\" hint=\"the routed experts do not "
          "match the prompt; check that the engine serves the model of --model and see "
          "docs/serve.md\"",
          w.spec.url, pr.rejected);
    } else if (pr.partial) {
      spdlog::warn(
          "event=signature_partial worker={} hint=\"the engine returned no routes for some prompt "
          "positions (-1 rows); the signature uses the rest\"",
          w.spec.url);
    } else {
      spdlog::warn("event=no_signature worker={} hint=\"{}\"", w.spec.url, NoSignatureHint());
    }
  }

  std::string NoSignatureHint() const {
    if (o_.backend == Backend::kSglang) {
      return "prefill returned no routed experts: start SGLang with --enable-return-routed-experts "
             "(OpenAI responses carry sglext since PR #17648, PD prefill since PR #22916)";
    }
    return "prefill returned no routed experts: start vLLM with --enable-return-routed-experts "
           "(vLLM <= 0.21 accepts it with a KV connector; later releases reject the combination "
           "at startup, see docs/serve.md) or run the ELDR engine hooks";
  }

  void CountResponse(int status) {
    for (size_t i = 0; i < std::size(kStatusCodes); ++i) {
      if (kStatusCodes[i] == status) {
        responses_[i].fetch_add(1, std::memory_order_relaxed);
        return;
      }
    }
    other_responses_.fetch_add(1, std::memory_order_relaxed);
  }

  // ---- accept / session ---------------------------------------------------------------------

  awaitable<void> Accept() {
    size_t next = 0;
    while (!stopping_) {
      auto& ioc = *iocs_[next++ % iocs_.size()];
      auto [ec, sock] = co_await acceptor_->async_accept(ioc, kTuple);
      if (ec) {
        if (stopping_ || ec == asio::error::operation_aborted) break;
        continue;  // e.g. EMFILE: keep serving the connections we have
      }
      asio::co_spawn(ioc, Session(std::move(sock)), asio::detached);
    }
  }

  awaitable<void> WaitForShutdown() {
    shutdown_timer_->expires_at(asio::steady_timer::time_point::max());
    co_await shutdown_timer_->async_wait(kTuple);
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(o_.drain_timeout_ms);
    asio::steady_timer t(*iocs_[0]);
    while (active_.load() > 0 && std::chrono::steady_clock::now() < deadline) {
      t.expires_after(std::chrono::milliseconds(20));
      co_await t.async_wait(kTuple);
    }
    if (active_.load() > 0) {
      spdlog::warn("event=drain_timeout abandoned={}", active_.load());
    }
  }

  awaitable<void> Session(tcp::socket sock) {
    boost::system::error_code ec0;
    const auto peer = sock.remote_endpoint(ec0);
    const bool loopback = !ec0 && peer.address().is_loopback();
    beast::tcp_stream client(std::move(sock));
    SetNoDelay(client);
    beast::flat_buffer buf;
    while (!stopping_) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(static_cast<uint64_t>(o_.max_body_bytes));
      client.expires_after(std::chrono::seconds(300));
      auto [hec, hn] = co_await http::async_read_header(client, buf, parser, kTuple);
      boost::system::error_code ec = hec;
      if (!ec) {
        // curl and others wait up to a second for "100 Continue" before sending a large body.
        const auto expect = parser.get()[http::field::expect];
        if (beast::iequals(expect, "100-continue")) {
          static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
          auto [cec, cn] = co_await asio::async_write(client, asio::buffer(kContinue), kTuple);
          ec = cec;
        }
      }
      if (!ec) {
        auto [rec, rn] = co_await http::async_read(client, buf, parser, kTuple);
        ec = rec;
      }
      if (ec == http::error::body_limit) {
        co_await WriteJsonError(
            client, 413, fmt::format("request body exceeds {} bytes", o_.max_body_bytes), false);
        break;
      }
      if (ec) break;
      client.expires_never();
      auto req = parser.release();
      const bool keep = req.keep_alive();
      const bool ok = co_await Handle(client, buf, req, loopback);
      if (!ok || !keep) break;
    }
    boost::system::error_code ec;
    client.socket().shutdown(tcp::socket::shutdown_both, ec);
  }

  // `count`: a response to a completion request (eldr_responses_total).
  awaitable<bool> WriteResponse(beast::tcp_stream& client, int status, std::string body,
                                std::string_view content_type, bool keep_alive = true,
                                bool count = true) {
    const std::string head =
        ResponseHead(status, content_type, body.size(), keep_alive && !stopping_);
    if (count) CountResponse(status);
    const std::array<asio::const_buffer, 2> bufs{asio::buffer(head), asio::buffer(body)};
    auto [ec, n] = co_await asio::async_write(client, bufs, kTuple);
    co_return !ec;
  }

  awaitable<bool> WriteJsonError(beast::tcp_stream& client, int status, std::string_view message,
                                 bool keep_alive = true, bool count = true) {
    co_return co_await WriteResponse(client, status,
                                     OpenAiErrorBody(status, message, ErrorTypeFor(status)),
                                     "application/json", keep_alive, count);
  }

  awaitable<bool> Handle(beast::tcp_stream& client, beast::flat_buffer& buf,
                         http::request<http::string_body>& req, bool loopback) {
    std::string_view target(req.target().data(), req.target().size());
    target = target.substr(0, target.find('?'));
    const auto method = req.method();
    if (target == "/v1/completions" || target == "/v1/chat/completions") {
      if (method != http::verb::post) co_return co_await WriteJsonError(client, 405, "use POST");
      co_return co_await HandleCompletion(
          client, buf, req, target == "/v1/completions" ? Endpoint::kCompletions : Endpoint::kChat);
    }
    if (target == "/health") co_return co_await HandleHealth(client);
    if (target == "/metrics") {
      co_return co_await WriteResponse(client, 200, RenderMetrics(),
                                       "text/plain; version=0.0.4; charset=utf-8", true, false);
    }
    if (target == "/v1/models") {
      json::object m{{"id", o_.model}, {"object", "model"}, {"owned_by", "eldr"}, {"created", 0}};
      json::object res{{"object", "list"}, {"data", json::array{m}}};
      co_return co_await WriteResponse(client, 200, json::serialize(res), "application/json", true,
                                       false);
    }
    if (target.starts_with("/admin/")) co_return co_await HandleAdmin(client, req, loopback);
    co_return co_await WriteJsonError(client, 404, fmt::format("no route for {}", target), true,
                                      false);
  }

  awaitable<bool> HandleHealth(beast::tcp_stream& client) {
    auto s = Snap();
    const int64_t now = NowUs();
    int p = 0, d = 0;
    for (const auto& w : s->prefill) p += w->Available(now);
    for (const auto& w : s->decode) d += w->Available(now);
    const bool ok = p > 0 && d > 0 && !stopping_;
    json::object body{{"status", ok ? "ok" : "unavailable"},
                      {"prefill_available", p},
                      {"decode_available", d},
                      {"draining", stopping_.load()}};
    co_return co_await WriteResponse(client, ok ? 200 : 503, json::serialize(body),
                                     "application/json", true, false);
  }

  // ---- the proxied request ---------------------------------------------------------------------

  awaitable<bool> HandleCompletion(beast::tcp_stream& client, beast::flat_buffer& buf,
                                   http::request<http::string_body>& req, Endpoint ep) {
    if (stopping_) co_return co_await WriteJsonError(client, 503, "the router is shutting down");
    if (active_.fetch_add(1) >= o_.max_in_flight) {
      active_.fetch_sub(1);
      co_return co_await WriteJsonError(
          client, 429,
          fmt::format("too many requests in flight (max_in_flight={})", o_.max_in_flight));
    }
    struct Guard {
      std::atomic<int64_t>& a;
      ~Guard() { a.fetch_sub(1); }
    } guard{active_};
    auto parsed = ParseClientRequest(ep, req.body());
    if (!parsed) co_return co_await WriteJsonError(client, 400, parsed.error().message());
    if (parsed->n > 1) {
      co_return co_await WriteJsonError(client, 400,
                                        "n > 1 is not supported with PD disaggregation (one KV "
                                        "handoff has one consumer)");
    }
    std::string rid;
    if (auto it = req.find("X-Request-Id"); it != req.end() && !it->value().empty()) {
      rid = std::string(it->value());
    } else {
      rid = fmt::format("eldr-{:016x}", StateOf(client.get_executor()).rng.Next());
    }
    const std::string path(req.target().data(), req.target().size());
    RequestCtx ctx;
    auto snap = Snap();
    co_await (Proxied(client, *parsed, rid, path, snap, ctx) || WatchClient(client, buf, ctx));
    if (ctx.client_gone) {
      disconnects_.fetch_add(1, std::memory_order_relaxed);
      CountResponse(499);
      spdlog::debug("event=client_disconnect request_id={}", rid);
    }
    co_return !ctx.client_gone;
  }

  awaitable<void> WatchClient(beast::tcp_stream& client, beast::flat_buffer& buf, RequestCtx& ctx) {
    co_await asio::this_coro::throw_if_cancelled(false);
    auto [ec, n] = co_await client.socket().async_read_some(buf.prepare(4096), kTuple);
    if (!ec && n > 0) buf.commit(n);  // a pipelined next request: keep it for the session
    if ((!ec && n > 0) || (!ctx.finished && ctx.response_complete)) {
      // Nothing to cancel: let the proxied flow finish its remaining legs.
      if (ctx.finished) co_return;
      ctx.done.emplace(client.get_executor());
      ctx.done->expires_at(asio::steady_timer::time_point::max());
      co_await ctx.done->async_wait(kTuple);
      co_return;
    }
    if (ctx.finished) co_return;
    ctx.client_gone = true;
    ctx.CancelUpstream();
  }

  void FinishRequest(beast::tcp_stream& client, RequestCtx& ctx) {
    ctx.finished = true;
    ctx.upstream = nullptr;
    if (ctx.done) ctx.done->cancel();
    boost::system::error_code ec;
    client.socket().cancel(ec);
  }

  awaitable<void> Proxied(beast::tcp_stream& client, const ClientRequest& req,
                          const std::string& rid, const std::string& path,
                          std::shared_ptr<const Snapshot> snap, RequestCtx& ctx) {
    // Cancellation is handled explicitly (ctx), never by exceptions on the request path.
    co_await asio::this_coro::throw_if_cancelled(false);
    if (o_.backend == Backend::kVllm) {
      co_await ProxiedVllm(client, req, rid, path, *snap, ctx);
    } else {
      co_await ProxiedSglang(client, req, rid, path, *snap, ctx);
    }
    FinishRequest(client, ctx);
  }

  std::vector<uint8_t> PrefillAvailability(const Snapshot& s) const {
    const int64_t now = NowUs();
    std::vector<uint8_t> a(s.prefill.size());
    for (size_t i = 0; i < a.size(); ++i) a[i] = s.prefill[i]->Available(now);
    return a;
  }

  std::vector<int64_t> PrefillLoads(const Snapshot& s) const {
    std::vector<int64_t> l(s.prefill.size());
    for (size_t i = 0; i < l.size(); ++i) l[i] = s.prefill[i]->in_flight.load();
    return l;
  }

  awaitable<void> ProxiedVllm(beast::tcp_stream& client, const ClientRequest& req,
                              const std::string& rid, const std::string& path, const Snapshot& s,
                              RequestCtx& ctx) {
    // Known prefix: with client-sent token ids the engine is asked only for the unknown suffix.
    const PromptSignal::Prompt prompt = signal_->Begin(req);
    const int64_t start = signal_->KnownTokens(prompt);
    // With no decoder to take the KV, a NIXL prefill would only strand blocks on the engine.
    if (!AnyAvailable(s.decode)) {
      co_await WriteJsonError(client, 503, "no decode worker is available");
      co_return;
    }
    const std::string pbody = VllmPrefillBody(req, start);
    const uint64_t key = PrefixHash(prompt.key, static_cast<size_t>(o_.prefix_bytes));
    std::vector<uint8_t> excluded(s.prefill.size());
    std::optional<PrefillResult> pr;
    std::string last_error = "no prefill worker is available";
    for (int attempt = 0; attempt < o_.prefill_attempts && !pr; ++attempt) {
      const int p = s.ring->Pick(key, PrefillLoads(s), PrefillAvailability(s), excluded,
                                 o_.prefill_load_factor);
      if (p < 0) break;
      if (attempt > 0) prefill_retries_.fetch_add(1, std::memory_order_relaxed);
      Worker& w = *s.prefill[p];
      Ticket ticket(s.prefill[p]);
      const int64_t t0 = NowUs();
      UpResult up = co_await Post(w, path, pbody, rid, o_.prefill_timeout_ms, ctx);
      if (ctx.client_gone) co_return;
      if (up.error == LegError::kBodyLimit) {
        // Another worker would send as much: not retried.
        w.errors.fetch_add(1, std::memory_order_relaxed);
        co_await WriteJsonError(client, 502, up.detail);
        co_return;
      }
      if (!up.ok() || up.status >= 500) {
        w.errors.fetch_add(1, std::memory_order_relaxed);
        w.breaker.OnFailure(NowUs());
        excluded[p] = 1;
        last_error = up.ok() ? fmt::format("prefill {} answered {}", w.spec.url, up.status)
                             : fmt::format("prefill {} failed: {}", w.spec.url, up.detail);
        spdlog::warn("event=prefill_failed request_id={} worker={} kind={} error=\"{}\"", rid,
                     w.spec.url, up.ok() ? "status" : LegErrorName(up.error), last_error);
        continue;
      }
      w.breaker.OnSuccess();
      w.latency.Observe(static_cast<double>(NowUs() - t0) * 1e-6);
      if (up.status != 200) {
        // The engine rejected the request itself (bad parameters): the client's answer.
        // The content type is a named value: GCC 12 destroys a temporary std::string made by a
        // conditional expression inside a co_await twice (the double free of a relayed 4xx).
        const std::string type = up.content_type.empty() ? "application/json" : up.content_type;
        co_await WriteResponse(client, up.status, std::move(up.body), type);
        co_return;
      }
      PrefillRequestInfo info;
      info.prompt_tokens =
          req.prompt_tokens.empty() ? -1 : static_cast<int64_t>(req.prompt_tokens.size());
      info.routed_experts_start = start;
      info.pin = signature_pin_;
      auto parsed = ParsePrefillResponse(up.body, geometry_, payload_opts_, info);
      if (!parsed) {
        w.errors.fetch_add(1, std::memory_order_relaxed);
        malformed_.fetch_add(1, std::memory_order_relaxed);
        w.breaker.OnFailure(NowUs());
        const std::string msg = fmt::format("prefill worker {} returned a malformed response: {}",
                                            w.spec.url, parsed.error().message());
        spdlog::warn("event=malformed_prefill request_id={} error=\"{}\"", rid, msg);
        co_await WriteJsonError(client, 502, msg);
        co_return;
      }
      RecordSignature(w, *parsed);
      pr = std::move(*parsed);
    }
    if (!pr) {
      co_await WriteJsonError(client, 503, last_error);
      co_return;
    }
    const PromptSignal::Signal sig = signal_->FromPrefill(prompt, *pr);
    if (sig.partial) partial_signatures_.fetch_add(1, std::memory_order_relaxed);
    const ExpertCounts* cp = sig.counts ? &*sig.counts : nullptr;
    // The decode leg reuses the prompt's token ids (completions), so it never re-tokenizes.
    const std::string dbody = VllmDecodeBody(req, pr->kv_transfer_params, pr->prompt_token_ids);
    // A decode worker that cannot be reached before it saw the request is skipped for another
    // (the prefill's KV stays pullable by any decoder); after that, no retry.
    std::vector<uint8_t> excluded_d(s.decode.size());
    for (int attempt = 0; attempt < 2; ++attempt) {
      const Decision d = RouteDecode(StateOf(client.get_executor()), s, cp, excluded_d);
      if (d.decoder < 0) {
        co_await WriteJsonError(client, 503, "no decode worker is available");
        co_return;
      }
      spdlog::debug("event=route request_id={} decode={} band={} fallback={} source={}", rid,
                    s.decode[d.decoder]->spec.url, d.band, d.fallback, SignatureSourceName(pr->source));
      const RelayOutcome out =
          co_await Relay(client, s.decode[d.decoder], path, dbody, rid, req.stream, ctx,
                         /*last_try=*/attempt == 1);
      if (out != RelayOutcome::kUnreachable) co_return;
      excluded_d[d.decoder] = 1;
      decode_retries_.fetch_add(1, std::memory_order_relaxed);
    }
  }

  awaitable<void> ProxiedSglang(beast::tcp_stream& client, const ClientRequest& req,
                                const std::string& rid, const std::string& path, const Snapshot& s,
                                RequestCtx& ctx) {
    // Decode is fixed before prefill: predict the signature from what is known of the prompt's
    // prefix — the signature cache's longest cached prefix when the client sent token ids, else
    // the text-prefix memo.
    const PromptSignal::Prompt prompt = signal_->Begin(req);
    const std::optional<ExpertCounts> predicted = signal_->Predict(prompt);
    ThreadState& ts = StateOf(client.get_executor());
    const Decision d = RouteDecode(ts, s, predicted ? &*predicted : nullptr);
    if (d.decoder < 0) {
      co_await WriteJsonError(client, 503, "no decode worker is available");
      co_return;
    }
    const uint64_t key = PrefixHash(prompt.key, static_cast<size_t>(o_.prefix_bytes));
    const int p =
        s.ring->Pick(key, PrefillLoads(s), PrefillAvailability(s), {}, o_.prefill_load_factor);
    if (p < 0) {
      co_await WriteJsonError(client, 503, "no prefill worker is available");
      co_return;
    }
    Bootstrap b{s.prefill[p]->spec.host,
                s.prefill[p]->spec.bootstrap_port ? s.prefill[p]->spec.bootstrap_port : 8998,
                ts.rng.Next() >> 1};
    // Both legs at once (the rendezvous needs both); the client sees the decode leg.
    RequestCtx pctx;
    Ticket pt(s.prefill[p]);
    auto prefill = [&]() -> awaitable<void> {
      Worker& w = *s.prefill[p];
      UpResult up =
          co_await Post(w, path, SglangPrefillBody(req, b), rid, o_.prefill_timeout_ms, pctx);
      pt.Release();
      if (ctx.client_gone) co_return;  // cancelled with the client, not the worker's fault
      if (!up.ok() || up.status >= 500) {
        w.errors.fetch_add(1, std::memory_order_relaxed);
        w.breaker.OnFailure(NowUs());
        co_return;
      }
      w.breaker.OnSuccess();
      if (up.status != 200) co_return;  // the decode leg answers the client
      PrefillRequestInfo info;
      info.prompt_tokens =
          req.prompt_tokens.empty() ? -1 : static_cast<int64_t>(req.prompt_tokens.size());
      info.pin = signature_pin_;
      auto parsed = ParsePrefillResponse(up.body, geometry_, payload_opts_, info);
      if (!parsed) {
        w.errors.fetch_add(1, std::memory_order_relaxed);
        malformed_.fetch_add(1, std::memory_order_relaxed);
        spdlog::warn("event=malformed_prefill request_id={} worker={} error=\"{}\"", rid,
                     w.spec.url, parsed.error().message());
        co_return;
      }
      RecordSignature(w, *parsed);
      signal_->Learn(prompt, *parsed);
    };
    auto decode = [&]() -> awaitable<void> {
      co_await Relay(client, s.decode[d.decoder], path, SglangDecodeBody(req, b), rid, req.stream,
                     ctx, true);
    };
    co_await (prefill() && decode());
  }

  // One read of a response body into `chunk`: the error and the bytes read.
  awaitable<std::pair<boost::system::error_code, size_t>> ReadPiece(
      beast::tcp_stream& conn, beast::flat_buffer& b,
      http::response_parser<http::buffer_body>& parser, char* chunk, size_t size) {
    parser.get().body().data = chunk;
    parser.get().body().size = size;
    conn.expires_after(std::chrono::milliseconds(o_.idle_timeout_ms));
    auto [ec, n] = co_await http::async_read_some(conn, b, parser, kTuple);
    if (ec == http::error::need_buffer) ec = {};
    co_return std::make_pair(ec, size - parser.get().body().size);
  }

  // Returns a finished upstream connection to the pool when the worker keeps it alive.
  void Recycle(Worker& w, beast::tcp_stream& conn, bool keep_alive) {
    if (!keep_alive) return;
    conn.expires_never();
    StateOf(conn.get_executor()).pool.Put(w.address->ep, std::move(conn));
  }

  // Opens (or reuses) an upstream connection to `w`.
  awaitable<std::optional<beast::tcp_stream>> Connect(Worker& w, bool* reused) {
    const auto ex = co_await asio::this_coro::executor;
    if (auto s = StateOf(ex).pool.Take(w.address->ep)) {
      *reused = true;
      co_return std::move(*s);
    }
    *reused = false;
    beast::tcp_stream s(ex);
    s.expires_after(std::chrono::milliseconds(o_.connect_timeout_ms));
    auto [ec] = co_await s.async_connect(w.address->ep, kTuple);
    if (ec) co_return std::nullopt;
    SetNoDelay(s);
    co_return std::move(s);
  }

  // Writes a POST of `body` to `w` on `conn`: one head and the body, gathered into one send.
  awaitable<boost::system::error_code> WritePost(beast::tcp_stream& conn, Worker& w,
                                                 const std::string& path, const std::string& body,
                                                 const std::string& rid) {
    const std::string head = UpstreamPostHead(path, w.spec.host, w.spec.port, rid, w.spec.dp_rank,
                                              body.size(), o_.upstream_api_key);
    const std::array<asio::const_buffer, 2> bufs{asio::buffer(head), asio::buffer(body)};
    auto [ec, n] = co_await asio::async_write(conn, bufs, kTuple);
    co_return ec;
  }

  // A whole request/response exchange (the prefill leg). A pooled connection that fails before
  // any response byte is retried once on a fresh one (the engine never saw the request).
  awaitable<UpResult> Post(Worker& w, const std::string& path, const std::string& body,
                           const std::string& rid, int timeout_ms, RequestCtx& ctx) {
    UpResult out;
    for (int attempt = 0; attempt < 2; ++attempt) {
      bool reused = false;
      auto conn = co_await Connect(w, &reused);
      if (!conn) {
        out.error = LegError::kConnect;
        out.detail = "connection failed";
        co_return out;
      }
      ctx.upstream = &*conn;
      conn->expires_after(std::chrono::milliseconds(timeout_ms));
      const boost::system::error_code wec = co_await WritePost(*conn, w, path, body, rid);
      if (ctx.client_gone) {
        ctx.upstream = nullptr;
        out.error = LegError::kCancelled;
        co_return out;
      }
      // Expert payloads are tens of kilobytes and up: read them in large pieces, not Beast's
      // default 512-byte first reads.
      beast::flat_buffer b;
      b.reserve(64 * 1024);
      http::response_parser<http::string_body> parser;
      parser.body_limit(static_cast<uint64_t>(o_.max_payload_bytes));
      boost::system::error_code rec = wec;
      if (!wec) {
        auto [ec, n] = co_await http::async_read(*conn, b, parser, kTuple);
        rec = ec;
      }
      ctx.upstream = nullptr;
      if (ctx.client_gone) {
        out.error = LegError::kCancelled;
        co_return out;
      }
      if (rec) {
        if (reused && !parser.got_some() && rec != beast::error::timeout) continue;
        if (rec == http::error::body_limit) {
          out.error = LegError::kBodyLimit;
          out.detail = fmt::format("worker {} sent a response beyond max_payload_bytes ({})",
                                   w.spec.url, o_.max_payload_bytes);
          co_return out;
        }
        out.error = rec == beast::error::timeout ? LegError::kTimeout : LegError::kTransport;
        out.detail = rec == beast::error::timeout ? "timed out" : rec.message();
        co_return out;
      }
      auto res = parser.release();
      out.status = res.result_int();
      if (auto it = res.find(http::field::content_type); it != res.end()) {
        out.content_type = std::string(it->value());
      }
      out.body = std::move(res.body());
      Recycle(w, *conn, res.keep_alive());
      co_return out;
    }
    out.error = LegError::kClosed;
    out.detail = "connection closed by the worker";
    co_return out;
  }

  // The decode leg: response headers within first_byte_timeout, then the body relayed to the
  // client as it arrives (SSE events untouched).
  enum class RelayOutcome { kDone, kUnreachable };

  awaitable<RelayOutcome> Relay(beast::tcp_stream& client, std::shared_ptr<Worker> wp,
                                const std::string& path, const std::string& body,
                                const std::string& rid, bool stream, RequestCtx& ctx,
                                bool last_try) {
    Worker& w = *wp;
    Ticket ticket(wp);
    const int64_t t0 = NowUs();
    std::optional<beast::tcp_stream> conn;
    beast::flat_buffer b;
    b.reserve(16 * 1024);
    std::optional<http::response_parser<http::buffer_body>> pp;
    boost::system::error_code ec;
    bool unreachable = false;
    for (int attempt = 0; attempt < 2; ++attempt) {
      pp.emplace();
      pp->body_limit(boost::none);
      b.clear();
      bool reused = false;
      conn.reset();
      if (auto c = co_await Connect(w, &reused)) conn.emplace(std::move(*c));
      if (!conn) {
        ec = asio::error::connection_refused;
        unreachable = true;
        break;
      }
      ctx.upstream = &*conn;
      conn->expires_after(std::chrono::milliseconds(o_.first_byte_timeout_ms));
      ec = co_await WritePost(*conn, w, path, body, rid);
      if (!ec) {
        auto [hec, hn] = co_await http::async_read_header(*conn, b, *pp, kTuple);
        ec = hec;
      }
      if (ctx.client_gone) co_return RelayOutcome::kDone;
      if (ec && reused && !pp->got_some() && ec != beast::error::timeout) continue;
      break;
    }
    auto& parser = *pp;
    if (ec || !conn) {
      w.errors.fetch_add(1, std::memory_order_relaxed);
      w.breaker.OnFailure(NowUs());
      spdlog::warn("event=decode_failed request_id={} worker={} error=\"{}\"", rid, w.spec.url,
                   ec.message());
      if (unreachable && !last_try) co_return RelayOutcome::kUnreachable;
      co_await WriteJsonError(
          client, 502,
          fmt::format("decode worker {} failed before responding: {}", w.spec.url, ec.message()));
      co_return RelayOutcome::kDone;
    }
    const int status = parser.get().result_int();
    std::string content_type = "application/json";
    if (auto it = parser.get().find(http::field::content_type); it != parser.get().end()) {
      content_type = std::string(it->value());
    }
    char chunk[16384];
    if (!stream || status != 200) {
      std::string all;
      while (!parser.is_done()) {
        auto [rec, got] = co_await ReadPiece(*conn, b, parser, chunk, sizeof chunk);
        if (ctx.client_gone) co_return RelayOutcome::kDone;
        if (rec) {
          ec = rec;
          break;
        }
        all.append(chunk, got);
      }
      ctx.upstream = nullptr;
      if (ec) {
        w.errors.fetch_add(1, std::memory_order_relaxed);
        w.breaker.OnFailure(NowUs());
        co_await WriteJsonError(
            client, 502,
            fmt::format("decode worker {} failed mid-response: {}", w.spec.url, ec.message()));
        co_return RelayOutcome::kDone;
      }
      // A decoder answering 5xx looks idle to load-based policies and would attract traffic:
      // its failures count toward opening its circuit like transport failures do.
      if (status >= 500) {
        w.errors.fetch_add(1, std::memory_order_relaxed);
        w.breaker.OnFailure(NowUs());
      } else {
        w.breaker.OnSuccess();
      }
      w.latency.Observe(static_cast<double>(NowUs() - t0) * 1e-6);
      Recycle(w, *conn, parser.get().keep_alive());
      if (co_await WriteResponse(client, status, std::move(all), content_type)) {
        ctx.response_complete = true;
      }
      co_return RelayOutcome::kDone;
    }
    // Streaming: every piece the engine sends is relayed as it arrives, in one write per read
    // (the response head travels with the first piece, the terminating chunk with the last).
    std::string out = fmt::format(
        "HTTP/1.1 200 OK\r\nServer: eldr\r\nContent-Type: {}\r\nCache-Control: no-cache\r\n"
        "Transfer-Encoding: chunked\r\n{}\r\n",
        content_type, stopping_ ? "Connection: close\r\n" : "");
    bool first_byte = false;
    CountResponse(200);
    while (!parser.is_done()) {
      auto [rec, got] = co_await ReadPiece(*conn, b, parser, chunk, sizeof chunk);
      if (ctx.client_gone) co_return RelayOutcome::kDone;
      if (got > 0) {
        if (!first_byte) {
          w.latency.Observe(static_cast<double>(NowUs() - t0) * 1e-6);
          first_byte = true;
        }
        fmt::format_to(std::back_inserter(out), "{:x}\r\n", got);
        out.append(chunk, got);
        out += "\r\n";
      }
      if (rec) {
        // The engine died or stalled after the client got its first byte: no retry is possible;
        // end the stream with an error event the client can see.
        ctx.upstream = nullptr;
        w.errors.fetch_add(1, std::memory_order_relaxed);
        w.breaker.OnFailure(NowUs());
        midstream_.fetch_add(1, std::memory_order_relaxed);
        spdlog::warn("event=decode_midstream_failure request_id={} worker={} error=\"{}\"", rid,
                     w.spec.url, rec.message());
        const std::string ev = SseErrorEvent(
            502, fmt::format("decode worker {} failed mid-stream: {}", w.spec.url, rec.message()),
            "upstream_error");
        fmt::format_to(std::back_inserter(out), "{:x}\r\n{}\r\n0\r\n\r\n", ev.size(), ev);
        co_await asio::async_write(client, asio::buffer(out), kTuple);
        co_return RelayOutcome::kDone;
      }
      if (parser.is_done()) out += "0\r\n\r\n";
      // A read may yield only framing (a chunk-size line): nothing to send, not even the head.
      if (got == 0 && !parser.is_done()) continue;
      auto [cec, cn] = co_await asio::async_write(client, asio::buffer(out), kTuple);
      if (cec) {
        ctx.client_gone = true;
        ctx.CancelUpstream();
        co_return RelayOutcome::kDone;
      }
      out.clear();
    }
    ctx.upstream = nullptr;
    ctx.response_complete = true;
    w.breaker.OnSuccess();
    Recycle(w, *conn, parser.get().keep_alive());
    co_return RelayOutcome::kDone;
  }

  // ---- self-check ----------------------------------------------------------------------------

  awaitable<void> CheckAll(std::vector<WorkerCheck>* out) {
    co_await asio::this_coro::throw_if_cancelled(false);
    auto s = Snap();
    for (size_t p = 0; p < s->prefill.size(); ++p) {
      out->push_back(co_await CheckOne(*s, p));
    }
  }

  // One short request through prefill worker `p` and a decode worker, as the configured flow
  // sends it; the decode leg completes the handoff so that the prefill engine frees its KV.
  awaitable<WorkerCheck> CheckOne(const Snapshot& s, size_t p) {
    Worker& w = *s.prefill[p];
    Worker& d = *s.decode[p % s.decode.size()];
    WorkerCheck c;
    c.url = w.spec.url;
    c.source = "none";
    const std::string body = fmt::format(
        R"({{"model":"{}","prompt":"eldr self-check: which experts does this prompt use?",)"
        R"("max_tokens":1,"temperature":0}})",
        o_.model);
    auto req = ParseClientRequest(Endpoint::kCompletions, body);
    if (!req) {
      c.detail = req.error().message();
      co_return c;
    }
    const std::string rid = fmt::format("eldr-check-{}", p);
    const std::string path = "/v1/completions";
    RequestCtx ctx;
    UpResult up, dn;
    if (o_.backend == Backend::kVllm) {
      up = co_await Post(w, path, VllmPrefillBody(*req), rid, o_.prefill_timeout_ms, ctx);
    } else {
      Bootstrap b{w.spec.host, w.spec.bootstrap_port ? w.spec.bootstrap_port : 8998,
                  0x5e1fc4ecull + p};
      RequestCtx dctx;
      auto pre = [&]() -> awaitable<void> {
        up = co_await Post(w, path, SglangPrefillBody(*req, b), rid, o_.prefill_timeout_ms, ctx);
      };
      auto dec = [&]() -> awaitable<void> {
        dn = co_await Post(d, path, SglangDecodeBody(*req, b), rid, o_.first_byte_timeout_ms,
                           dctx);
      };
      co_await (pre() && dec());
    }
    c.status = up.status;
    if (!up.ok()) {
      c.detail = fmt::format("unreachable ({}): {}", LegErrorName(up.error), up.detail);
      co_return c;
    }
    if (up.status != 200) {
      c.detail = fmt::format("answered {}: {}", up.status, up.body.substr(0, 200));
      co_return c;
    }
    PrefillRequestInfo info;
    info.pin = signature_pin_;
    auto parsed = ParsePrefillResponse(up.body, geometry_, payload_opts_, info);
    if (!parsed) {
      c.detail = parsed.error().message();
      co_return c;
    }
    c.source = std::string(SignatureSourceName(parsed->source));
    c.usable = parsed->source != SignatureSource::kNone;
    if (!parsed->rejected.empty()) {
      c.detail = "rejected: " + parsed->rejected;
    } else if (!c.usable) {
      c.detail = NoSignatureHint();
    } else if (parsed->partial) {
      c.detail = "partial: some prompt positions have no routes";
    }
    if (o_.backend == Backend::kVllm) {
      dn = co_await Post(d, path, VllmDecodeBody(*req, parsed->kv_transfer_params), rid,
                         o_.first_byte_timeout_ms, ctx);
    }
    if (!dn.ok() || dn.status != 200) {
      const std::string why = dn.ok() ? fmt::format("answered {}", dn.status) : dn.detail;
      c.detail += fmt::format("{}decode {} {}", c.detail.empty() ? "" : "; ", d.spec.url, why);
    }
    co_return c;
  }

  // ---- health checks -------------------------------------------------------------------------

  awaitable<void> HealthLoop() {
    asio::steady_timer t(co_await asio::this_coro::executor);
    while (!stopping_) {
      auto s = Snap();
      for (const auto* list : {&s->prefill, &s->decode}) {
        for (const auto& w : *list) {
          if (stopping_) co_return;
          const bool ok = co_await Probe(*w);
          if (ok) {
            // A worker can answer /health while failing requests (5xx): a probe may close a
            // half-open circuit, never cut short an open one.
            const CircuitState st = w->breaker.State(NowUs());
            if (st == CircuitState::kOpen) continue;
            if (st != CircuitState::kClosed) {
              spdlog::info("event=worker_up worker={} role={}", w->spec.url, w->role);
            }
            w->breaker.OnSuccess();
          } else {
            const bool was = w->breaker.Available(NowUs());
            w->breaker.OnFailure(NowUs());
            if (was && !w->breaker.Available(NowUs())) {
              spdlog::warn("event=worker_down worker={} role={}", w->spec.url, w->role);
            }
          }
        }
      }
      t.expires_after(std::chrono::milliseconds(o_.health_interval_ms));
      co_await t.async_wait(kTuple);
    }
  }

  awaitable<bool> Probe(Worker& w) {
    beast::tcp_stream s(co_await asio::this_coro::executor);
    s.expires_after(std::chrono::milliseconds(o_.health_timeout_ms));
    auto [ec] = co_await s.async_connect(w.address->ep, kTuple);
    if (ec) co_return false;
    http::request<http::empty_body> r{http::verb::get, "/health", 11};
    r.set(http::field::host, HostHeaderValue(w.spec.host, w.spec.port));
    if (!o_.upstream_api_key.empty()) {
      r.set(http::field::authorization, "Bearer " + o_.upstream_api_key);
    }
    r.keep_alive(false);
    auto [wec, wn] = co_await http::async_write(s, r, kTuple);
    if (wec) co_return false;
    beast::flat_buffer b;
    http::response<http::string_body> res;
    auto [rec, rn] = co_await http::async_read(s, b, res, kTuple);
    co_return !rec && res.result_int() == 200;
  }

  // ---- admin -----------------------------------------------------------------------------------

  awaitable<bool> AdminError(beast::tcp_stream& client, int status, std::string_view message) {
    co_return co_await WriteJsonError(client, status, message, true, false);
  }

  awaitable<bool> HandleAdmin(beast::tcp_stream& client, http::request<http::string_body>& req,
                              bool loopback) {
    if (o_.admin_token.empty()) {
      co_return co_await AdminError(client, 404, "the admin API is disabled (set admin_token)");
    }
    if (!loopback && !o_.admin_remote) {
      co_return co_await AdminError(
          client, 403, "admin calls are accepted from loopback only (set admin_remote)");
    }
    auto auth = req.find(http::field::authorization);
    const std::string want = "Bearer " + o_.admin_token;
    if (auth == req.end() || std::string_view(auth->value().data(), auth->value().size()) != want) {
      co_return co_await AdminError(client, 401, "missing or wrong admin token");
    }
    std::string_view target(req.target().data(), req.target().size());
    target = target.substr(0, target.find('?'));
    const auto m = req.method();
    if (target == "/admin/workers" && m == http::verb::get) {
      co_return co_await WriteResponse(client, 200, cluster_->WorkersJson(NowUs()), "application/json", true,
                                       false);
    }
    json::error_code ec;
    json::value body =
        req.body().empty() ? json::value(json::object()) : json::parse(req.body(), ec);
    if (ec || !body.is_object()) {
      co_return co_await AdminError(client, 400, "admin body must be a JSON object");
    }
    const json::object& o = body.get_object();
    auto str = [&](const char* k) -> std::string {
      const auto* v = o.if_contains(k);
      return v && v->is_string() ? std::string(v->get_string()) : std::string();
    };
    Status st;
    if (target == "/admin/workers" && (m == http::verb::post || m == http::verb::delete_)) {
      st = m == http::verb::post ? cluster_->AddWorker(str("role"), str("url"))
                                 : cluster_->RemoveWorker(str("role"), str("url"));
    } else if (target == "/admin/drain" && m == http::verb::post) {
      const auto* dv = o.if_contains("drain");
      st = cluster_->Drain(str("role"), str("url"), !dv || !dv->is_bool() || dv->get_bool());
    } else if (target == "/admin/reload" && m == http::verb::post) {
      st = cluster_->Reload(str("space"));
    } else {
      co_return co_await AdminError(client, 404, fmt::format("no admin route {}", target));
    }
    if (!st.ok()) {
      const int code = st.code() == StatusCode::kNotFound             ? 404
                       : st.code() == StatusCode::kFailedPrecondition ? 409
                                                                      : 400;
      co_return co_await AdminError(client, code, st.message());
    }
    co_return co_await WriteResponse(client, 200, cluster_->WorkersJson(NowUs()), "application/json", true,
                                       false);
  }

  // ---- metrics ---------------------------------------------------------------------------------

  std::string RenderMetrics() {
    std::string out;
    out.reserve(8192);
    MetricHeader(&out, "eldr_responses_total", "counter", "Client responses by HTTP status");
    for (size_t i = 0; i < std::size(kStatusCodes); ++i) {
      MetricSample(&out, "eldr_responses_total", fmt::format("code=\"{}\"", kStatusCodes[i]),
                   static_cast<double>(responses_[i].load()));
    }
    MetricSample(&out, "eldr_responses_total", "code=\"other\"",
                 static_cast<double>(other_responses_.load()));
    MetricHeader(&out, "eldr_active_requests", "gauge", "Proxied requests in progress");
    MetricSample(&out, "eldr_active_requests", "", static_cast<double>(active_.load()));
    cluster_->RenderMetrics(&out, NowUs());
    const std::pair<const char*, const std::atomic<uint64_t>*> counters[] = {
        {"eldr_prefill_retries_total", &prefill_retries_},
        {"eldr_decode_retries_total", &decode_retries_},
        {"eldr_malformed_payloads_total", &malformed_},
        {"eldr_midstream_failures_total", &midstream_},
        {"eldr_client_disconnects_total", &disconnects_},
        {"eldr_partial_signatures_total", &partial_signatures_}};
    for (const auto& [name, c] : counters) {
      MetricHeader(&out, name, "counter", "see docs/serve.md");
      MetricSample(&out, name, "", static_cast<double>(c->load()));
    }
    const SignatureCacheStats cs = signal_->cache().Stats();
    const std::pair<const char*, uint64_t> cache[] = {
        {"eldr_signature_cache_lookups_total", cs.lookups},
        {"eldr_signature_cache_hit_tokens_total", cs.hit_tokens},
        {"eldr_signature_cache_inserted_chunks_total", cs.inserted_chunks},
        {"eldr_signature_cache_evicted_chunks_total", cs.evicted_chunks},
        {"eldr_signature_cache_entries", cs.entries},
        {"eldr_signature_cache_bytes", cs.bytes},
        {"eldr_signature_cache_cached_tokens", cs.cached_tokens}};
    for (const auto& [name, v] : cache) {
      MetricHeader(&out, name, std::string_view(name).ends_with("_total") ? "counter" : "gauge",
                   "signature cache (signature_cache.h)");
      MetricSample(&out, name, "", static_cast<double>(v));
    }
    MetricHeader(&out, "eldr_prefix_memo_bytes", "gauge", "SGLang prediction memo");
    MetricSample(&out, "eldr_prefix_memo_bytes", "", static_cast<double>(signal_->memo().bytes()));
    return out;
  }

  ServeOptions o_;
  ModelGeometry geometry_;
  PayloadOptions payload_opts_;
  std::optional<SignatureSource> signature_pin_;
  std::unique_ptr<Cluster> cluster_;
  std::unique_ptr<PromptSignal> signal_;
  std::vector<std::unique_ptr<asio::io_context>> iocs_;
  std::vector<std::unique_ptr<ThreadState>> states_;  // after iocs_: pools destroyed first
  std::unique_ptr<tcp::acceptor> acceptor_;
  std::unique_ptr<asio::steady_timer> shutdown_timer_;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int64_t> active_{0};
  std::atomic<uint64_t> responses_[std::size(kStatusCodes)];
  std::atomic<uint64_t> other_responses_{0}, prefill_retries_{0}, malformed_{0},
      midstream_{0}, disconnects_{0}, decode_retries_{0}, partial_signatures_{0};
};


}  // namespace

Result<std::unique_ptr<Proxy>> Proxy::Create(const ServeOptions& options) {
  auto p = std::make_unique<ProxyImpl>(options);
  ELDR_RETURN_IF_ERROR(p->Init());
  return std::unique_ptr<Proxy>(std::move(p));
}

}  // namespace eldr::server
