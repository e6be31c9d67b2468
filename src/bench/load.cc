// The load generator: one of the three translation units that include Boost.Beast.
#include "eldr/bench/load.h"

#include <boost/json.hpp>
#include <cmath>

#include "../net/http.h"
#include "eldr/rng.h"
#include "eldr/server/config.h"

namespace eldr::bench {

using namespace eldr::net;  // NOLINT(google-build-using-namespace): Beast vocabulary
namespace json = boost::json;

Status LoadOptions::Validate() const {
  if (requests < 1) return InvalidArgument("requests must be >= 1");
  if (max_tokens < 1) return InvalidArgument("max_tokens must be >= 1");
  if (prompt_words < 1) return InvalidArgument("prompt_words must be >= 1");
  if (!std::isfinite(rate)) return InvalidArgument("rate must be finite");
  if (timeout_ms < 1) return InvalidArgument("timeout_ms must be >= 1");
  if (!extra_body.empty()) {
    json::error_code ec;
    json::value v = json::parse(extra_body, ec);
    if (ec || !v.is_object()) return InvalidArgument("extra body must be a JSON object");
  }
  return server::ParseWorkerUrl(url).has_value()
             ? Status::Ok()
             : InvalidArgument("url '{}' is not http://host:port", url);
}

Result<std::vector<std::string>> LoadPrompts(const std::string& text) {
  std::vector<std::string> out;
  size_t pos = 0, line_no = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string_view line(text.data() + pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
    if (line.empty()) continue;
    if (line.front() == '{') {
      json::error_code ec;
      json::value v = json::parse(line, ec);
      const json::value* p = nullptr;
      if (!ec && v.is_object()) {
        p = v.get_object().if_contains("prompt");
        if (!p) p = v.get_object().if_contains("text");
      }
      if (!p || !p->is_string()) {
        return InvalidArgument("prompts line {}: a JSON line needs a string \"prompt\"", line_no);
      }
      out.emplace_back(p->get_string());
    } else {
      out.emplace_back(line);
    }
  }
  if (out.empty()) return InvalidArgument("the prompts file holds no prompt");
  return out;
}

std::string SyntheticPrompt(uint64_t seed, int index, int mean_words) {
  Rng rng(seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(index) + 1);
  // Log-normal lengths (sigma 0.8), as the simulator's workloads.
  const double u1 = std::max(rng.UniformDouble(), 1e-12), u2 = rng.UniformDouble();
  const double z = std::sqrt(-2 * std::log(u1)) * std::cos(2 * M_PI * u2);
  const double sigma = 0.8, mu = std::log(mean_words) - sigma * sigma / 2;
  const int n = std::clamp(static_cast<int>(std::exp(mu + sigma * z)), 8, 8 * mean_words);
  std::string s;
  for (int i = 0; i < n; ++i) {
    if (i) s += ' ';
    s += fmt::format("w{}", rng.Uniform(20000));
  }
  return s;
}

Percentiles ComputePercentiles(std::vector<double> v) {
  Percentiles p;
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  p.mean = sum / static_cast<double>(v.size());
  auto q = [&](double f) {
    const double pos = f * static_cast<double>(v.size() - 1);
    const size_t lo = static_cast<size_t>(pos);
    const size_t hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
  };
  p.p50 = q(0.5);
  p.p90 = q(0.9);
  p.p99 = q(0.99);
  return p;
}

namespace {

json::object PJson(const Percentiles& p) {
  return {{"mean", p.mean}, {"p50", p.p50}, {"p90", p.p90}, {"p99", p.p99}};
}

class Runner {
 public:
  Runner(const LoadOptions& o, tcp::endpoint ep, std::string host,
         const std::function<void(int, int)>& progress)
      : o_(o), ep_(ep), host_(std::move(host)), progress_(progress) {}

  LoadReport Run() {
    records_.resize(o_.requests);
    asio::co_spawn(ioc_, Schedule(), asio::detached);
    t0_ = std::chrono::steady_clock::now();
    ioc_.run();
    LoadReport r;
    r.duration_s = std::chrono::duration<double>(end_ - t0_).count();
    std::vector<double> ttft, tpot, itl, e2e;
    int64_t tokens = 0;
    for (auto& rec : records_) {
      ++r.sent;
      if (!rec.ok) {
        ++r.failed;
        continue;
      }
      ++r.ok;
      tokens += rec.tokens;
      ttft.push_back(rec.ttft_ms);
      e2e.push_back(rec.e2e_ms);
      if (o_.stream && rec.tokens > 1) tpot.push_back(rec.tpot_ms);
      itl.insert(itl.end(), rec.itl_ms.begin(), rec.itl_ms.end());
    }
    r.ttft_ms = ComputePercentiles(ttft);
    r.tpot_ms = ComputePercentiles(tpot);
    r.itl_ms = ComputePercentiles(itl);
    r.e2e_ms = ComputePercentiles(e2e);
    if (r.duration_s > 0) {
      r.request_throughput = r.ok / r.duration_s;
      r.output_throughput = static_cast<double>(tokens) / r.duration_s;
    }
    r.records = std::move(records_);
    return r;
  }

 private:
  double Since(std::chrono::steady_clock::time_point t) const {
    return std::chrono::duration<double, std::milli>(t - t0_).count();
  }

  awaitable<void> Schedule() {
    Rng rng(o_.seed);
    asio::steady_timer timer(ioc_);
    double at_s = 0;
    for (int i = 0; i < o_.requests; ++i) {
      if (o_.rate > 0 && i > 0) at_s += -std::log(1 - rng.UniformDouble()) / o_.rate;
      timer.expires_at(t0_ + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                 std::chrono::duration<double>(at_s)));
      co_await timer.async_wait(kTuple);
      asio::co_spawn(ioc_, One(i), asio::detached);
    }
  }

  std::string Body(int i) const {
    const std::string prompt = o_.prompts.empty()
                                   ? SyntheticPrompt(o_.seed, i, o_.prompt_words)
                                   : o_.prompts[static_cast<size_t>(i) % o_.prompts.size()];
    json::object b{{"model", o_.model},
                   {"max_tokens", o_.max_tokens},
                   {"stream", o_.stream},
                   {"ignore_eos", true},
                   {"temperature", 0}};
    if (!o_.extra_body.empty()) {
      const json::value extra = json::parse(o_.extra_body);
      for (const auto& kv : extra.as_object()) b[kv.key()] = kv.value();
    }
    if (o_.chat) {
      b["messages"] = json::array{json::object{{"role", "user"}, {"content", prompt}}};
    } else {
      b["prompt"] = prompt;
    }
    return json::serialize(b);
  }

  awaitable<void> One(int i) {
    RequestRecord& rec = records_[i];
    const auto start = std::chrono::steady_clock::now();
    rec.start_s = Since(start) / 1000;
    co_await Exchange(i, rec, start);
    const auto end = std::chrono::steady_clock::now();
    rec.e2e_ms = std::chrono::duration<double, std::milli>(end - start).count();
    if (rec.ok && o_.stream && rec.tokens > 1)
      rec.tpot_ms = (rec.e2e_ms - rec.ttft_ms) / (rec.tokens - 1);
    end_ = std::max(end_, end);
    ++done_;
    if (progress_) progress_(done_, o_.requests);
  }

  awaitable<void> Exchange(int i, RequestRecord& rec, std::chrono::steady_clock::time_point start) {
    std::optional<beast::tcp_stream> s;
    if (auto p = pool_.Take(ep_)) s.emplace(std::move(*p));
    if (!s) {
      s.emplace(ioc_);
      s->expires_after(std::chrono::milliseconds(o_.timeout_ms));
      auto [ec] = co_await s->async_connect(ep_, kTuple);
      if (ec) {
        rec.error = "connect: " + ec.message();
        co_return;
      }
      SetNoDelay(*s);
    }
    http::request<http::string_body> req{http::verb::post,
                                         o_.chat ? "/v1/chat/completions" : "/v1/completions", 11};
    req.set(http::field::host, host_);
    req.set(http::field::content_type, "application/json");
    req.keep_alive(true);
    req.body() = Body(i);
    req.prepare_payload();
    s->expires_after(std::chrono::milliseconds(o_.timeout_ms));
    auto [wec, wn] = co_await http::async_write(*s, req, kTuple);
    if (wec) {
      rec.error = "write: " + wec.message();
      co_return;
    }
    beast::flat_buffer b;
    b.reserve(16 * 1024);
    http::response_parser<http::buffer_body> p;
    p.body_limit(boost::none);
    auto [hec, hn] = co_await http::async_read_header(*s, b, p, kTuple);
    if (hec) {
      rec.error = "read: " + hec.message();
      co_return;
    }
    rec.status = p.get().result_int();
    std::string pending, all;
    char chunk[16384];
    auto last = start;
    bool first = true, error_event = false;
    while (!p.is_done()) {
      p.get().body().data = chunk;
      p.get().body().size = sizeof chunk;
      auto [ec, n] = co_await http::async_read_some(*s, b, p, kTuple);
      if (ec == http::error::need_buffer) ec = {};
      if (ec) {
        rec.error = "stream: " + ec.message();
        co_return;
      }
      const size_t got = sizeof chunk - p.get().body().size;
      const auto now = std::chrono::steady_clock::now();
      if (!o_.stream || rec.status != 200) {
        all.append(chunk, got);
        continue;
      }
      pending.append(chunk, got);
      size_t e;
      while ((e = pending.find("\n\n")) != std::string::npos) {
        std::string_view ev(pending.data(), e);
        if (ev.starts_with("data: ")) ev.remove_prefix(6);
        if (ev == "[DONE]") {
        } else if (ev.find("\"error\"") != std::string_view::npos) {
          error_event = true;
          rec.error = std::string(ev.substr(0, 300));
        } else {
          const double ms = std::chrono::duration<double, std::milli>(now - start).count();
          if (first) {
            rec.ttft_ms = ms;
            first = false;
          } else {
            rec.itl_ms.push_back(std::chrono::duration<double, std::milli>(now - last).count());
          }
          last = now;
          ++rec.tokens;
        }
        pending.erase(0, e + 2);
      }
    }
    if (rec.status != 200) {
      rec.error = fmt::format("HTTP {}: {}", rec.status, all.substr(0, 300));
      co_return;
    }
    if (!o_.stream) {
      json::error_code ec;
      json::value v = json::parse(all, ec);
      const json::value* u = ec || !v.is_object() ? nullptr : v.get_object().if_contains("usage");
      if (u && u->is_object()) {
        if (const auto* ct = u->get_object().if_contains("completion_tokens");
            ct && ct->is_int64()) {
          rec.tokens = ct->get_int64();
        }
      }
      rec.ttft_ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
              .count();
    }
    rec.ok = !error_event && (rec.tokens > 0 || !o_.stream);
    if (!rec.ok && rec.error.empty()) rec.error = "no tokens received";
    if (p.get().keep_alive()) {
      s->expires_never();
      pool_.Put(ep_, std::move(*s));
    }
  }

  const LoadOptions& o_;
  tcp::endpoint ep_;
  std::string host_;
  const std::function<void(int, int)>& progress_;
  asio::io_context ioc_{1};
  ConnectionPool pool_;  // after ioc_: destroyed first
  std::chrono::steady_clock::time_point t0_, end_{};
  std::vector<RequestRecord> records_;
  int done_ = 0;
};

}  // namespace

std::string LoadReport::ToJson() const {
  json::object o{{"sent", sent},
                 {"ok", ok},
                 {"failed", failed},
                 {"duration_s", duration_s},
                 {"request_throughput", request_throughput},
                 {"output_throughput", output_throughput},
                 {"ttft_ms", PJson(ttft_ms)},
                 {"tpot_ms", PJson(tpot_ms)},
                 {"itl_ms", PJson(itl_ms)},
                 {"e2e_ms", PJson(e2e_ms)}};
  json::array errors;
  for (const auto& r : records) {
    if (!r.ok && errors.size() < 20) errors.push_back(json::string(r.error));
  }
  o["errors"] = std::move(errors);
  return json::serialize(o);
}

std::string LoadReport::ToText() const {
  std::string s = fmt::format(
      "requests: {} sent, {} ok, {} failed in {:.2f} s\n"
      "throughput: {:.2f} req/s, {:.1f} output tok/s\n"
      "{:<10}{:>10}{:>10}{:>10}{:>10}\n",
      sent, ok, failed, duration_s, request_throughput, output_throughput, "(ms)", "mean", "p50",
      "p90", "p99");
  for (const auto& [name, p] : {std::pair<const char*, const Percentiles*>{"TTFT", &ttft_ms},
                                {"TPOT", &tpot_ms},
                                {"ITL", &itl_ms},
                                {"E2E", &e2e_ms}}) {
    s += fmt::format("{:<10}{:>10.3f}{:>10.3f}{:>10.3f}{:>10.3f}\n", name, p->mean, p->p50, p->p90,
                     p->p99);
  }
  for (const auto& r : records) {
    if (!r.ok) {
      s += "first error: " + r.error + "\n";
      break;
    }
  }
  return s;
}

Result<LoadReport> RunLoad(const LoadOptions& options,
                           const std::function<void(int, int)>& progress) {
  ELDR_RETURN_IF_ERROR(options.Validate());
  ELDR_ASSIGN_OR_RETURN(server::WorkerSpec w, server::ParseWorkerUrl(options.url));
  ELDR_ASSIGN_OR_RETURN(tcp::endpoint ep, Resolve(w.host, w.port));
  Runner r(options, ep, fmt::format("{}:{}", w.host, w.port), progress);
  return r.Run();
}

}  // namespace eldr::bench
