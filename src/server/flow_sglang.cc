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
  const Decision d = RouteDecode(ts, s, predicted ? &*predicted : nullptr, {}, req.label);
  if (d.decoder < 0) {
    co_await WriteJsonError(client, 503, "no decode worker is available", true, true,
                            ctx.rid_header, &ctx);
    co_return;
  }
  const ShadowTicket shadow(s, d, predicted ? &*predicted : nullptr, geometry_.top_k);
  const uint64_t key = PrefixHash(prompt.key, static_cast<size_t>(o_.prefix_bytes));
  const int p =
      s.ring->Pick(key, PrefillLoads(s), PrefillAvailability(s), {}, o_.prefill_load_factor);
  if (p < 0) {
    co_await WriteJsonError(client, 503, "no prefill worker is available", true, true,
                            ctx.rid_header, &ctx);
    co_return;
  }
  Bootstrap b{s.prefill[p]->spec.host,
              s.prefill[p]->spec.bootstrap_port ? s.prefill[p]->spec.bootstrap_port : 8998,
              ts.rng.Next() >> 1};
  // Both legs at once (the rendezvous needs both); the client sees the decode leg.
  RequestCtx pctx;
  pctx.deadline = ctx.deadline;
  Ticket pt(s.prefill[p]);
  std::optional<ExpertCounts> captured;  // the prompt's counts, when the capture is on
  int64_t captured_tokens = -1;
  auto prefill = [&]() -> awaitable<void> {
    Worker& w = *s.prefill[p];
    UpResult up =
        co_await Post(w, path, SglangPrefillBody(req, b), rid, o_.prefill_timeout_ms, pctx);
    pt.Release();
    // Cancelled with the client, by the drain or by the request deadline: not the worker's
    // fault.
    if (ctx.client_gone || ctx.ended() || (!up.ok() && pctx.deadline.Expired())) co_return;
    if (!up.ok() || up.status >= 500) {
      w.errors.fetch_add(1, std::memory_order_relaxed);
      w.breaker.OnFailure(NowUs());
      co_return;
    }
    w.breaker.OnSuccess(NowUs());
    if (up.status != 200) co_return;  // the decode leg answers the client
    auto parsed = ParsePrefill(up.body, req, 0);
    if (!parsed) {
      w.errors.fetch_add(1, std::memory_order_relaxed);
      malformed_.fetch_add(1, std::memory_order_relaxed);
      w.breaker.OnFailure(NowUs());
      spdlog::warn("event=malformed_prefill request_id={} worker={} error=\"{}\"", rid, w.spec.url,
                   parsed.error().message());
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
  ctx.source = predicted ? "predicted" : "none";
  const bool sampled = SampleCapture(ts);
  MaybeTapDecode(sampled, DecodeExpertsFormat::kSglang, req, ctx);
  const bool ask = ctx.decode_tap && !ClientAsksRoutedExperts(req);
  auto decode = [&]() -> awaitable<void> {
    // No retry: this decoder's rendezvous with the prefill leg is already under way.
    co_await Relay(client, s.decode[d.decoder], path, SglangDecodeBody(req, b, ask), rid,
                   req.stream, ctx, kNoRetry);
  };
  co_await (prefill() && decode());
  if (refitter_ && captured) refitter_->Observe(NowUs(), *captured);
  if (sampled && ctx.response_complete && !ctx.client_gone) {
    if (captured) {
      const int64_t n =
          captured_tokens >= 0
              ? captured_tokens
              : static_cast<int64_t>(captured->Total() /
                                     std::max(1, geometry_.moe_layers * geometry_.top_k));
      Capture(req, rid, *captured, n, *s.decode[d.decoder], ctx.tokens,
              ctx.decode_tap ? &*ctx.decode_tap : nullptr);
    } else {
      capture_no_signature_.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

}  // namespace proxy_internal

}  // namespace eldr::server
