// The vLLM NIXL PD flow: prefill first, then the decode choice by signature (proxy_impl.h).
#include "proxy_impl.h"

namespace eldr::server {
namespace proxy_internal {

awaitable<void> ProxyImpl::ProxiedVllm(beast::tcp_stream& client, const ClientRequest& req,
                                       const std::string& rid, const std::string& path,
                                       const Snapshot& s, RequestCtx& ctx) {
  // Known prefix: with client-sent token ids the engine is asked only for the unknown suffix.
  const PromptSignal::Prompt prompt = signal_->Begin(req);
  const int64_t start = signal_->KnownTokens(prompt);
  // With no decoder to take the KV, a NIXL prefill would only strand blocks on the engine.
  if (!AnyAvailable(s.decode, NowUs())) {
    co_await WriteJsonError(client, 503, "no decode worker is available", true, true,
                            ctx.rid_header, &ctx);
    co_return;
  }
  const std::string pbody = VllmPrefillBody(req, start);
  const uint64_t key = PrefixHash(prompt.key, static_cast<size_t>(o_.prefix_bytes));
  std::vector<uint8_t> excluded(s.prefill.size());
  std::optional<PrefillResult> pr;
  std::string last_error = "no prefill worker is available";
  Rng& rng = StateOf(client.get_executor()).rng;
  int64_t wait_us = 0;
  for (int retries = 0; !pr; ++retries) {
    // Retries go to prefill workers not tried yet, after a backoff (retry.h).
    if (retries > 0) {
      if (!co_await WaitBeforeRetry(client, ctx, wait_us)) co_return;
    }
    const int p = s.ring->Pick(key, PrefillLoads(s), PrefillAvailability(s), excluded,
                               o_.prefill_load_factor);
    if (p < 0) break;
    if (retries > 0) prefill_retries_.fetch_add(1, std::memory_order_relaxed);
    Worker& w = *s.prefill[p];
    Ticket ticket(s.prefill[p]);
    const int64_t t0 = NowUs();
    UpResult up = co_await Post(w, path, pbody, rid, o_.prefill_timeout_ms, ctx);
    if (ctx.client_gone) co_return;
    if (!up.ok()) NoteDeadline(ctx);
    if (ctx.ended()) {
      // Cut by the drain or the deadline, not the worker's fault: no failure counted.
      co_await WriteEnded(client, ctx);
      co_return;
    }
    if (up.error == LegError::kBodyLimit) {
      // Another worker would send as much (the prompt is that long): not retried, and not held
      // against the worker's circuit.
      w.errors.fetch_add(1, std::memory_order_relaxed);
      co_await WriteJsonError(client, 502, up.detail, true, true, ctx.rid_header, &ctx);
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
      const FailureKind kind = up.ok()                          ? FailureKind::kStatus
                               : up.error == LegError::kConnect ? FailureKind::kConnect
                               : up.error == LegError::kTimeout ? FailureKind::kTimeout
                                                                : FailureKind::kReset;
      // Without an untried worker left, a retry could only fail the same way: answer now.
      if (std::find(excluded.begin(), excluded.end(), 0) == excluded.end()) break;
      const bool retryable = IsRetryable(Leg::kPrefill, kind, up.status);
      wait_us = retryable ? BackoffUs(retry_, retries, rng) : 0;
      const RetryVerdict v = DecideRetry(retry_, retryable, retries, false, wait_us, ctx.deadline);
      if (v == RetryVerdict::kDeadline) {
        ctx.deadline_expired = true;
        co_await WriteEnded(client, ctx);
        co_return;
      }
      if (v == RetryVerdict::kGiveUp) break;
      continue;
    }
    w.breaker.OnSuccess(NowUs());
    w.latency.Observe(static_cast<double>(NowUs() - t0) * 1e-6);
    if (up.status != 200) {
      // The engine rejected the request itself (bad parameters): the client's answer.
      // The content type is a named value: GCC 12 destroys a temporary std::string made by a
      // conditional expression inside a co_await twice (the double free of a relayed 4xx).
      const std::string type = up.content_type.empty() ? "application/json" : up.content_type;
      co_await WriteResponse(client, up.status, std::move(up.body), type, true, true,
                             ctx.rid_header, &ctx);
      co_return;
    }
    auto parsed = ParsePrefill(up.body, req, start);
    if (!parsed) {
      w.errors.fetch_add(1, std::memory_order_relaxed);
      malformed_.fetch_add(1, std::memory_order_relaxed);
      w.breaker.OnFailure(NowUs());
      const std::string msg = fmt::format("prefill worker {} returned a malformed response: {}",
                                          w.spec.url, parsed.error().message());
      spdlog::warn("event=malformed_prefill request_id={} error=\"{}\"", rid, msg);
      co_await WriteJsonError(client, 502, msg, true, true, ctx.rid_header, &ctx);
      co_return;
    }
    RecordSignature(w, *parsed);
    ctx.prefill_url = w.spec.url;
    ctx.source = SignatureSourceName(parsed->source);
    pr = std::move(*parsed);
  }
  if (!pr) {
    co_await WriteJsonError(client, 503, last_error, true, true, ctx.rid_header, &ctx);
    co_return;
  }
  const PromptSignal::Signal sig = signal_->FromPrefill(prompt, *pr);
  if (sig.partial) partial_signatures_.fetch_add(1, std::memory_order_relaxed);
  const ExpertCounts* cp = sig.counts ? &*sig.counts : nullptr;
  if (refitter_ && cp != nullptr && !sig.partial) refitter_->Observe(NowUs(), *cp);
  // The decode leg reuses the prompt's token ids (completions), so it never re-tokenizes.
  const std::string dbody = VllmDecodeBody(req, pr->kv_transfer_params, pr->prompt_token_ids);
  // A decode leg that failed retryably before the client got a byte (a decoder that cannot be
  // reached, a reset, 502/503/504; retry.h) is tried on another decoder after a backoff: the
  // prefill's KV stays pullable by any decoder. Once the client has a byte, no retry.
  std::vector<uint8_t> excluded_d(s.decode.size());
  const bool sampled = SampleCapture(StateOf(client.get_executor()));
  int64_t wait_us_d = 0;
  for (int retries = 0;; ++retries) {
    if (retries > 0) {
      if (!co_await WaitBeforeRetry(client, ctx, wait_us_d)) co_return;
    }
    const Decision d = RouteDecode(StateOf(client.get_executor()), s, cp, excluded_d, req.label);
    if (d.decoder < 0) {
      co_await WriteJsonError(client, 503, "no decode worker is available", true, true,
                              ctx.rid_header, &ctx);
      co_return;
    }
    spdlog::debug("event=route request_id={} decode={} band={} fallback={} source={}", rid,
                  s.decode[d.decoder]->spec.url, d.band, d.fallback,
                  SignatureSourceName(pr->source));
    const ShadowTicket shadow(s, d, cp, geometry_.top_k);
    ctx.band = d.band;
    ctx.fallback = d.fallback;
    ctx.tokens = OutputTokenCounter();
    MaybeTapDecode(sampled, DecodeExpertsFormat::kVllmLists, req, ctx);
    // A retry needs an untried decoder besides this one.
    const bool others = std::count(excluded_d.begin(), excluded_d.end(), 0) > 1;
    const RelayResult out = co_await Relay(client, s.decode[d.decoder], path, dbody, rid,
                                           req.stream, ctx, others ? retries : kNoRetry);
    if (out.outcome != RelayOutcome::kRetry) {
      const int64_t prompt_tokens = !pr->prompt_token_ids.empty()
                                        ? static_cast<int64_t>(pr->prompt_token_ids.size())
                                        : pr->prompt_tokens;
      MaybeCapture(sampled, req, rid, sig.partial ? nullptr : cp, prompt_tokens,
                   *s.decode[d.decoder], ctx);
      co_return;
    }
    excluded_d[d.decoder] = 1;
    decode_retries_.fetch_add(1, std::memory_order_relaxed);
    wait_us_d = out.wait_us;
  }
}

}  // namespace proxy_internal

}  // namespace eldr::server
