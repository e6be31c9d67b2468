// The upstream client, the decode relay and the client-side writer (proxy_impl.h).
#include "proxy_impl.h"

namespace eldr::server {
namespace proxy_internal {

awaitable<bool> ProxyImpl::WriteResponse(beast::tcp_stream& client, int status, std::string body,
                                         std::string_view content_type, bool keep_alive, bool count,
                                         std::string_view extra_headers, RequestCtx* ctx) {
  const std::string head = ResponseHead(status, content_type, body.size(), keep_alive && !stopping_,
                                        "eldr", extra_headers);
  if (count) CountResponse(status);
  const std::array<asio::const_buffer, 2> bufs{asio::buffer(head), asio::buffer(body)};
  auto [ec, n] = co_await asio::async_write(client, bufs, kTuple);
  if (ctx != nullptr && !ec) {
    ctx->status = status;
    ctx->bytes_out += static_cast<int64_t>(body.size());
    ctx->first_byte_us = ctx->end_us = NowUs();
  }
  co_return !ec;
}

awaitable<bool> ProxyImpl::WriteJsonError(beast::tcp_stream& client, int status,
                                          std::string_view message, bool keep_alive, bool count,
                                          std::string_view extra_headers, RequestCtx* ctx) {
  co_return co_await WriteResponse(client, status,
                                   OpenAiErrorBody(status, message, ErrorTypeFor(status)),
                                   "application/json", keep_alive, count, extra_headers, ctx);
}

awaitable<bool> ProxyImpl::WriteMethodNotAllowed(beast::tcp_stream& client, std::string_view target,
                                                 std::string_view allow, bool count) {
  const std::string message = fmt::format("{} takes {} only", target, allow);
  const std::string header = fmt::format("Allow: {}\r\n", allow);
  co_return co_await WriteJsonError(client, 405, message, true, count, header);
}

awaitable<std::pair<boost::system::error_code, size_t>> ProxyImpl::ReadPiece(
    beast::tcp_stream& conn, beast::flat_buffer& b,
    http::response_parser<http::buffer_body>& parser, char* chunk, size_t size,
    const RequestCtx& ctx) {
  parser.get().body().data = chunk;
  parser.get().body().size = size;
  conn.expires_after(Budget(ctx, o_.idle_timeout_ms));
  auto [ec, n] = co_await http::async_read_some(conn, b, parser, kTuple);
  if (ec == http::error::need_buffer) ec = {};
  co_return std::make_pair(ec, size - parser.get().body().size);
}

void ProxyImpl::Recycle(Worker& w, beast::tcp_stream& conn, bool keep_alive) {
  if (!keep_alive) return;
  conn.expires_never();
  StateOf(conn.get_executor()).pool.Put(w.address->ep, std::move(conn));
}

awaitable<std::optional<beast::tcp_stream>> ProxyImpl::Connect(Worker& w, bool* reused,
                                                               const RequestCtx& ctx, bool pooled) {
  const auto ex = co_await asio::this_coro::executor;
  if (pooled) {
    if (auto s = StateOf(ex).pool.Take(w.address->ep)) {
      *reused = true;
      co_return std::move(*s);
    }
  }
  *reused = false;
  beast::tcp_stream s(ex);
  s.expires_after(Budget(ctx, o_.connect_timeout_ms));
  auto [ec] = co_await s.async_connect(w.address->ep, kTuple);
  if (ec) co_return std::nullopt;
  SetNoDelay(s);
  co_return std::move(s);
}

awaitable<boost::system::error_code> ProxyImpl::WritePost(beast::tcp_stream& conn, Worker& w,
                                                          const std::string& path,
                                                          const std::string& body,
                                                          const std::string& rid) {
  const std::string head = UpstreamPostHead(path, w.spec.host, w.spec.port, rid, w.spec.dp_rank,
                                            body.size(), o_.upstream_api_key);
  const std::array<asio::const_buffer, 2> bufs{asio::buffer(head), asio::buffer(body)};
  auto [ec, n] = co_await asio::async_write(conn, bufs, kTuple);
  co_return ec;
}

awaitable<UpResult> ProxyImpl::Post(Worker& w, const std::string& path, const std::string& body,
                                    const std::string& rid, int timeout_ms, RequestCtx& ctx) {
  UpResult out;
  for (int attempt = 0; attempt < 2; ++attempt) {
    bool reused = false;
    auto conn = co_await Connect(w, &reused, ctx, /*pooled=*/attempt == 0);
    if (!conn) {
      out.error = LegError::kConnect;
      out.detail = "connection failed";
      co_return out;
    }
    ctx.upstream = &*conn;
    conn->expires_after(Budget(ctx, timeout_ms));
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

awaitable<void> ProxyImpl::WriteEnded(beast::tcp_stream& client, RequestCtx& ctx) {
  if (ctx.drain_expired) {
    co_await WriteJsonError(client, 503, DrainMessage(), true, true, ctx.rid_header, &ctx);
    co_return;
  }
  deadline_exceeded_.fetch_add(1, std::memory_order_relaxed);
  co_await WriteResponse(client, 504, OpenAiErrorBody(504, DeadlineMessage(ctx), "timeout"),
                         "application/json", true, true, ctx.rid_header, &ctx);
}

std::string ProxyImpl::EndedSseEvent(const RequestCtx& ctx) const {
  if (ctx.drain_expired) return SseErrorEvent(503, DrainMessage(), "server_shutdown");
  return SseErrorEvent(504, DeadlineMessage(ctx), "timeout");
}

awaitable<bool> ProxyImpl::WaitBeforeRetry(beast::tcp_stream& client, RequestCtx& ctx, int64_t us) {
  retry_backoff_.Observe(static_cast<double>(us) * 1e-6);
  if (us > 0 && !ctx.client_gone && !ctx.ended()) {
    asio::steady_timer t(co_await asio::this_coro::executor);
    t.expires_after(std::chrono::microseconds(us));
    ctx.backoff = &t;
    co_await t.async_wait(kTuple);
    ctx.backoff = nullptr;
  }
  if (ctx.client_gone) co_return false;
  NoteDeadline(ctx);
  if (ctx.ended()) {
    co_await WriteEnded(client, ctx);
    co_return false;
  }
  co_return true;
}

awaitable<ProxyImpl::RelayResult> ProxyImpl::Relay(beast::tcp_stream& client,
                                                   std::shared_ptr<Worker> wp,
                                                   const std::string& path, const std::string& body,
                                                   const std::string& rid, bool stream,
                                                   RequestCtx& ctx, int retries_done) {
  Worker& w = *wp;
  Ticket ticket(wp);
  const int64_t t0 = NowUs();
  ctx.decoder = wp;
  ctx.decode_url = w.spec.url;
  std::optional<beast::tcp_stream> conn;
  beast::flat_buffer b;
  b.reserve(16 * 1024);
  std::optional<http::response_parser<http::buffer_body>> pp;
  boost::system::error_code ec;
  bool unreachable = false;
  // Whether a failure before the client's first byte is retried on another decoder, and after
  // which wait (retry.h); the wait is drawn only when the failure is retryable.
  auto decide = [&](FailureKind kind, int status) -> std::optional<int64_t> {
    const bool retryable = IsRetryable(Leg::kDecode, kind, status);
    if (!retryable || retries_done >= retry_.max_retries) return std::nullopt;
    const int64_t wait = BackoffUs(retry_, retries_done, StateOf(client.get_executor()).rng);
    const RetryVerdict v = DecideRetry(retry_, retryable, retries_done, false, wait, ctx.deadline);
    if (v == RetryVerdict::kDeadline) ctx.deadline_expired = true;
    if (v != RetryVerdict::kRetry) return std::nullopt;
    return wait;
  };
  for (int attempt = 0; attempt < 2; ++attempt) {
    pp.emplace();
    pp->body_limit(boost::none);
    b.clear();
    bool reused = false;
    conn.reset();
    if (auto c = co_await Connect(w, &reused, ctx, /*pooled=*/attempt == 0)) {
      conn.emplace(std::move(*c));
    }
    if (ctx.abandoned) co_return RelayResult{RelayOutcome::kRetry};
    if (!conn) {
      ec = asio::error::connection_refused;
      unreachable = true;
      break;
    }
    ctx.upstream = &*conn;
    conn->expires_after(Budget(ctx, o_.first_byte_timeout_ms));
    ec = co_await WritePost(*conn, w, path, body, rid);
    if (!ec) {
      auto [hec, hn] = co_await http::async_read_header(*conn, b, *pp, kTuple);
      ec = hec;
    }
    if (ctx.client_gone) co_return RelayResult{};
    if (ctx.abandoned) {
      ctx.upstream = nullptr;
      co_return RelayResult{RelayOutcome::kRetry};
    }
    if (ec && reused && !pp->got_some() && ec != beast::error::timeout) continue;
    break;
  }
  auto& parser = *pp;
  if (ec || !conn) NoteDeadline(ctx);
  if ((ec || !conn) && ctx.ended()) {
    // Cut by the drain or the deadline, not the worker's fault: no failure counted.
    co_await WriteEnded(client, ctx);
    co_return RelayResult{};
  }
  if (ec || !conn) {
    w.errors.fetch_add(1, std::memory_order_relaxed);
    w.breaker.OnFailure(NowUs());
    spdlog::warn("event=decode_failed request_id={} worker={} error=\"{}\"", rid, w.spec.url,
                 ec.message());
    const FailureKind kind = unreachable                   ? FailureKind::kConnect
                             : ec == beast::error::timeout ? FailureKind::kTimeout
                                                           : FailureKind::kReset;
    if (const auto wait = decide(kind, 0)) co_return RelayResult{RelayOutcome::kRetry, *wait};
    if (ctx.deadline_expired) {
      co_await WriteEnded(client, ctx);
      co_return RelayResult{};
    }
    co_await WriteJsonError(
        client, 502,
        fmt::format("decode worker {} failed before responding: {}", w.spec.url, ec.message()),
        true, true, ctx.rid_header, &ctx);
    co_return RelayResult{};
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
      auto [rec, got] = co_await ReadPiece(*conn, b, parser, chunk, sizeof chunk, ctx);
      if (ctx.client_gone) co_return RelayResult{};
      if (ctx.abandoned) {
        ctx.upstream = nullptr;
        co_return RelayResult{RelayOutcome::kRetry};
      }
      if (rec) {
        ec = rec;
        break;
      }
      all.append(chunk, got);
    }
    ctx.upstream = nullptr;
    if (ec) NoteDeadline(ctx);
    if (ec && ctx.ended()) {
      co_await WriteEnded(client, ctx);
      co_return RelayResult{};
    }
    if (ec) {
      w.errors.fetch_add(1, std::memory_order_relaxed);
      w.breaker.OnFailure(NowUs());
      co_await WriteJsonError(
          client, 502,
          fmt::format("decode worker {} failed mid-response: {}", w.spec.url, ec.message()), true,
          true, ctx.rid_header, &ctx);
      co_return RelayResult{};
    }
    // A decoder answering 5xx looks idle to load-based policies and would attract traffic:
    // its failures count toward opening its circuit like transport failures do.
    if (status >= 500) {
      w.errors.fetch_add(1, std::memory_order_relaxed);
      w.breaker.OnFailure(NowUs());
    } else {
      w.breaker.OnSuccess(NowUs());
    }
    w.latency.Observe(static_cast<double>(NowUs() - t0) * 1e-6);
    Recycle(w, *conn, parser.get().keep_alive());
    if (status >= 500) {
      if (const auto wait = decide(FailureKind::kStatus, status)) {
        spdlog::warn("event=decode_failed request_id={} worker={} status={} action=retry", rid,
                     w.spec.url, status);
        co_return RelayResult{RelayOutcome::kRetry, *wait};
      }
      if (ctx.deadline_expired) {
        co_await WriteEnded(client, ctx);
        co_return RelayResult{};
      }
    }
    if (status == 200 && ctx.decode_tap) all = ctx.decode_tap->Body(std::move(all));
    if (status == 200) ctx.tokens.Feed(all);
    if (co_await WriteResponse(client, status, std::move(all), content_type, true, true,
                               ctx.rid_header, &ctx)) {
      ctx.response_complete = true;
    }
    co_return RelayResult{};
  }
  // Streaming: every piece the engine sends is relayed as it arrives, in one write per read
  // (the response head travels with the first piece, the terminating chunk with the last).
  // An HTTP/1.0 client cannot read chunked encoding: its stream is delimited by the close
  // (RFC 9112 section 6.3).
  const bool chunked = !ctx.http10;
  std::string out = fmt::format(
      "HTTP/1.1 200 OK\r\nServer: eldr\r\nContent-Type: {}\r\nCache-Control: no-cache\r\n"
      "{}{}{}\r\n",
      content_type, chunked ? "Transfer-Encoding: chunked\r\n" : "",
      stopping_ || !chunked ? "Connection: close\r\n" : "", ctx.rid_header);
  bool first_byte = false;
  std::string tapped;
  // Counted when the head is written (with the first piece), not before: until then the flow
  // may still abandon the leg for another pair.
  bool counted = false;
  auto count = [&] {
    if (!counted) CountResponse(200);
    counted = true;
  };
  while (!parser.is_done()) {
    auto [rec, got] = co_await ReadPiece(*conn, b, parser, chunk, sizeof chunk, ctx);
    if (ctx.client_gone) co_return RelayResult{};
    if (ctx.abandoned && ctx.status == 0) {
      ctx.upstream = nullptr;
      co_return RelayResult{RelayOutcome::kRetry};
    }
    // The drain's cancel may land between two reads, when no read is pending to abort.
    if (!rec && ctx.drain_expired) rec = asio::error::operation_aborted;
    // With a decode tap the bytes sent are what it lets through (it may hold back an
    // incomplete SSE event, or take out the routed experts the router asked for).
    std::string_view piece(chunk, got);
    if (ctx.decode_tap) {
      tapped.clear();
      if (got > 0) ctx.decode_tap->Feed(piece, &tapped);
      if (parser.is_done()) ctx.decode_tap->Finish(&tapped);
      piece = tapped;
    }
    if (got > 0 && !first_byte) {
      w.latency.Observe(static_cast<double>(NowUs() - t0) * 1e-6);
      first_byte = true;
    }
    if (!piece.empty()) {
      if (chunked) fmt::format_to(std::back_inserter(out), "{:x}\r\n", piece.size());
      out.append(piece);
      ctx.bytes_out += static_cast<int64_t>(piece.size());
      ctx.tokens.Feed(piece);
      if (chunked) out += "\r\n";
    }
    if (rec) {
      // The engine died or stalled after the client got its first byte (or the drain or the
      // request deadline cut the leg): no retry is possible; end the stream with an error event
      // the client can see and a proper end of the body.
      ctx.upstream = nullptr;
      NoteDeadline(ctx);
      const std::string ev =
          ctx.ended() ? EndedSseEvent(ctx)
                      : SseErrorEvent(502,
                                      fmt::format("decode worker {} failed mid-stream: {}",
                                                  w.spec.url, rec.message()),
                                      "upstream_error");
      if (ctx.drain_expired) {
        spdlog::warn("event=stream_ended_by_drain request_id={} worker={}", rid, w.spec.url);
      } else if (ctx.deadline_expired) {
        deadline_exceeded_.fetch_add(1, std::memory_order_relaxed);
        spdlog::warn("event=stream_ended_by_deadline request_id={} worker={} budget_ms={}", rid,
                     w.spec.url, ctx.budget_ms);
      } else {
        w.errors.fetch_add(1, std::memory_order_relaxed);
        w.breaker.OnFailure(NowUs());
        midstream_.fetch_add(1, std::memory_order_relaxed);
        spdlog::warn("event=decode_midstream_failure request_id={} worker={} error=\"{}\"", rid,
                     w.spec.url, rec.message());
      }
      if (chunked) {
        fmt::format_to(std::back_inserter(out), "{:x}\r\n{}\r\n0\r\n\r\n", ev.size(), ev);
      } else {
        out += ev;
      }
      count();
      co_await asio::async_write(client, asio::buffer(out), kTuple);
      co_return RelayResult{};
    }
    if (parser.is_done() && chunked) out += "0\r\n\r\n";
    // A read may yield only framing (a chunk-size line) or bytes the tap holds back: nothing to
    // send, not even the head.
    if (piece.empty() && !parser.is_done()) continue;
    count();
    auto [cec, cn] = co_await asio::async_write(client, asio::buffer(out), kTuple);
    if (cec) {
      ctx.client_gone = true;
      ctx.CancelUpstream();
      co_return RelayResult{};
    }
    if (ctx.status == 0) {
      ctx.status = 200;
      ctx.first_byte_us = NowUs();
    }
    ctx.end_us = NowUs();
    out.clear();
  }
  ctx.upstream = nullptr;
  ctx.response_complete = true;
  w.breaker.OnSuccess(NowUs());
  Recycle(w, *conn, parser.get().keep_alive());
  co_return RelayResult{};
}

}  // namespace proxy_internal

}  // namespace eldr::server
