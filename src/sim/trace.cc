#include "eldr/sim/trace.h"

#include <algorithm>
#include <array>
#include <boost/json.hpp>
#include <cmath>
#include <cstring>
#include <numeric>
#include <tuple>

#include "eldr/rng.h"

namespace eldr::sim {

namespace {

constexpr std::array<uint8_t, 8> kMagic = {'E', 'L', 'D', 'R', 'T', 'R', 'C', '1'};

class Reader {
 public:
  explicit Reader(std::span<const uint8_t> b) : b_(b) {}
  bool Get(void* out, size_t n) {
    if (n > b_.size() - pos_) return false;
    if (n == 0) return true;  // `out` may be null then (an empty label or pick list)
    std::memcpy(out, b_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  template <class T>
  bool Get(T* v) {
    return Get(static_cast<void*>(v), sizeof(T));
  }
  size_t remaining() const { return b_.size() - pos_; }
  size_t pos() const { return pos_; }

 private:
  std::span<const uint8_t> b_;
  size_t pos_ = 0;
};

template <class T>
void Put(std::vector<uint8_t>& out, T v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  out.insert(out.end(), p, p + sizeof(T));
}

}  // namespace

std::vector<uint8_t> SerializeTrace(const Trace& t) {
  boost::json::object h;
  h["format"] = kTraceFormat;
  h["version"] = kTraceVersion;
  h["model"] = t.geometry.name;
  // Described too, so a trace of a model read from its config.json reads back without it.
  h["geometry"] = boost::json::parse(ModelGeometryToJson(t.geometry));
  h["source"] = t.source;
  h["prefix_tokens"] = t.prefix_tokens;
  h["requests"] = t.requests.size();
  const int id_bytes = t.geometry.experts <= 256 ? 1 : 2;
  h["id_bytes"] = id_bytes;
  const std::string header = boost::json::serialize(h);
  std::vector<uint8_t> out;
  out.reserve(1 << 16);
  for (uint8_t c : kMagic) out.push_back(c);
  Put<uint32_t>(out, static_cast<uint32_t>(header.size()));
  out.insert(out.end(), header.begin(), header.end());
  for (const auto& r : t.requests) {
    Put<uint16_t>(out, static_cast<uint16_t>(r.label.size()));
    out.insert(out.end(), r.label.begin(), r.label.end());
    Put<uint32_t>(out, static_cast<uint32_t>(r.prompt_tokens));
    Put<uint32_t>(out, static_cast<uint32_t>(r.tokens));
    for (uint16_t p : r.picks) {
      if (id_bytes == 1) {
        out.push_back(static_cast<uint8_t>(p));
      } else {
        Put<uint16_t>(out, p);
      }
    }
  }
  return out;
}

bool IsTraceBytes(std::span<const uint8_t> bytes) {
  return bytes.size() >= kMagic.size() && std::equal(kMagic.begin(), kMagic.end(), bytes.begin());
}

Result<Trace> ParseTrace(std::span<const uint8_t> bytes) {
  Reader rd(bytes);
  std::array<uint8_t, 8> magic{};
  if (!rd.Get(magic.data(), 8) || magic != kMagic) {
    return InvalidArgument("trace: not an eldr trace file (bad magic)");
  }
  uint32_t hlen = 0;
  if (!rd.Get(&hlen) || hlen > rd.remaining() || hlen > (1u << 20)) {
    return InvalidArgument("trace: truncated or oversized header");
  }
  std::string header(hlen, '\0');
  rd.Get(header.data(), hlen);
  boost::system::error_code ec;
  auto v = boost::json::parse(header, ec);
  if (ec || !v.is_object()) return InvalidArgument("trace: header is not a JSON object");
  const auto& h = v.get_object();
  auto str = [&](const char* k) -> std::string {
    const auto* x = h.if_contains(k);
    return x && x->is_string() ? std::string(x->get_string()) : std::string();
  };
  auto num = [&](const char* k) -> int64_t {
    const auto* x = h.if_contains(k);
    return x && x->is_int64() ? x->get_int64() : (x && x->is_uint64() ? x->get_uint64() : -1);
  };
  if (str("format") != kTraceFormat) return FailedPrecondition("trace: format is not eldr.trace");
  if (num("version") != kTraceVersion) {
    return FailedPrecondition("trace: version {} is not supported (this eldr reads {})",
                              num("version"), kTraceVersion);
  }
  const auto* gj = h.if_contains("geometry");
  auto g = ModelFromFileHeader(str("model"), gj ? boost::json::serialize(*gj) : std::string());
  if (!g) return tl::unexpected<Status>(g.error().WithContext("trace"));
  const int64_t id_bytes = num("id_bytes");
  if (id_bytes != 1 && id_bytes != 2) return InvalidArgument("trace: id_bytes must be 1 or 2");
  Trace t;
  t.geometry = *g;
  t.source = str("source");
  t.prefix_tokens = static_cast<int>(num("prefix_tokens"));
  const int64_t n = num("requests");
  if (n < 0 || t.prefix_tokens < 0) return InvalidArgument("trace: bad requests/prefix_tokens");
  const size_t row = static_cast<size_t>(g->moe_layers) * g->top_k;
  for (int64_t i = 0; i < n; ++i) {
    TraceRequest r;
    uint16_t llen;
    uint32_t prompt, tokens;
    if (!rd.Get(&llen) || llen > rd.remaining())
      return InvalidArgument("trace: truncated at request {}", i);
    r.label.resize(llen);
    rd.Get(r.label.data(), llen);
    if (!rd.Get(&prompt) || !rd.Get(&tokens))
      return InvalidArgument("trace: truncated at request {}", i);
    if (tokens > (1u << 20) || static_cast<size_t>(tokens) * row * id_bytes > rd.remaining()) {
      return InvalidArgument("trace: request {} claims {} tokens beyond the file's end", i, tokens);
    }
    r.prompt_tokens = static_cast<int>(std::min<uint32_t>(prompt, 1u << 24));
    r.tokens = static_cast<int>(tokens);
    r.picks.resize(static_cast<size_t>(tokens) * row);
    if (id_bytes == 2) {
      rd.Get(r.picks.data(), r.picks.size() * 2);
    } else {
      for (auto& p : r.picks) {
        uint8_t b = 0;
        rd.Get(&b);
        p = b;
      }
    }
    for (size_t tok = 0; tok < tokens; ++tok) {
      for (int l = 0; l < g->moe_layers; ++l) {
        const uint16_t* p = r.picks.data() + tok * row + static_cast<size_t>(l) * g->top_k;
        for (int j = 0; j < g->top_k; ++j) {
          if (p[j] >= g->experts) {
            return OutOfRange("trace: request {} token {} layer {}: expert {} outside [0, {})", i,
                              tok, l, p[j], g->experts);
          }
          for (int k = 0; k < j; ++k) {
            if (p[k] == p[j]) {
              return InvalidArgument("trace: request {} token {} layer {}: expert {} repeated", i,
                                     tok, l, p[j]);
            }
          }
        }
      }
    }
    t.requests.push_back(std::move(r));
  }
  if (rd.remaining() != 0) return InvalidArgument("trace: {} trailing bytes", rd.remaining());
  return t;
}

Status TraceWorkloadOptions::Validate() const {
  if (requests < 1)
    return InvalidArgument("trace workload: requests must be >= 1, got {}", requests);
  if (!(rate_qps > 0))
    return InvalidArgument("trace workload: rate_qps must be > 0, got {}", rate_qps);
  if (output_tokens < 2) {
    return InvalidArgument("trace workload: output_tokens must be >= 2, got {}", output_tokens);
  }
  if (min_decode_tokens < 1) {
    return InvalidArgument("trace workload: min_decode_tokens must be >= 1, got {}",
                           min_decode_tokens);
  }
  if (!(calibration_fraction > 0 && calibration_fraction < 1)) {
    return InvalidArgument("trace workload: calibration_fraction must be in (0, 1), got {}",
                           calibration_fraction);
  }
  return Status::Ok();
}

bool PoolTooSmall(int64_t peak_in_flight, int pool) {
  return 2 * peak_in_flight > static_cast<int64_t>(pool);
}

namespace {

// Indices of t's usable requests (>= prefix_tokens + min_decode_tokens routed tokens), in trace
// order; fills `usage` and raises `patterns` to the longest usable decode part.
std::vector<int> UsableRequests(const Trace& t, int min_decode_tokens, TraceUsage* usage,
                                int* patterns) {
  std::vector<int> usable;
  usage->requests = static_cast<int>(t.requests.size());
  usage->min_routed_tokens = t.prefix_tokens + min_decode_tokens;
  for (size_t i = 0; i < t.requests.size(); ++i) {
    const int decode = t.requests[i].tokens - t.prefix_tokens;
    if (decode >= min_decode_tokens) {  // min_decode_tokens >= 1, so tokens > prefix_tokens
      usable.push_back(static_cast<int>(i));
      *patterns = std::max(*patterns, decode);
    }
  }
  usage->usable = static_cast<int>(usable.size());
  usage->too_short = usage->requests - usage->usable;
  return usable;
}

// One source request of a workload: the trace it comes from and its index there.
struct Source {
  const Trace* trace;
  int index;
};

WorkloadRequest MakeRequest(const Workload& w, const Source& src, int id, bool calibration,
                            int output_tokens) {
  const Trace& t = *src.trace;
  const TraceRequest& tr = t.requests[src.index];
  const int L = w.geometry.moe_layers, E = w.geometry.experts, K = w.geometry.top_k;
  const size_t row = static_cast<size_t>(L) * K;
  WorkloadRequest r;
  r.id = id;
  r.label =
      static_cast<int>(std::find(w.labels.begin(), w.labels.end(), tr.label) - w.labels.begin());
  r.prompt_tokens = std::max(1, tr.prompt_tokens);
  r.output_tokens = output_tokens;
  r.prefill = ExpertCounts(L, E);
  if (calibration) r.decode = ExpertCounts(L, E);
  r.bits.assign(static_cast<size_t>(w.token_patterns) * L * w.words, 0);
  const int decode = tr.tokens - t.prefix_tokens;
  for (int tok = 0; tok < tr.tokens; ++tok) {
    const uint16_t* p = tr.picks.data() + static_cast<size_t>(tok) * row;
    for (int l = 0; l < L; ++l)
      for (int j = 0; j < K; ++j) {
        const int e = p[l * K + j];
        if (tok < t.prefix_tokens) {
          ++r.prefill.at(l, e);
        } else if (calibration) {
          ++r.decode.at(l, e);
        }
      }
  }
  for (int pat = 0; pat < w.token_patterns; ++pat) {  // shorter requests cycle their decode tokens
    const uint16_t* p = tr.picks.data() + static_cast<size_t>(t.prefix_tokens + pat % decode) * row;
    for (int l = 0; l < L; ++l) {
      uint64_t* b = r.bits.data() + (static_cast<size_t>(pat) * L + l) * w.words;
      for (int j = 0; j < K; ++j) b[p[l * K + j] >> 6] |= uint64_t{1} << (p[l * K + j] & 63);
    }
  }
  return r;
}

// Builds the workload from a calibration set and an evaluation pool; replays the pool in
// shuffled passes (each pool request once per pass) until o.requests are generated.
Workload Assemble(const ModelGeometry& g, int patterns, const std::vector<Source>& cal,
                  std::vector<Source> pool, const TraceWorkloadOptions& o, Rng& rng,
                  TraceReplayStats* stats) {
  Workload w;
  w.geometry = g;
  w.kind = "trace";
  w.words = (g.experts + 63) / 64;
  w.token_patterns = patterns;
  for (const Source& s : cal) w.labels.push_back(s.trace->requests[s.index].label);
  for (const Source& s : pool) w.labels.push_back(s.trace->requests[s.index].label);
  std::sort(w.labels.begin(), w.labels.end());
  w.labels.erase(std::unique(w.labels.begin(), w.labels.end()), w.labels.end());
  for (size_t i = 0; i < cal.size(); ++i)
    w.calibration.push_back(
        MakeRequest(w, cal[i], -1 - static_cast<int>(i), true, o.output_tokens));
  std::vector<double> count(w.labels.size(), 0);
  for (const auto& r : w.calibration) count[r.label] += 1;
  for (double c : count) w.label_shares.push_back(c / static_cast<double>(w.calibration.size()));
  double time = 0;
  w.requests.reserve(o.requests);
  for (int i = 0; i < o.requests; ++i) {
    const size_t k = static_cast<size_t>(i) % pool.size();
    if (k == 0) Shuffle(std::span(pool), rng);  // a new pass: a fresh permutation of the pool
    WorkloadRequest r = MakeRequest(w, pool[k], i, false, o.output_tokens);
    time += -std::log(1 - rng.UniformDouble()) / o.rate_qps;
    r.arrival_us = static_cast<int64_t>(time * 1e6);
    w.requests.push_back(std::move(r));
  }
  stats->calibrating = static_cast<int>(w.calibration.size());
  stats->pool = static_cast<int>(pool.size());
  stats->generated = o.requests;
  stats->passes =
      static_cast<int>((static_cast<int64_t>(o.requests) + stats->pool - 1) / stats->pool);
  return w;
}

bool SameGeometry(const ModelGeometry& a, const ModelGeometry& b) {
  return a.name == b.name && a.moe_layers == b.moe_layers && a.experts == b.experts &&
         a.top_k == b.top_k;
}

}  // namespace

Result<Workload> MakeTraceWorkload(const Trace& t, const TraceWorkloadOptions& o,
                                   TraceReplayStats* stats) {
  TraceReplayStats local;
  if (stats == nullptr) stats = &local;
  *stats = TraceReplayStats{};
  ELDR_RETURN_IF_ERROR(o.Validate());
  int patterns = 0;
  std::vector<int> usable = UsableRequests(t, o.min_decode_tokens, &stats->eval_trace, &patterns);
  if (usable.size() < 4) {
    return InvalidArgument(
        "trace has {} of {} requests with at least {} + {} routed tokens (prefix_tokens + "
        "min_decode_tokens); need 4",
        usable.size(), t.requests.size(), t.prefix_tokens, o.min_decode_tokens);
  }
  Rng rng(o.seed);
  Shuffle(std::span(usable), rng);
  const size_t n_cal = std::max<size_t>(
      2, std::min(usable.size() - 2,
                  static_cast<size_t>(std::lround(usable.size() * o.calibration_fraction))));
  std::vector<Source> cal, pool;
  for (size_t i = 0; i < usable.size(); ++i) (i < n_cal ? cal : pool).push_back({&t, usable[i]});
  return Assemble(t.geometry, patterns, cal, std::move(pool), o, rng, stats);
}

Result<Workload> MakeTraceWorkload(const Trace& eval, const Trace& calibration,
                                   const TraceWorkloadOptions& o, TraceReplayStats* stats) {
  TraceReplayStats local;
  if (stats == nullptr) stats = &local;
  *stats = TraceReplayStats{};
  stats->separate_calibration = true;
  ELDR_RETURN_IF_ERROR(o.Validate());
  const ModelGeometry& g = eval.geometry;
  const ModelGeometry& c = calibration.geometry;
  if (!SameGeometry(g, c)) {
    return InvalidArgument(
        "calibration trace is for {} ({} MoE layers x {} experts, top-{}) but the evaluation "
        "trace is for {} ({} x {}, top-{}); both must be for the same model",
        c.name, c.moe_layers, c.experts, c.top_k, g.name, g.moe_layers, g.experts, g.top_k);
  }
  if (&eval == &calibration) {
    return InvalidArgument(
        "the calibration trace is the evaluation trace; use the single-trace split "
        "(calibration_fraction) for one trace");
  }
  int patterns = 0;
  const std::vector<int> eval_usable =
      UsableRequests(eval, o.min_decode_tokens, &stats->eval_trace, &patterns);
  const std::vector<int> cal_usable =
      UsableRequests(calibration, o.min_decode_tokens, &stats->calibration_trace, &patterns);
  for (const auto& [name, tr, n] : {std::tuple{"evaluation", &eval, eval_usable.size()},
                                    std::tuple{"calibration", &calibration, cal_usable.size()}}) {
    if (n < 2) {
      return InvalidArgument(
          "{} trace has {} of {} requests with at least {} + {} routed tokens (prefix_tokens + "
          "min_decode_tokens); need 2",
          name, n, tr->requests.size(), tr->prefix_tokens, o.min_decode_tokens);
    }
  }
  std::vector<Source> cal, pool;
  for (int i : cal_usable) cal.push_back({&calibration, i});
  for (int i : eval_usable) pool.push_back({&eval, i});
  Rng rng(o.seed);
  return Assemble(g, patterns, cal, std::move(pool), o, rng, stats);
}

}  // namespace eldr::sim
