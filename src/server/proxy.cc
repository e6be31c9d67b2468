// The proxy: start-up, sessions, routes, admission, drain, health checks and the self-check
// (proxy_impl.h; the admin API, metrics and accounting are in admin.cc).
#include <fmt/chrono.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <algorithm>
#include <csignal>
#include <ctime>
#include <thread>

#include "eldr/file.h"
#include "proxy_impl.h"

namespace eldr::server {
namespace proxy_internal {

Status ProxyImpl::Init() {
  ELDR_RETURN_IF_ERROR(o_.Validate());
  ELDR_ASSIGN_OR_RETURN(geometry_, FindModel(o_.model));
  api_keys_ = o_.api_keys;
  if (!o_.api_keys_file.empty()) {
    ELDR_ASSIGN_OR_RETURN(std::string text, ReadFile(o_.api_keys_file));
    std::string_view rest = text;
    while (!rest.empty()) {
      const size_t nl = rest.find('\n');
      std::string_view line = rest.substr(0, nl);
      rest.remove_prefix(nl == std::string_view::npos ? rest.size() : nl + 1);
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
      while (!line.empty() && line.front() == ' ') line.remove_prefix(1);
      if (line.empty() || line.front() == '#') continue;
      api_keys_.emplace_back(line);
    }
    if (api_keys_.empty()) {
      return InvalidArgument("api_keys_file {} holds no key (one per line; # comments)",
                             o_.api_keys_file);
    }
  }
  served_model_ = !o_.served_model_name.empty() ? o_.served_model_name
                  : o_.model.find('/') == std::string::npos && !o_.model.ends_with(".json")
                      ? o_.model
                      : geometry_.display_name;
  payload_opts_.max_decoded_bytes = static_cast<size_t>(o_.max_payload_bytes);
  ELDR_ASSIGN_OR_RETURN(signature_pin_, ParseSignatureSourcePin(o_.signature_source));
  ELDR_ASSIGN_OR_RETURN(
      cluster_,
      Cluster::Create(o_, geometry_,
                      [](const WorkerSpec& w) -> Result<std::shared_ptr<const UpstreamAddress>> {
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
  if (!o_.capture.path.empty()) {
    ELDR_ASSIGN_OR_RETURN(capture_, CaptureWriter::Open(o_.capture, geometry_));
  }
  if (o_.access_log != "off") {
    // Its own logger on stdout with a bare pattern: the line is the record (a JSON object or
    // key=value pairs), apart from the diagnostics on stderr.
    access_log_ = std::make_shared<spdlog::logger>(
        "eldr-access", std::make_shared<spdlog::sinks::stdout_sink_mt>());
    access_log_->set_pattern("%v");
    access_log_->set_level(spdlog::level::info);
    access_log_->flush_on(spdlog::level::info);
  }
  if (o_.refit) refitter_ = std::make_unique<OnlineRefitter>(cluster_.get(), *o_.refit);
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
  if (o_.metrics_port > 0) {
    metrics_acceptor_ = std::make_unique<tcp::acceptor>(*iocs_[0]);
    const tcp::endpoint mep(listen.address(), static_cast<uint16_t>(o_.metrics_port));
    metrics_acceptor_->open(mep.protocol(), ec);
    if (!ec) metrics_acceptor_->set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) metrics_acceptor_->bind(mep, ec);
    if (!ec) metrics_acceptor_->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return Unavailable("cannot listen on {}:{} (metrics_port): {}", o_.host, o_.metrics_port,
                         ec.message());
    }
  }
  return Status::Ok();
}

Status ProxyImpl::Run() {
  asio::signal_set signals(*iocs_[0], SIGINT, SIGTERM);
  signals.async_wait([this, &signals](boost::system::error_code ec, int sig) {
    if (ec) return;
    spdlog::info("event=signal signal={} action=drain", sig);
    Shutdown();
    // A second signal while draining: the operator wants out now.
    signals.async_wait([](boost::system::error_code ec2, int sig2) {
      if (ec2) return;
      spdlog::warn("event=signal signal={} action=exit_now", sig2);
      spdlog::default_logger()->flush();
      std::_Exit(128 + sig2);
    });
  });
  asio::co_spawn(*iocs_[0], Accept(), asio::detached);
  if (metrics_acceptor_) asio::co_spawn(*iocs_[0], AcceptMetrics(), asio::detached);
  if (refitter_) refitter_->Start([this] { return NowUs(); });
  if (o_.health_interval_ms > 0) asio::co_spawn(*iocs_[0], HealthLoop(), asio::detached);
  std::vector<std::thread> threads;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
  for (auto& ioc : iocs_) guards.push_back(asio::make_work_guard(*ioc));
  for (size_t i = 1; i < iocs_.size(); ++i) {
    threads.emplace_back([this, i] { RunLoop(*iocs_[i]); });
  }
  spdlog::info("event=listening host={} port={} backend={} policy={} prefill={} decode={}", o_.host,
               port_, BackendName(o_.backend), o_.policy, o_.prefill.size(), o_.decode.size());
  asio::co_spawn(*iocs_[0], WaitForShutdown(), [&](std::exception_ptr) {
    // The metrics port stays open while draining (a scrape shows the drain), closed here.
    if (metrics_acceptor_) {
      boost::system::error_code ec;
      metrics_acceptor_->close(ec);
    }
    guards.clear();
    for (auto& ioc : iocs_) ioc->stop();
  });
  RunLoop(*iocs_[0]);
  for (auto& t : threads) t.join();
  if (refitter_) refitter_->Stop();
  if (capture_) {
    capture_->Close();  // what was queued is written before the process exits
    const CaptureWriter::Counts c = capture_->counts();
    spdlog::info("event=capture_closed path={} written={} dropped_queue={} dropped_write={}",
                 o_.capture.path, c.written, c.dropped_queue, c.dropped_write);
  }
  spdlog::info("event=stopped active={}", admission_.InFlight());
  return Status::Ok();
}

void ProxyImpl::RunLoop(asio::io_context& ioc) {
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

std::vector<WorkerCheck> ProxyImpl::SelfCheck() {
  std::vector<WorkerCheck> out;
  asio::co_spawn(*iocs_[0], CheckAll(&out), asio::detached);
  iocs_[0]->run();
  iocs_[0]->restart();
  return out;
}

awaitable<ProxyImpl::Admission> ProxyImpl::Admit(asio::any_io_executor ex, int64_t timeout_ms) {
  auto timer = std::make_shared<asio::steady_timer>(ex);
  // The wake is posted: it may come from another thread, and the coroutine below reaches its
  // async_wait before anything posted to its own executor runs.
  const AdmissionQueue::Entry e = admission_.Enter(
      timeout_ms, [timer] { asio::post(timer->get_executor(), [timer] { timer->cancel(); }); });
  switch (e.outcome) {
    case AdmissionQueue::Outcome::kAdmitted:
      co_return Admission::kAdmitted;
    case AdmissionQueue::Outcome::kQueueFull:
      admission_rejected_[0].fetch_add(1, std::memory_order_relaxed);
      co_return Admission::kQueueFull;
    case AdmissionQueue::Outcome::kShutdown:
      co_return Admission::kShutdown;
    case AdmissionQueue::Outcome::kQueued:
      break;
  }
  const int64_t t0 = NowUs();
  AdmissionQueue::Resolution r;
  do {
    timer->expires_after(std::chrono::microseconds(std::max<int64_t>(0, e.deadline_us - NowUs())));
    co_await timer->async_wait(kTuple);
  } while ((r = admission_.Resolve(e.ticket)) == AdmissionQueue::Resolution::kWaiting);
  admission_wait_.Observe(static_cast<double>(NowUs() - t0) * 1e-6);
  switch (r) {
    case AdmissionQueue::Resolution::kAdmitted:
      co_return Admission::kAdmitted;
    case AdmissionQueue::Resolution::kShutdown:
      co_return Admission::kShutdown;
    default:
      admission_rejected_[1].fetch_add(1, std::memory_order_relaxed);
      co_return Admission::kTimedOut;
  }
}

void ProxyImpl::ReleaseSlot() {
  if (AdmissionQueue::Wake next = admission_.Release()) next();
}

void ProxyImpl::Shutdown() {
  asio::post(*iocs_[0], [this] {
    if (stopping_.exchange(true)) return;
    // Waiting requests are answered (503) rather than left to their timeout.
    for (auto& wake : admission_.Shutdown()) wake();
    boost::system::error_code ec;
    acceptor_->close(ec);
    shutdown_timer_->cancel();
  });
}

ProxyImpl::ThreadState& ProxyImpl::StateOf(const asio::any_io_executor& ex) {
  const auto* ctx = &asio::query(ex, asio::execution::context);
  for (auto& st : states_) {
    if (st->ioc == ctx) return *st;
  }
  return *states_[0];
}

Decision ProxyImpl::RouteDecode(ThreadState& ts, const Snapshot& s, const ExpertCounts* counts,
                                std::span<const uint8_t> excluded, std::string_view label) {
  return cluster_->RouteDecode(s, ts.policy, counts, excluded, NowUs(), label);
}

void ProxyImpl::RecordSignature(Worker& w, const PrefillResult& pr) {
  if (!w.CountSignature(pr, NowUs())) return;
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

std::string ProxyImpl::NoSignatureHint() const {
  if (o_.backend == Backend::kSglang) {
    return "prefill returned no routed experts: start SGLang with --enable-return-routed-experts "
           "(OpenAI responses carry sglext since PR #17648, PD prefill since PR #22916)";
  }
  return "prefill returned no routed experts: start vLLM with --enable-return-routed-experts "
         "(vLLM <= 0.21 accepts it with a KV connector; later releases reject the combination "
         "at startup, see docs/serve.md) or run the ELDR engine hooks";
}

void ProxyImpl::CountResponse(int status) {
  for (size_t i = 0; i < std::size(kStatusCodes); ++i) {
    if (kStatusCodes[i] == status) {
      responses_[i].fetch_add(1, std::memory_order_relaxed);
      return;
    }
  }
  other_responses_.fetch_add(1, std::memory_order_relaxed);
}

awaitable<void> ProxyImpl::Accept() {
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

awaitable<void> ProxyImpl::AcceptMetrics() {
  for (;;) {
    auto [ec, sock] = co_await metrics_acceptor_->async_accept(kTuple);
    if (ec) {
      if (ec == asio::error::operation_aborted || !metrics_acceptor_->is_open()) break;
      continue;
    }
    asio::co_spawn(*iocs_[0], MetricsSession(std::move(sock)), asio::detached);
  }
}

awaitable<void> ProxyImpl::MetricsSession(tcp::socket sock) {
  beast::tcp_stream client(std::move(sock));
  beast::flat_buffer buf;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(64 * 1024);
    parser.header_limit(static_cast<uint32_t>(o_.max_header_bytes));
    client.expires_after(std::chrono::milliseconds(o_.client_timeout_ms));
    auto [ec, n] = co_await http::async_read(client, buf, parser, kTuple);
    if (ec) break;
    client.expires_never();
    const auto& req = parser.get();
    const std::string_view target(req.target().data(), req.target().size());
    bool ok = false;
    if (target != "/metrics" && target != "/liveness") {
      ok = co_await WriteJsonError(
          client, 404, fmt::format("{} is not served on metrics_port", target), true, false);
    } else if (req.method() != http::verb::get) {
      ok = co_await WriteMethodNotAllowed(client, target, "GET", false);
    } else if (target == "/liveness") {
      ok = co_await WriteResponse(client, 200, R"({"status":"alive"})", "application/json", true,
                                  false);
    } else {
      ok = co_await WriteResponse(client, 200, RenderMetrics(),
                                  "text/plain; version=0.0.4; charset=utf-8", true, false);
    }
    if (!ok || !req.keep_alive()) break;
  }
  boost::system::error_code ec;
  client.socket().shutdown(tcp::socket::shutdown_both, ec);
}

awaitable<void> ProxyImpl::WaitForShutdown() {
  shutdown_timer_->expires_at(asio::steady_timer::time_point::max());
  co_await shutdown_timer_->async_wait(kTuple);
  DrainPlan plan(clock_, o_.drain_timeout_ms, /*grace_ms=*/2000);
  asio::steady_timer t(*iocs_[0]);
  while (true) {
    switch (plan.Next(admission_.InFlight())) {
      case DrainPlan::Step::kDone:
        co_return;
      case DrainPlan::Step::kAbandon:
        spdlog::warn("event=drain_abandoned active={}", admission_.InFlight());
        co_return;
      case DrainPlan::Step::kEndStreams: {
        // Streams still open end with an SSE error event and a proper end of the body, answers
        // not yet begun with a 503: each upstream leg is cancelled on its own thread.
        spdlog::warn("event=drain_timeout ending={}", admission_.InFlight());
        MutexLock lock(&active_mu_);
        for (auto& [ctx, ex] : active_ctx_) {
          asio::post(ex, [ctx = ctx] {
            ctx->drain_expired = true;
            ctx->CancelUpstream();
          });
        }
        break;
      }
      case DrainPlan::Step::kWait:
      case DrainPlan::Step::kWaitEndings:
        break;
    }
    t.expires_after(std::chrono::milliseconds(10));
    co_await t.async_wait(kTuple);
  }
}

awaitable<void> ProxyImpl::Session(tcp::socket sock) {
  boost::system::error_code ec0;
  const auto peer = sock.remote_endpoint(ec0);
  const bool loopback = !ec0 && peer.address().is_loopback();
  beast::tcp_stream client(std::move(sock));
  SetNoDelay(client);
  beast::flat_buffer buf;
  while (!stopping_) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(static_cast<uint64_t>(o_.max_body_bytes));
    parser.header_limit(static_cast<uint32_t>(o_.max_header_bytes));
    client.expires_after(std::chrono::milliseconds(o_.client_timeout_ms));
    auto [hec, hn] = co_await http::async_read_header(client, buf, parser, kTuple);
    boost::system::error_code ec = hec;
    if (!ec && parser.get().count(http::field::content_length) > 0 &&
        parser.get().count(http::field::transfer_encoding) > 0) {
      // RFC 9112 section 6.1: a request with both may be an attempt at request smuggling.
      co_await WriteJsonError(client, 400, "both Content-Length and Transfer-Encoding are set",
                              false, false);
      break;
    }
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
    if (ec == http::error::header_limit) {
      co_await WriteJsonError(client, 431,
                              fmt::format("request headers exceed {} bytes", o_.max_header_bytes),
                              false, false);
      break;
    }
    if (ec && ec.category() == http::make_error_code(http::error::bad_method).category() &&
        ec != http::error::end_of_stream && ec != http::error::partial_message) {
      // A malformed request line, header or chunk: an answer, not a silent close.
      const std::string why = fmt::format("malformed HTTP request: {}", ec.message());
      co_await WriteJsonError(client, 400, why, false, false);
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

awaitable<bool> ProxyImpl::Handle(beast::tcp_stream& client, beast::flat_buffer& buf,
                                  http::request<http::string_body>& req, bool loopback) {
  std::string_view target(req.target().data(), req.target().size());
  target = target.substr(0, target.find('?'));
  const auto method = req.method();
  if (target.starts_with("/v1/") && !api_keys_.empty()) {
    auto auth = req.find(http::field::authorization);
    const std::string_view given =
        auth == req.end() ? std::string_view()
                          : std::string_view(auth->value().data(), auth->value().size());
    bool ok = false;
    for (const auto& key : api_keys_) ok |= BearerMatches(given, key);  // every key: no early out
    if (!ok) {
      const std::string_view why = auth == req.end()
                                       ? "missing API key: send Authorization: Bearer <key>"
                                       : "invalid API key";
      const bool completion = target == "/v1/completions" || target == "/v1/chat/completions";
      co_return co_await WriteJsonError(client, 401, why, true, completion,
                                        "WWW-Authenticate: Bearer realm=\"eldr\"\r\n");
    }
  }
  if (target == "/v1/completions" || target == "/v1/chat/completions") {
    if (method != http::verb::post) {
      co_return co_await WriteMethodNotAllowed(client, target, "POST", true);
    }
    co_return co_await HandleCompletion(
        client, buf, req, target == "/v1/completions" ? Endpoint::kCompletions : Endpoint::kChat);
  }
  const bool get_route = target == "/health" || target == "/readiness" || target == "/liveness" ||
                         target == "/metrics" || target == "/v1/models" ||
                         target.starts_with("/v1/models/");
  if (get_route && method != http::verb::get) {
    co_return co_await WriteMethodNotAllowed(client, target, "GET", false);
  }
  // Liveness: the process answers; it never depends on the engines (a restart would not help).
  if (target == "/liveness") {
    co_return co_await WriteResponse(client, 200, R"({"status":"alive"})", "application/json", true,
                                     false);
  }
  if (target == "/health" || target == "/readiness") co_return co_await HandleHealth(client);
  if (target == "/metrics") {
    co_return co_await WriteResponse(client, 200, RenderMetrics(),
                                     "text/plain; version=0.0.4; charset=utf-8", true, false);
  }
  if (target == "/v1/models" || target.starts_with("/v1/models/")) {
    json::object m{
        {"id", served_model_}, {"object", "model"}, {"owned_by", "eldr"}, {"created", 0}};
    if (target != "/v1/models") {
      // GET /v1/models/{id}, as the OpenAI API and vLLM answer it.
      if (target.substr(std::string_view("/v1/models/").size()) != served_model_) {
        co_return co_await WriteJsonError(
            client, 404,
            fmt::format("The model `{}` does not exist.",
                        target.substr(std::string_view("/v1/models/").size())),
            true, false);
      }
      co_return co_await WriteResponse(client, 200, json::serialize(m), "application/json", true,
                                       false);
    }
    json::object res{{"object", "list"}, {"data", json::array{m}}};
    co_return co_await WriteResponse(client, 200, json::serialize(res), "application/json", true,
                                     false);
  }
  if (target.starts_with("/admin/")) co_return co_await HandleAdmin(client, req, loopback);
  co_return co_await WriteJsonError(client, 404, fmt::format("no route for {}", target), true,
                                    false);
}

awaitable<bool> ProxyImpl::HandleHealth(beast::tcp_stream& client) {
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

awaitable<bool> ProxyImpl::HandleCompletion(beast::tcp_stream& client, beast::flat_buffer& buf,
                                            http::request<http::string_body>& req, Endpoint ep) {
  // The request id first, so that every answer, errors included, carries it. A client id that
  // could not travel in a header line (or is absurdly long) is replaced by a minted one.
  std::string rid;
  if (auto it = req.find("X-Request-Id"); it != req.end() && !it->value().empty()) {
    const std::string_view v(it->value().data(), it->value().size());
    const bool printable =
        v.size() <= 256 && std::all_of(v.begin(), v.end(), [](char ch) {
          return static_cast<unsigned char>(ch) >= 0x20 && static_cast<unsigned char>(ch) < 0x7f;
        });
    if (printable) rid = std::string(v);
  }
  if (rid.empty()) rid = fmt::format("eldr-{:016x}", StateOf(client.get_executor()).rng.Next());
  RequestCtx ctx;
  ctx.start_us = NowUs();
  ctx.rid_header = fmt::format("X-Request-Id: {}\r\n", rid);
  ctx.http10 = req.version() < 11;
  const std::string_view route = ep == Endpoint::kCompletions ? "completions" : "chat";
  // A request refused before it is proxied is answered, accounted and logged like any other.
  auto fail = [&](int status, std::string_view message) -> awaitable<bool> {
    const bool ok =
        co_await WriteJsonError(client, status, message, true, true, ctx.rid_header, &ctx);
    FinishAccounting(ctx, rid, route, false);
    co_return ok;
  };
  if (stopping_) co_return co_await fail(503, "the router is shutting down");
  // The deadline runs from arrival: time queued for a slot counts against it.
  int64_t header_ms = 0;
  if (auto it = req.find("X-Eldr-Deadline-Ms"); it != req.end()) {
    auto ms = ParseDeadlineMs(std::string_view(it->value().data(), it->value().size()));
    if (!ms.has_value()) co_return co_await fail(400, ms.error().message());
    header_ms = *ms;
  }
  ctx.budget_ms = RequestBudgetMs(o_.request_timeout_ms, header_ms);
  if (ctx.budget_ms > 0) ctx.deadline = Deadline::At(clock_, ctx.start_us + ctx.budget_ms * 1000);
  if (const Admission a =
          co_await Admit(client.get_executor(), ctx.deadline.ClampMs(o_.admission_timeout_ms));
      a != Admission::kAdmitted) {
    if (a == Admission::kTimedOut && ctx.deadline.Expired()) {
      ctx.deadline_expired = true;
      co_await WriteEnded(client, ctx);
      FinishAccounting(ctx, rid, route, false);
      co_return true;
    }
    // Retry-After: about when a slot may be free again (RFC 9110 section 10.2.3).
    const std::string headers =
        fmt::format("{}Retry-After: {}\r\n", ctx.rid_header,
                    std::max<int64_t>(1, (o_.admission_timeout_ms + 999) / 1000));
    const int status = a == Admission::kQueueFull ? 429 : 503;
    const std::string message =
        a == Admission::kQueueFull
            ? fmt::format(
                  "too many requests: {} in flight (max_in_flight) and {} waiting "
                  "(admission_queue)",
                  o_.max_in_flight, o_.admission_queue)
        : a == Admission::kTimedOut
            ? fmt::format("no request slot freed within admission_timeout_ms ({})",
                          o_.admission_timeout_ms)
            : std::string("the router is shutting down");
    const bool ok = co_await WriteJsonError(client, status, message, true, true, headers, &ctx);
    FinishAccounting(ctx, rid, route, false);
    co_return ok;
  }
  struct Guard {
    ProxyImpl* p;
    ~Guard() { p->ReleaseSlot(); }
  } guard{this};
  auto parsed = ParseClientRequest(ep, req.body());
  if (!parsed) co_return co_await fail(400, parsed.error().message());
  if (parsed->n > 1) {
    co_return co_await fail(400,
                            "n > 1 is not supported with PD disaggregation (one KV handoff has "
                            "one consumer)");
  }
  if (auto it = req.find("X-Eldr-Label"); it != req.end()) {
    const std::string_view label(it->value().data(), it->value().size());
    const bool printable = std::all_of(label.begin(), label.end(), [](char ch) {
      return static_cast<unsigned char>(ch) >= 0x20 && static_cast<unsigned char>(ch) < 0x7f;
    });
    if (label.size() > 128 || !printable) {
      co_return co_await fail(400, "X-Eldr-Label must be at most 128 printable ASCII characters");
    }
    parsed->label = std::string(label);
  }
  parsed->arrival_unix_us = std::chrono::duration_cast<std::chrono::microseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count();
  const std::string path(req.target().data(), req.target().size());
  auto snap = Snap();
  {
    MutexLock lock(&active_mu_);
    active_ctx_.emplace_back(&ctx, client.get_executor());
  }
  co_await (Proxied(client, *parsed, rid, path, snap, ctx) || WatchClient(client, buf, ctx));
  {
    MutexLock lock(&active_mu_);
    std::erase_if(active_ctx_, [&](const auto& e) { return e.first == &ctx; });
  }
  if (ctx.client_gone) {
    disconnects_.fetch_add(1, std::memory_order_relaxed);
    CountResponse(499);
    spdlog::debug("event=client_disconnect request_id={}", rid);
  }
  FinishAccounting(ctx, rid, route, parsed->stream);
  // A close-delimited stream (HTTP/1.0) ends the connection.
  co_return !ctx.client_gone && !(ctx.http10 && parsed->stream);
}

awaitable<void> ProxyImpl::WatchClient(beast::tcp_stream& client, beast::flat_buffer& buf,
                                       RequestCtx& ctx) {
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

void ProxyImpl::FinishRequest(beast::tcp_stream& client, RequestCtx& ctx) {
  ctx.finished = true;
  ctx.upstream = nullptr;
  if (ctx.done) ctx.done->cancel();
  boost::system::error_code ec;
  client.socket().cancel(ec);
}

awaitable<void> ProxyImpl::Proxied(beast::tcp_stream& client, const ClientRequest& req,
                                   const std::string& rid, const std::string& path,
                                   std::shared_ptr<const Snapshot> snap, RequestCtx& ctx) {
  // Cancellation is handled explicitly (ctx), never by exceptions on the request path.
  co_await asio::this_coro::throw_if_cancelled(false);
  if (ctx.deadline.Expired()) {
    ctx.deadline_expired = true;
    co_await WriteEnded(client, ctx);
  } else if (o_.backend == Backend::kVllm) {
    co_await ProxiedVllm(client, req, rid, path, *snap, ctx);
  } else {
    co_await ProxiedSglang(client, req, rid, path, *snap, ctx);
  }
  FinishRequest(client, ctx);
}

std::vector<uint8_t> ProxyImpl::PrefillAvailability(const Snapshot& s) const {
  const int64_t now = NowUs();
  std::vector<uint8_t> a(s.prefill.size());
  for (size_t i = 0; i < a.size(); ++i) a[i] = s.prefill[i]->Available(now);
  return a;
}

std::vector<int64_t> ProxyImpl::PrefillLoads(const Snapshot& s) const {
  std::vector<int64_t> l(s.prefill.size());
  for (size_t i = 0; i < l.size(); ++i) l[i] = s.prefill[i]->in_flight.load();
  return l;
}

awaitable<void> ProxyImpl::CheckAll(std::vector<WorkerCheck>* out) {
  co_await asio::this_coro::throw_if_cancelled(false);
  auto s = Snap();
  for (size_t p = 0; p < s->prefill.size(); ++p) {
    out->push_back(co_await CheckOne(*s, p));
  }
}

awaitable<WorkerCheck> ProxyImpl::CheckOne(const Snapshot& s, size_t p) {
  Worker& w = *s.prefill[p];
  Worker& d = *s.decode[p % s.decode.size()];
  WorkerCheck c;
  c.url = w.spec.url;
  c.source = "none";
  const std::string body = json::serialize(
      json::object{{"model", o_.model},
                   {"prompt", "eldr self-check: which experts does this prompt use?"},
                   {"max_tokens", 1},
                   {"temperature", 0}});
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
      dn = co_await Post(d, path, SglangDecodeBody(*req, b), rid, o_.first_byte_timeout_ms, dctx);
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
  auto parsed = ParsePrefill(up.body, *req, 0);
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

awaitable<void> ProxyImpl::HealthLoop() {
  asio::steady_timer t(co_await asio::this_coro::executor);
  while (!stopping_) {
    auto s = Snap();
    for (const auto* list : {&s->prefill, &s->decode}) {
      for (const auto& w : *list) {
        if (stopping_) co_return;
        const bool ok = co_await Probe(*w);
        // A worker can answer /health while failing requests (5xx): a probe may close a
        // half-open circuit, never cut short an open one (ApplyProbe, balance.h).
        switch (ApplyProbe(w->breaker, ok, NowUs())) {
          case ProbeEvent::kUp:
            spdlog::info("event=worker_up worker={} role={}", w->spec.url, w->role);
            break;
          case ProbeEvent::kDown:
            spdlog::warn("event=worker_down worker={} role={}", w->spec.url, w->role);
            break;
          default:
            break;
        }
      }
    }
    t.expires_after(std::chrono::milliseconds(o_.health_interval_ms));
    co_await t.async_wait(kTuple);
  }
}

awaitable<bool> ProxyImpl::Probe(Worker& w) {
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

}  // namespace proxy_internal

Result<std::unique_ptr<Proxy>> Proxy::Create(const ServeOptions& options, const Clock& clock) {
  auto p = std::make_unique<proxy_internal::ProxyImpl>(options, clock);
  ELDR_RETURN_IF_ERROR(p->Init());
  return std::unique_ptr<Proxy>(std::move(p));
}

}  // namespace eldr::server
