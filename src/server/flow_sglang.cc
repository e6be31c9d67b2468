// The SGLang bootstrap PD flow: the decode choice first, then both legs at once (proxy_impl.h).
#include "proxy_impl.h"

namespace eldr::server {
namespace proxy_internal {

awaitable<void> ProxyImpl::ProxiedSglang(beast::tcp_stream& client, const ClientRequest& req,
                                         const std::string& rid, const std::string& path,
                                         const Snapshot& s, RequestCtx& ctx) {
  // Decode is fixed before prefill: predict the signature from what is known of the prompt's
  // prefix — the signature cache's longest cached prefix when the client sent token ids, else
  // the text-prefix memo.
  const PromptSignal::Prompt prompt = signal_->Begin(req);
  const std::optional<ExpertCounts> predicted = signal_->Predict(prompt);
  ThreadState& ts = StateOf(client.get_executor());
  const uint64_t key = PrefixHash(prompt.key, static_cast<size_t>(o_.prefix_bytes));
  const bool sampled = SampleCapture(ts);
  ctx.source = predicted ? "predicted" : "none";
  // A pair whose leg failed retryably before the client had a byte (either leg unreachable, a
  // reset or a timeout, the prefill's 5xx, the decoder's 502/503/504: retry.h) is replaced by
  // another pair with a fresh bootstrap room after a backoff; the failed worker is not tried
  // again for this request, and the surviving leg of the failed pair is abandoned (its engine
  // sees the connection close and aborts).
  std::vector<uint8_t> excluded_d(s.decode.size()), excluded_p(s.prefill.size());
  int64_t wait_us = 0;
  for (int retries = 0;; ++retries) {
    if (retries > 0) {
      if (!co_await WaitBeforeRetry(client, ctx, wait_us)) co_return;
    }
    const Decision d = RouteDecode(ts, s, predicted ? &*predicted : nullptr, excluded_d, req.label);
    if (d.decoder < 0) {
      co_await WriteJsonError(client, 503, "no decode worker is available", true, true,
                              ctx.rid_header, &ctx);
      co_return;
    }
    const ShadowTicket shadow(s, d, predicted ? &*predicted : nullptr, geometry_.top_k);
    const int p = s.ring->Pick(key, PrefillLoads(s), PrefillAvailability(s), excluded_p,
                               o_.prefill_load_factor);
    if (p < 0) {
      co_await WriteJsonError(client, 503, "no prefill worker is available", true, true,
                              ctx.rid_header, &ctx);
      co_return;
    }
    // Decode is fixed before prefill, so the decision can only use the predicted signature.
    Bootstrap b{s.prefill[p]->spec.host,
                s.prefill[p]->spec.bootstrap_port ? s.prefill[p]->spec.bootstrap_port : 8998,
                ts.rng.Next() >> 1};
    // Both legs at once (the rendezvous needs both); the client sees the decode leg.
    RequestCtx pctx;
    pctx.deadline = ctx.deadline;
    Ticket pt(s.prefill[p]);
    std::optional<ExpertCounts> captured;  // the prompt's counts, when the capture is on
    int64_t captured_tokens = -1;
    bool prefill_failed = false;  // retryably, with the client still waiting for a byte
    int64_t prefill_wait_us = 0;
    bool decode_retry = false;
    bool decode_abandoned = false;  // the decode leg ended on the prefill's failure, unanswered
    const bool can_retry = retries < retry_.max_retries;
    auto prefill = [&]() -> awaitable<void> {
      Worker& w = *s.prefill[p];
      UpResult up =
          co_await Post(w, path, SglangPrefillBody(req, b), rid, o_.prefill_timeout_ms, pctx);
      pt.Release();
      // Cancelled with the client, by the drain, by the request deadline or because the decode
      // leg failed first: not the worker's fault.
      if (ctx.client_gone || ctx.ended() || pctx.client_gone ||
          (!up.ok() && pctx.deadline.Expired())) {
        co_return;
      }
      if (!up.ok() || up.status >= 500) {
        w.errors.fetch_add(1, std::memory_order_relaxed);
        w.breaker.OnFailure(NowUs());
        spdlog::warn("event=prefill_failed request_id={} worker={} kind={} status={}", rid,
                     w.spec.url, up.ok() ? "status" : LegErrorName(up.error), up.status);
        const FailureKind kind = up.ok()                          ? FailureKind::kStatus
                                 : up.error == LegError::kConnect ? FailureKind::kConnect
                                 : up.error == LegError::kTimeout ? FailureKind::kTimeout
                                                                  : FailureKind::kReset;
        const bool others = std::count(excluded_p.begin(), excluded_p.end(), 0) > 1;
        if (others && can_retry && ctx.status == 0 && up.error != LegError::kBodyLimit &&
            IsRetryable(Leg::kPrefill, kind, up.status)) {
          const int64_t wait = BackoffUs(retry_, retries, ts.rng);
          if (DecideRetry(retry_, true, retries, false, wait, ctx.deadline) ==
              RetryVerdict::kRetry) {
            // The decoder waits for KV that will not come: end its leg and try another pair.
            prefill_failed = true;
            prefill_wait_us = wait;
            ctx.abandoned = true;
            ctx.CancelUpstream();
          }
        }
        co_return;
      }
      w.breaker.OnSuccess(NowUs());
      if (up.status != 200) co_return;  // the decode leg answers the client
      auto parsed = ParsePrefill(up.body, req, 0);
      if (!parsed) {
        w.errors.fetch_add(1, std::memory_order_relaxed);
        malformed_.fetch_add(1, std::memory_order_relaxed);
        w.breaker.OnFailure(NowUs());
        spdlog::warn("event=malformed_prefill request_id={} worker={} error=\"{}\"", rid,
                     w.spec.url, parsed.error().message());
        co_return;
      }
      RecordSignature(w, *parsed);
      signal_->Learn(prompt, *parsed);
      if (capture_ || refitter_) {
        if (parsed->counts) {
          captured = std::move(parsed->counts);
        } else if (parsed->picks && parsed->picks_first_token == 0 && !parsed->partial) {
          captured = parsed->picks->Counts();
        }
        captured_tokens = parsed->prompt_tokens;
      }
    };
    ctx.prefill_url = s.prefill[p]->spec.url;
    ctx.band = d.band;
    ctx.fallback = d.fallback;
    ctx.tokens = OutputTokenCounter();
    MaybeTapDecode(sampled, DecodeExpertsFormat::kSglang, req, ctx);
    const bool ask = ctx.decode_tap && !ClientAsksRoutedExperts(req);
    auto decode = [&]() -> awaitable<void> {
      const bool others = std::count(excluded_d.begin(), excluded_d.end(), 0) > 1;
      const RelayResult out =
          co_await Relay(client, s.decode[d.decoder], path, SglangDecodeBody(req, b, ask), rid,
                         req.stream, ctx, others ? retries : kNoRetry);
      if (out.outcome == RelayOutcome::kRetry && ctx.abandoned) {
        decode_abandoned = true;
      } else if (out.outcome == RelayOutcome::kRetry) {
        // The decoder failed first: the prefill's KV has no taker, so its leg ends too.
        decode_retry = true;
        wait_us = out.wait_us;
        pctx.client_gone = true;
        pctx.CancelUpstream();
      }
    };
    co_await (prefill() && decode());
    // Set by a prefill failure, even one after the decode leg's answer had begun: both legs are
    // over now, so the next pair (or the rest of this request) starts clear.
    ctx.abandoned = false;
    // The prefill's failure replaces the pair only if the decode leg really ended unanswered: it
    // may have been writing its answer when the prefill failed.
    if (decode_abandoned || decode_retry) {
      if (prefill_failed) {
        excluded_p[p] = 1;
        prefill_retries_.fetch_add(1, std::memory_order_relaxed);
        wait_us = prefill_wait_us;
      }
      if (decode_retry) {
        excluded_d[d.decoder] = 1;
        decode_retries_.fetch_add(1, std::memory_order_relaxed);
      }
      continue;
    }
    if (refitter_ && captured) refitter_->Observe(NowUs(), *captured);
    MaybeCapture(sampled, req, rid, captured ? &*captured : nullptr, captured_tokens,
                 *s.decode[d.decoder], ctx);
    co_return;
  }
}

}  // namespace proxy_internal

}  // namespace eldr::server
