// The operator surface of the proxy (proxy_impl.h): the admin API, /metrics, the per-request
// accounting (histograms, access log) and the capture of completed requests.
#include <fmt/chrono.h>

#include <ctime>

#include "eldr/file.h"
#include "proxy_impl.h"

namespace eldr::server {
namespace proxy_internal {

awaitable<bool> ProxyImpl::AdminError(beast::tcp_stream& client, int status,
                                      std::string_view message) {
  co_return co_await WriteJsonError(client, status, message, true, false);
}

awaitable<bool> ProxyImpl::HandleAdmin(beast::tcp_stream& client,
                                       http::request<http::string_body>& req, bool loopback) {
  if (o_.admin_token.empty()) {
    co_return co_await AdminError(client, 404, "the admin API is disabled (set admin_token)");
  }
  if (!loopback && !o_.admin_remote) {
    co_return co_await AdminError(client, 403,
                                  "admin calls are accepted from loopback only (set admin_remote)");
  }
  auto auth = req.find(http::field::authorization);
  if (auth == req.end() ||
      !BearerMatches(std::string_view(auth->value().data(), auth->value().size()),
                     o_.admin_token)) {
    co_return co_await AdminError(client, 401, "missing or wrong admin token");
  }
  std::string_view target(req.target().data(), req.target().size());
  target = target.substr(0, target.find('?'));
  const auto m = req.method();
  if (target == "/admin/workers" && m == http::verb::get) {
    co_return co_await WriteResponse(client, 200, cluster_->WorkersJson(NowUs()),
                                     "application/json", true, false);
  }
  json::error_code ec;
  json::value body = req.body().empty() ? json::value(json::object()) : json::parse(req.body(), ec);
  if (ec || !body.is_object()) {
    co_return co_await AdminError(client, 400, "admin body must be a JSON object");
  }
  const json::object& o = body.get_object();
  // Every field is checked against its type, as POST /admin/workers's role and url always were:
  // a string where a boolean belongs (or the reverse) is a 400, never a silent default.
  for (const auto& [key, value] : o) {
    const bool is_bool = key == "drain" || key == "pause" || key == "now";
    if (is_bool ? !value.is_bool() : !value.is_string()) {
      co_return co_await AdminError(
          client, 400,
          fmt::format("admin field '{}' must be a {}", std::string_view(key),
                      is_bool ? "boolean" : "string"));
    }
  }
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
    st = cluster_->Drain(str("role"), str("url"), !dv || dv->get_bool());
  } else if (target == "/admin/reload" && m == http::verb::post) {
    st = cluster_->Reload(str("space"));
  } else if (target == "/admin/refit" && m == http::verb::post) {
    if (!refitter_) co_return co_await AdminError(client, 409, "refit is off (config key refit)");
    const auto* pv = o.if_contains("pause");
    const auto* nv = o.if_contains("now");
    if (pv) refitter_->Pause(pv->get_bool());
    Status run;
    if (nv && nv->get_bool()) run = refitter_->RunOnce(NowUs());
    const OnlineRefitter::Counts c = refitter_->counts();
    json::object out{{"paused", refitter_->paused()},
                     {"swapped", c.swapped},
                     {"failed", c.failed},
                     {"skipped", c.skipped},
                     {"window", c.window}};
    if (nv && nv->get_bool()) out["result"] = run.ok() ? "swapped" : run.message();
    co_return co_await WriteResponse(client, 200, json::serialize(out), "application/json", true,
                                     false);
  } else if (target == "/admin/space" && m == http::verb::post) {
    const std::string path = str("save");
    if (path.empty()) co_return co_await AdminError(client, 400, "give {\"save\": PATH}");
    auto snap = Snap();
    if (!snap->space) co_return co_await AdminError(client, 409, "no signature space loaded");
    st = WriteFileAtomically(path, snap->space->ToJson());
    if (st.ok()) spdlog::info("event=space_saved path={}", path);
  } else {
    const std::string_view allow = target == "/admin/workers"  ? "GET, POST, DELETE"
                                   : target == "/admin/drain"  ? "POST"
                                   : target == "/admin/reload" ? "POST"
                                   : target == "/admin/refit"  ? "POST"
                                   : target == "/admin/space"  ? "POST"
                                                               : "";
    if (!allow.empty()) co_return co_await WriteMethodNotAllowed(client, target, allow, false);
    co_return co_await AdminError(client, 404, fmt::format("no admin route {}", target));
  }
  if (!st.ok()) {
    const int code = st.code() == StatusCode::kNotFound             ? 404
                     : st.code() == StatusCode::kFailedPrecondition ? 409
                                                                    : 400;
    co_return co_await AdminError(client, code, st.message());
  }
  co_return co_await WriteResponse(client, 200, cluster_->WorkersJson(NowUs()), "application/json",
                                   true, false);
}

void ProxyImpl::FinishAccounting(const RequestCtx& ctx, const std::string& rid,
                                 std::string_view route, bool stream) {
  const int64_t tokens = ctx.tokens.count();
  const bool answered = ctx.status == 200 && ctx.response_complete && !ctx.client_gone;
  const double ttft_s = (ctx.first_byte_us - ctx.start_us) * 1e-6;
  const double duration_s = (ctx.end_us - ctx.start_us) * 1e-6;
  const double tpot_s =
      stream && tokens > 1 ? (ctx.end_us - ctx.first_byte_us) * 1e-6 / (tokens - 1) : -1;
  if (answered && ctx.decoder) {
    if (stream) ctx.decoder->ttft.Observe(ttft_s);
    if (tpot_s >= 0) ctx.decoder->tpot.Observe(tpot_s);
    ctx.decoder->duration.Observe(duration_s);
  }
  if (!access_log_) return;
  const int status = ctx.client_gone ? 499 : ctx.status;
  auto ms = [](double s) { return s >= 0 ? fmt::format("{:.3f}", s * 1e3) : std::string("-"); };
  const std::string ttft = ctx.first_byte_us > 0 ? ms(ttft_s) : "-";
  const std::string total = ctx.end_us > 0 ? ms(duration_s) : "-";
  const std::string tpot = ms(tpot_s);
  if (o_.access_log == "json") {
    json::object o{{"ts", fmt::format("{:%FT%T%z}", fmt::localtime(std::time(nullptr)))},
                   {"id", rid},
                   {"route", route},
                   {"status", status},
                   {"stream", stream},
                   {"prefill", ctx.prefill_url},
                   {"decode", ctx.decode_url},
                   {"policy", o_.policy},
                   {"band", ctx.band},
                   {"fallback", ctx.fallback},
                   {"source", ctx.source},
                   {"ttft_ms", ttft},
                   {"tpot_ms", tpot},
                   {"duration_ms", total},
                   {"output_tokens", tokens},
                   {"bytes", ctx.bytes_out}};
    access_log_->info(json::serialize(o));
    return;
  }
  access_log_->info(
      "ts={:%FT%T%z} id={} route={} status={} stream={} prefill={} decode={} policy={} band={} "
      "fallback={} source={} ttft_ms={} tpot_ms={} duration_ms={} output_tokens={} bytes={}",
      fmt::localtime(std::time(nullptr)), rid, route, status, stream,
      ctx.prefill_url.empty() ? "-" : ctx.prefill_url,
      ctx.decode_url.empty() ? "-" : ctx.decode_url, o_.policy, ctx.band, ctx.fallback, ctx.source,
      ttft, tpot, total, tokens, ctx.bytes_out);
}

bool ProxyImpl::SampleCapture(ThreadState& ts) {
  if (!capture_) return false;
  if (o_.capture.fraction < 1 && !(ts.rng.UniformDouble() < o_.capture.fraction)) {
    capture_sampled_out_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  return true;
}

void ProxyImpl::MaybeTapDecode(bool sampled, DecodeExpertsFormat format, const ClientRequest& req,
                               RequestCtx& ctx) const {
  ctx.decode_tap.reset();
  if (!sampled || !o_.capture.decode) return;
  DecodeExpertsTapOptions t;
  t.format = format;
  if (format == DecodeExpertsFormat::kSglang) {
    // The router asks for the rows only when the client did not: then they are its to remove.
    t.strip = !ClientAsksRoutedExperts(req);
    if (const auto* v = req.body.if_contains("routed_experts_start_len"); v && v->is_int64()) {
      t.start_row = v->get_int64();
    }
  }
  ctx.decode_tap.emplace(t);
}

void ProxyImpl::MaybeCapture(bool sampled, const ClientRequest& req, const std::string& rid,
                             const ExpertCounts* prompt_counts, int64_t prompt_tokens,
                             const Worker& decoder, const RequestCtx& ctx) {
  if (!capture_ || !sampled || !ctx.response_complete || ctx.client_gone) return;
  if (prompt_counts == nullptr) {
    capture_no_signature_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (prompt_tokens < 0) {
    prompt_tokens = static_cast<int64_t>(prompt_counts->Total() /
                                         std::max(1, geometry_.moe_layers * geometry_.top_k));
  }
  const ExpertCounts& counts = *prompt_counts;
  const OutputTokenCounter& out = ctx.tokens;
  const DecodeExpertsTap* tap = ctx.decode_tap ? &*ctx.decode_tap : nullptr;
  CaptureRecord r;
  r.id = rid;
  r.label = req.label;
  r.prefill = counts;
  r.prompt_tokens = prompt_tokens;
  r.output_tokens = out.count();
  r.arrival_us = req.arrival_unix_us;
  r.decoder = decoder.spec.url;
  if (tap) {
    auto d = tap->Counts(geometry_, prompt_tokens, out.count(), out.exact());
    if (d) {
      r.decode = std::move(*d);
      capture_decode_[0].fetch_add(1, std::memory_order_relaxed);
    } else if (d.error().code() == StatusCode::kNotFound) {
      capture_decode_[1].fetch_add(1, std::memory_order_relaxed);
    } else {
      capture_decode_[2].fetch_add(1, std::memory_order_relaxed);
      spdlog::warn("event=capture_decode_rejected request_id={} decoder={} error=\"{}\"", rid,
                   decoder.spec.url, d.error().message());
    }
  }
  capture_->Offer(std::move(r));  // a full queue drops and counts it: never waits
}

std::string ProxyImpl::RenderMetrics() {
  std::string out;
  out.reserve(8192);
  MetricHeader(&out, "eldr_build_info", "gauge",
               "Always 1; the labels name the build, the policy and the model served");
  MetricSample(&out, "eldr_build_info",
               fmt::format("version=\"{}\",policy=\"{}\",model=\"{}\"", kEldrVersion,
                           LabelValue(o_.policy), LabelValue(served_model_)),
               1);
  RenderProcessMetrics(&out, process_start_unix_s_);
  MetricHeader(&out, "eldr_responses_total", "counter", "Client responses by HTTP status");
  for (size_t i = 0; i < std::size(kStatusCodes); ++i) {
    MetricSample(&out, "eldr_responses_total", fmt::format("code=\"{}\"", kStatusCodes[i]),
                 static_cast<double>(responses_[i].load()));
  }
  MetricSample(&out, "eldr_responses_total", "code=\"other\"",
               static_cast<double>(other_responses_.load()));
  MetricHeader(&out, "eldr_active_requests", "gauge", "Proxied requests in progress");
  MetricSample(&out, "eldr_active_requests", "", static_cast<double>(admission_.InFlight()));
  MetricHeader(&out, "eldr_admission_queue_length", "gauge",
               "Requests waiting for a slot (max_in_flight reached)");
  MetricSample(&out, "eldr_admission_queue_length", "", static_cast<double>(admission_.Waiting()));
  MetricHeader(&out, "eldr_admission_rejected_total", "counter",
               "Requests refused for want of a slot: queue_full (429) or timeout (503)");
  MetricSample(&out, "eldr_admission_rejected_total", "reason=\"queue_full\"",
               static_cast<double>(admission_rejected_[0].load()));
  MetricSample(&out, "eldr_admission_rejected_total", "reason=\"timeout\"",
               static_cast<double>(admission_rejected_[1].load()));
  MetricHeader(&out, "eldr_admission_wait_seconds", "histogram",
               "Time queued requests waited for a slot");
  admission_wait_.Render(&out, "eldr_admission_wait_seconds", "");
  MetricHeader(&out, "eldr_retry_backoff_seconds", "histogram",
               "Waits before a retry on another worker (exponential backoff with jitter)");
  retry_backoff_.Render(&out, "eldr_retry_backoff_seconds", "");
  cluster_->RenderMetrics(&out, NowUs());
  const std::tuple<const char*, const char*, const std::atomic<uint64_t>*> counters[] = {
      {"eldr_prefill_retries_total", "Prefill legs retried on another worker", &prefill_retries_},
      {"eldr_decode_retries_total",
       "Decode legs retried on another worker (failed before the client's first byte)",
       &decode_retries_},
      {"eldr_request_deadline_exceeded_total",
       "Requests ended by their deadline (request_timeout_ms or X-Eldr-Deadline-Ms): a 504, or "
       "an SSE error event once streaming",
       &deadline_exceeded_},
      {"eldr_malformed_payloads_total", "Prefill answers that could not be parsed (502)",
       &malformed_},
      {"eldr_midstream_failures_total",
       "Streams whose decode worker failed after the first byte (ended with an SSE error)",
       &midstream_},
      {"eldr_client_disconnects_total", "Clients that went away before their answer (499)",
       &disconnects_},
      {"eldr_partial_signatures_total",
       "Requests routed on a signature covering part of the prompt", &partial_signatures_}};
  for (const auto& [name, help, c] : counters) {
    MetricHeader(&out, name, "counter", help);
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
  if (refitter_) {
    const OnlineRefitter::Counts c = refitter_->counts();
    MetricHeader(&out, "eldr_refits_total", "counter",
                 "Online refits by outcome: swapped in, failed or degenerate (old space kept), "
                 "skipped (too few requests in the window)");
    MetricSample(&out, "eldr_refits_total", "outcome=\"swapped\"", static_cast<double>(c.swapped));
    MetricSample(&out, "eldr_refits_total", "outcome=\"failed\"", static_cast<double>(c.failed));
    MetricSample(&out, "eldr_refits_total", "outcome=\"skipped\"", static_cast<double>(c.skipped));
    const std::tuple<const char*, const char*, double> gauges[] = {
        {"eldr_refit_last_fit_seconds", "Wall time of the last refit", c.last_seconds},
        {"eldr_refit_centroid_movement", "Last swap: mean 1 - cos(old, new) centroid",
         c.last_movement},
        {"eldr_refit_assignment_churn", "Last swap: share of the window whose best decoder changed",
         c.last_churn},
        {"eldr_refit_mean_best_score",
         "Last refit: the window's mean best cosine under the live space (the drift signal)",
         c.last_score},
        {"eldr_refit_window_requests", "Requests in the refit window",
         static_cast<double>(c.window)},
        {"eldr_refit_paused", "1 while refitting is paused (POST /admin/refit)",
         refitter_->paused() ? 1.0 : 0.0}};
    for (const auto& [name, help, v] : gauges) {
      MetricHeader(&out, name, "gauge", help);
      MetricSample(&out, name, "", v);
    }
  }
  if (capture_) {
    const CaptureWriter::Counts c = capture_->counts();
    MetricHeader(&out, "eldr_capture_records_total", "counter",
                 "Completed requests offered to the capture, by outcome (docs/serve.md)");
    const std::pair<const char*, uint64_t> outcomes[] = {
        {"written", c.written},
        {"dropped_queue", c.dropped_queue},
        {"dropped_write", c.dropped_write},
        {"sampled_out", capture_sampled_out_.load()},
        {"no_signature", capture_no_signature_.load()}};
    for (const auto& [name, v] : outcomes) {
      MetricSample(&out, "eldr_capture_records_total", fmt::format("outcome=\"{}\"", name),
                   static_cast<double>(v));
    }
    MetricHeader(&out, "eldr_capture_decode_total", "counter",
                 "Captured requests whose decode leg was read for routed experts, by outcome: "
                 "recorded, absent (the engine sent none), rejected (malformed or inconsistent)");
    const char* decode_outcomes[] = {"recorded", "absent", "rejected"};
    for (int i = 0; i < 3; ++i) {
      MetricSample(&out, "eldr_capture_decode_total",
                   fmt::format("outcome=\"{}\"", decode_outcomes[i]),
                   static_cast<double>(capture_decode_[i].load()));
    }
    MetricHeader(&out, "eldr_capture_bytes_total", "counter", "Compressed bytes written");
    MetricSample(&out, "eldr_capture_bytes_total", "", static_cast<double>(c.bytes));
    MetricHeader(&out, "eldr_capture_rotations_total", "counter", "Capture files rotated");
    MetricSample(&out, "eldr_capture_rotations_total", "", static_cast<double>(c.rotations));
  }
  return out;
}

}  // namespace proxy_internal
}  // namespace eldr::server
