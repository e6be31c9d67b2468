#include "eldr/server/cluster.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <cstdio>

namespace eldr::server {

namespace json = boost::json;

namespace {

const std::vector<double> kLatencyBounds = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                            0.25,   0.5,   1,      2.5,   5,    10,    30,   60};

std::shared_ptr<const PrefillRing> MakeRing(const std::vector<std::shared_ptr<Worker>>& ws) {
  std::vector<std::string> names;
  for (const auto& w : ws) names.push_back(w->spec.url);
  return std::make_shared<const PrefillRing>(names);
}

}  // namespace

Worker::Worker(WorkerSpec s, std::string r, std::shared_ptr<const UpstreamAddress> a,
               const ServeOptions& o)
    : spec(std::move(s)),
      role(std::move(r)),
      address(std::move(a)),
      breaker(BreakerOptions(o)),
      latency(kLatencyBounds),
      ttft({0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}),
      tpot({0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5}),
      duration({0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}),
      labels(fmt::format("role=\"{}\",worker=\"{}\"", role, LabelValue(spec.url))) {}

bool Worker::CountSignature(const PrefillResult& pr, int64_t now_us) {
  signatures[static_cast<int>(pr.source)].fetch_add(1, std::memory_order_relaxed);
  last_source.store(static_cast<int>(pr.source), std::memory_order_relaxed);
  if (pr.partial) signatures_partial.fetch_add(1, std::memory_order_relaxed);
  if (!pr.rejected.empty()) signatures_rejected.fetch_add(1, std::memory_order_relaxed);
  if (pr.source != SignatureSource::kNone && !pr.partial) return false;
  int64_t last = last_signature_warning_us.load(std::memory_order_relaxed);
  return now_us - last >= int64_t{60} * 1000000 &&
         last_signature_warning_us.compare_exchange_strong(last, now_us);
}

bool AnyAvailable(const std::vector<std::shared_ptr<Worker>>& ws, int64_t now_us) {
  for (const auto& w : ws) {
    if (w->Available(now_us)) return true;
  }
  return false;
}

Ticket::Ticket(std::shared_ptr<Worker> w) : w_(std::move(w)) {
  w_->in_flight.fetch_add(1, std::memory_order_relaxed);
  w_->requests.fetch_add(1, std::memory_order_relaxed);
}

Ticket& Ticket::operator=(Ticket&& o) noexcept {
  Release();
  w_ = std::move(o.w_);
  return *this;
}

void Ticket::Release() {
  if (w_) w_->in_flight.fetch_sub(1, std::memory_order_relaxed);
  w_.reset();
}

Cluster::Cluster(const ServeOptions& o, const ModelGeometry& g, Resolver resolve)
    : o_(o), geometry_(g), resolve_(std::move(resolve)) {}

Result<std::unique_ptr<Cluster>> Cluster::Create(const ServeOptions& o, const ModelGeometry& g,
                                                 Resolver resolve) {
  std::unique_ptr<Cluster> c(new Cluster(o, g, std::move(resolve)));
  auto snap = std::make_shared<Snapshot>();
  for (const auto& w : o.prefill) {
    ELDR_ASSIGN_OR_RETURN(auto ww, c->MakeWorker(w, "prefill"));
    snap->prefill.push_back(std::move(ww));
  }
  for (const auto& w : o.decode) {
    ELDR_ASSIGN_OR_RETURN(auto ww, c->MakeWorker(w, "decode"));
    snap->decode.push_back(std::move(ww));
  }
  if (!o.space.empty()) {
    ELDR_ASSIGN_OR_RETURN(snap->space, c->LoadSpace(o.space, snap->decode.size()));
  }
  snap->ring = MakeRing(snap->prefill);
  MutexLock admin(&c->admin_mu_);  // uncontended: c is not shared yet
  c->Publish(std::move(snap));
  return c;
}

Result<std::shared_ptr<Worker>> Cluster::MakeWorker(const WorkerSpec& spec,
                                                    const std::string& role) {
  ELDR_RETURN_IF_ERROR(spec.Validate());
  ELDR_ASSIGN_OR_RETURN(auto address, resolve_(spec));
  auto w = std::make_shared<Worker>(spec, role, std::move(address), o_);
  if (role == "decode" && (o_.policy == "shadow" || o_.expert_estimate)) {
    w->actual_experts = std::make_unique<ExpertLoad>(geometry_.moe_layers, geometry_.experts);
  }
  if (role == "decode" && o_.policy == "shadow") {
    w->shadow_experts = std::make_unique<ExpertLoad>(geometry_.moe_layers, geometry_.experts);
  }
  return w;
}

Result<std::shared_ptr<const SignatureSpace>> Cluster::LoadSpace(const std::string& path,
                                                                 size_t decoders) const {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return NotFound("cannot open signature space '{}'", path);
  std::string text;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  std::fclose(f);
  auto space = SignatureSpace::FromJson(text, &geometry_);
  if (!space) return tl::unexpected<Status>(space.error().WithContext(path));
  if (static_cast<size_t>((*space)->k()) != decoders) {
    return FailedPrecondition(
        "signature space '{}' has k={} centroids but {} decode workers are configured; fit one "
        "with `eldr fit -k {}`",
        path, (*space)->k(), decoders, decoders);
  }
  return *space;
}

std::shared_ptr<const Snapshot> Cluster::Snap() const {
  MutexLock lock(&snap_mu_);
  return snap_;
}

void Cluster::Publish(std::shared_ptr<Snapshot> s) {
  EffectivePolicy& e = s->policy;
  e = EffectivePolicy{};
  const bool shadow = o_.policy == "shadow";
  e.options.name = shadow ? o_.shadow_of : o_.policy;
  e.options.decoders = static_cast<int>(s->decode.size());
  e.options.tau = o_.tau;
  e.options.band_min = o_.band_min;
  e.options.plus = {.tau = o_.plus_tau, .slack = o_.plus_slack, .sqrt_slack = o_.plus_sqrt_slack};
  e.options.space = s->space;
  e.options.label_shares = o_.label_shares;
  if ((e.options.name == "eldr" || e.options.name == "eldr-plus") &&
      (!s->space || s->space->k() != e.options.decoders)) {
    e.degraded =
        fmt::format("space k={} != {} decoders", s->space ? s->space->k() : 0, e.options.decoders);
  } else if (Status v = e.options.Validate(); !v.ok()) {
    e.degraded = v.message();
  }
  if (!e.degraded.empty()) {
    spdlog::warn("event=policy_degraded policy={} reason=\"{}\" action=\"jsq until reload\"",
                 o_.policy, e.degraded);
    e.options.name = "jsq";
    e.options.space = nullptr;
  }
  s->shadow.reset();
  s->shadow_degraded.clear();
  if (shadow) {
    PolicyOptions c = e.options;
    c.name = o_.shadow_candidate;
    c.space = s->space;
    if (!s->space || s->space->k() != c.decoders) {
      s->shadow_degraded =
          fmt::format("space k={} != {} decoders", s->space ? s->space->k() : 0, c.decoders);
    } else if (Status v = c.Validate(); !v.ok()) {
      s->shadow_degraded = v.message();
    }
    if (s->shadow_degraded.empty()) {
      s->shadow = std::move(c);
    } else {
      spdlog::warn(
          "event=shadow_degraded candidate={} reason=\"{}\" action=\"no shadow choice "
          "until reload\"",
          o_.shadow_candidate, s->shadow_degraded);
    }
  }
  MutexLock lock(&snap_mu_);
  s->version = snap_ ? snap_->version + 1 : 0;
  snap_ = std::move(s);
}

Decision Cluster::RouteDecode(const Snapshot& s, PolicySlot& slot, const ExpertCounts* counts,
                              std::span<const uint8_t> excluded, int64_t now_us,
                              std::string_view label) {
  Decision d;
  if (s.decode.empty()) return d;
  if (slot.version != s.version || !slot.policy) {
    // Publish validated these options.
    auto p = MakePolicy(s.policy.options);
    if (!p) {
      spdlog::error("event=policy_error policy={} error=\"{}\"", s.policy.options.name,
                    p.error().message());
      return d;
    }
    slot.policy = std::move(*p);
    slot.shadow_policy.reset();
    if (s.shadow) {
      auto sp = MakePolicy(*s.shadow);
      if (sp) slot.shadow_policy = std::move(*sp);
    }
    slot.version = s.version;
    slot.rng = Rng(slot.seed ^ s.version);
  }
  slot.loads.resize(s.decode.size());
  slot.avail.resize(s.decode.size());
  for (size_t i = 0; i < s.decode.size(); ++i) {
    slot.loads[i] = s.decode[i]->in_flight.load(std::memory_order_relaxed);
    slot.avail[i] = s.decode[i]->Available(now_us) && (excluded.empty() || !excluded[i]) ? 1 : 0;
  }
  RouteRequest rr;
  rr.counts = counts;
  rr.label = label;
  const auto t0 = std::chrono::steady_clock::now();
  auto r = slot.policy->Route(rr, ClusterView{slot.loads, slot.avail}, slot.rng);
  decision_s_.Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  if (!r) {
    // No available decoder is the expected failure; anything else is a policy bug worth a log.
    if (r.error().code() != StatusCode::kUnavailable) {
      spdlog::error("event=policy_error policy={} error=\"{}\"", s.policy.options.name,
                    r.error().message());
    }
    return d;
  }
  d.decoder = r->decoder;
  d.fallback = r->fallback || !s.policy.degraded.empty();
  d.band = r->band_size;
  if (d.fallback) fallbacks_.fetch_add(1, std::memory_order_relaxed);
  if (d.band > 0) band_.Observe(d.band);
  if (o_.policy == "shadow") {
    // The candidate sees the loads its own (virtual) routing would have made.
    if (slot.shadow_policy && counts != nullptr) {
      slot.shadow_loads.resize(s.decode.size());
      for (size_t i = 0; i < s.decode.size(); ++i) {
        slot.shadow_loads[i] = s.decode[i]->shadow_in_flight.load(std::memory_order_relaxed);
      }
      auto c = slot.shadow_policy->Route(rr, ClusterView{slot.shadow_loads, slot.avail}, slot.rng);
      if (c && !c->fallback) d.shadow = c->decoder;
    }
    if (d.shadow < 0) {
      shadow_unknown_.fetch_add(1, std::memory_order_relaxed);
    } else {
      (d.shadow == d.decoder ? shadow_agree_ : shadow_disagree_)
          .fetch_add(1, std::memory_order_relaxed);
    }
  }
  return d;
}

ShadowTicket::ShadowTicket(const Snapshot& s, const Decision& d, const ExpertCounts* counts,
                           int top_k) {
  const size_t n = s.decode.size();
  if (d.decoder < 0 || static_cast<size_t>(d.decoder) >= n || counts == nullptr) return;
  if (!s.decode[d.decoder]->actual_experts) return;  // the estimate is off
  actual_ = s.decode[d.decoder];
  if (d.shadow >= 0 && static_cast<size_t>(d.shadow) < n && s.decode[d.shadow]->shadow_experts) {
    shadow_ = s.decode[d.shadow];
  }
  if (shadow_ || !s.shadow) {
    // Outside shadow mode the real routing's estimate alone; in shadow mode a request without a
    // shadow choice is left out of both, so the two sums compare the same requests.
    footprint_ = ShadowFootprint::FromCounts(*counts, top_k);
    actual_->actual_experts->Add(footprint_);
  } else {
    actual_.reset();
    return;
  }
  if (shadow_) {
    shadow_->shadow_experts->Add(footprint_);
    shadow_->shadow_in_flight.fetch_add(1, std::memory_order_relaxed);
  }
}

ShadowTicket::~ShadowTicket() {
  if (actual_) actual_->actual_experts->Remove(footprint_);
  if (shadow_) {
    shadow_->shadow_experts->Remove(footprint_);
    shadow_->shadow_in_flight.fetch_sub(1, std::memory_order_relaxed);
  }
}

Status Cluster::AddWorker(const std::string& role, const std::string& url) {
  if (role != "prefill" && role != "decode") {
    return InvalidArgument("role must be prefill or decode");
  }
  ELDR_ASSIGN_OR_RETURN(WorkerSpec spec, ParseWorkerUrl(url));
  ELDR_ASSIGN_OR_RETURN(auto w, MakeWorker(spec, role));
  MutexLock admin(&admin_mu_);
  auto s = std::make_shared<Snapshot>(*Snap());
  auto& list = role == "prefill" ? s->prefill : s->decode;
  for (const auto& x : list) {
    if (x->spec.url == url) return FailedPrecondition("{} worker {} already exists", role, url);
  }
  list.push_back(std::move(w));
  if (role == "prefill") s->ring = MakeRing(s->prefill);
  Publish(std::move(s));
  spdlog::info("event=worker_added role={} worker={}", role, url);
  return Status::Ok();
}

Status Cluster::RemoveWorker(const std::string& role, const std::string& url) {
  if (role != "prefill" && role != "decode") {
    return InvalidArgument("role must be prefill or decode");
  }
  MutexLock admin(&admin_mu_);
  auto s = std::make_shared<Snapshot>(*Snap());
  auto& list = role == "prefill" ? s->prefill : s->decode;
  auto it =
      std::find_if(list.begin(), list.end(), [&](const auto& w) { return w->spec.url == url; });
  if (it == list.end()) return NotFound("no {} worker {}", role, url);
  if (list.size() == 1) return FailedPrecondition("cannot remove the last {} worker", role);
  list.erase(it);  // in-flight requests keep their shared_ptr and finish normally
  if (role == "prefill") s->ring = MakeRing(s->prefill);
  Publish(std::move(s));
  spdlog::info("event=worker_removed role={} worker={}", role, url);
  return Status::Ok();
}

Status Cluster::Drain(const std::string& role, const std::string& url, bool drain) {
  if (role != "prefill" && role != "decode") {
    return InvalidArgument("role must be prefill or decode");
  }
  auto s = Snap();
  for (const auto& w : role == "prefill" ? s->prefill : s->decode) {
    if (w->spec.url == url) {
      w->draining = drain;
      spdlog::info("event=worker_drain role={} worker={} drain={}", role, url, drain);
      return Status::Ok();
    }
  }
  return NotFound("no {} worker {}", role, url);
}

Status Cluster::Reload(const std::string& path_in) {
  const std::string path = path_in.empty() ? o_.space : path_in;
  if (path.empty()) return InvalidArgument("no signature space path configured or given");
  MutexLock admin(&admin_mu_);
  auto cur = Snap();
  ELDR_ASSIGN_OR_RETURN(auto space, LoadSpace(path, cur->decode.size()));
  auto s = std::make_shared<Snapshot>(*cur);
  s->space = std::move(space);
  Publish(std::move(s));
  spdlog::info("event=space_reloaded path={} k={}", path, cur->decode.size());
  return Status::Ok();
}

Status Cluster::SwapSpace(const std::shared_ptr<const SignatureSpace>& expected,
                          std::shared_ptr<const SignatureSpace> next) {
  MutexLock admin(&admin_mu_);
  auto cur = Snap();
  if (cur->space != expected) {
    return FailedPrecondition("the space changed while refitting (reload or another refit)");
  }
  if (!next || static_cast<size_t>(next->k()) != cur->decode.size()) {
    return FailedPrecondition("refitted space has k={}, the cluster {} decoders",
                              next ? next->k() : 0, cur->decode.size());
  }
  auto s = std::make_shared<Snapshot>(*cur);
  s->space = std::move(next);
  Publish(std::move(s));
  return Status::Ok();
}

std::string Cluster::WorkersJson(int64_t now) const {
  auto s = Snap();
  json::array ws;
  for (const auto* list : {&s->prefill, &s->decode}) {
    for (const auto& w : *list) {
      json::object o{{"role", w->role},
                     {"url", w->spec.url},
                     {"in_flight", w->in_flight.load()},
                     {"requests", w->requests.load()},
                     {"errors", w->errors.load()},
                     {"draining", w->draining.load()},
                     {"circuit", CircuitStateName(w->breaker.State(now))}};
      if (list == &s->prefill) {
        json::object by;
        for (int i = 0; i < kSignatureSources; ++i) {
          by[SignatureSourceName(static_cast<SignatureSource>(i))] = w->signatures[i].load();
        }
        const int last = w->last_source.load();
        o["signature"] = json::object{
            {"last_source",
             last < 0 ? json::value(nullptr)
                      : json::value(SignatureSourceName(static_cast<SignatureSource>(last)))},
            {"by_source", std::move(by)},
            {"without_signature", w->signatures[0].load()},
            {"rejected", w->signatures_rejected.load()},
            {"partial", w->signatures_partial.load()}};
      }
      ws.push_back(std::move(o));
    }
  }
  const std::string policy =
      s->policy.degraded.empty()
          ? o_.policy
          : fmt::format("jsq ({} degraded: {})", o_.policy, s->policy.degraded);
  json::object out{{"workers", std::move(ws)},
                   {"policy", policy},
                   {"space_k", s->space ? s->space->k() : 0},
                   {"version", s->version}};
  return json::serialize(out);
}

void Cluster::RenderMetrics(std::string* out, int64_t now) const {
  auto s = Snap();
  struct Def {
    const char* name;
    const char* type;
    const char* help;
  };
  static constexpr Def kDefs[] = {
      {"eldr_worker_requests_total", "counter", "Legs sent to a worker"},
      {"eldr_worker_errors_total", "counter", "Failed legs (transport, 5xx, malformed)"},
      {"eldr_worker_in_flight", "gauge", "Legs in flight on a worker"},
      {"eldr_worker_available", "gauge", "1 if the worker may be chosen"},
      {"eldr_worker_circuit_opened_total", "counter", "Times the worker's circuit opened"}};
  for (int k = 0; k < 5; ++k) {
    MetricHeader(out, kDefs[k].name, kDefs[k].type, kDefs[k].help);
    for (const auto* list : {&s->prefill, &s->decode}) {
      for (const auto& w : *list) {
        double v = 0;
        switch (k) {
          case 0:
            v = static_cast<double>(w->requests.load());
            break;
          case 1:
            v = static_cast<double>(w->errors.load());
            break;
          case 2:
            v = static_cast<double>(w->in_flight.load());
            break;
          case 3:
            v = w->Available(now) ? 1 : 0;
            break;
          default:
            v = static_cast<double>(w->breaker.opened_count());
        }
        MetricSample(out, kDefs[k].name, w->labels, v);
      }
    }
  }
  MetricHeader(out, "eldr_upstream_latency_seconds", "histogram",
               "Prefill leg time; decode leg time to first body byte");
  for (const auto* list : {&s->prefill, &s->decode}) {
    for (const auto& w : *list) w->latency.Render(out, "eldr_upstream_latency_seconds", w->labels);
  }
  const std::tuple<const char*, const char*, Histogram Worker::*> client_side[] = {
      {"eldr_decode_ttft_seconds",
       "Streams answered by the decode worker: time from the request's arrival to its first "
       "relayed byte",
       &Worker::ttft},
      {"eldr_decode_tpot_seconds",
       "Streams answered by the decode worker: time per output token after the first",
       &Worker::tpot},
      {"eldr_request_duration_seconds",
       "Requests answered by the decode worker: arrival to the last relayed byte",
       &Worker::duration}};
  for (const auto& [name, help, field] : client_side) {
    MetricHeader(out, name, "histogram", help);
    for (const auto& w : s->decode) ((*w).*field).Render(out, name, w->labels);
  }
  MetricHeader(out, "eldr_prefill_signatures_total", "counter",
               "Prefill answers by where their routed experts came from (none: no usable ones)");
  for (const auto& w : s->prefill) {
    for (int i = 0; i < kSignatureSources; ++i) {
      MetricSample(out, "eldr_prefill_signatures_total",
                   fmt::format("{},source=\"{}\"", w->labels,
                               SignatureSourceName(static_cast<SignatureSource>(i))),
                   static_cast<double>(w->signatures[i].load()));
    }
  }
  MetricHeader(out, "eldr_prefill_signatures_rejected_total", "counter",
               "Prefill answers whose routed experts did not match the prompt (not used)");
  for (const auto& w : s->prefill) {
    MetricSample(out, "eldr_prefill_signatures_rejected_total", w->labels,
                 static_cast<double>(w->signatures_rejected.load()));
  }
  MetricHeader(out, "eldr_prefill_signatures_partial_total", "counter",
               "Prefill answers with no routes for some prompt positions (-1 rows)");
  for (const auto& w : s->prefill) {
    MetricSample(out, "eldr_prefill_signatures_partial_total", w->labels,
                 static_cast<double>(w->signatures_partial.load()));
  }
  MetricHeader(out, "eldr_decision_latency_seconds", "histogram",
               "Decode routing decision (embed, score, band, pick)");
  decision_s_.Render(out, "eldr_decision_latency_seconds", "");
  MetricHeader(out, "eldr_band_size", "histogram", "Decoders in the ELDR locality band");
  band_.Render(out, "eldr_band_size", "");
  MetricHeader(out, "eldr_policy_fallbacks_total", "counter",
               "Decode decisions without a usable signature (load balancing instead)");
  MetricSample(out, "eldr_policy_fallbacks_total", "", static_cast<double>(fallbacks_.load()));
  if (o_.expert_estimate && o_.policy != "shadow") {
    MetricHeader(out, "eldr_decode_expected_distinct_experts", "gauge",
                 "Expected distinct experts per MoE layer in one decode step of the requests in "
                 "flight on the decode worker, from their prompt signatures (docs/serve.md)");
    for (const auto& w : s->decode) {
      if (w->actual_experts) {
        MetricSample(out, "eldr_decode_expected_distinct_experts", w->labels,
                     w->actual_experts->ExpectedDistinct());
      }
    }
  }
  if (o_.policy != "shadow") return;
  MetricHeader(out, "eldr_shadow_decisions_total", "counter",
               "Shadow mode: decisions where the candidate (shadow_candidate) agrees with the "
               "routing policy (shadow_of), disagrees, or made no choice (no signature)");
  const std::pair<const char*, uint64_t> outcomes[] = {{"agree", shadow_agree_.load()},
                                                       {"disagree", shadow_disagree_.load()},
                                                       {"no_choice", shadow_unknown_.load()}};
  for (const auto& [name, v] : outcomes) {
    MetricSample(out, "eldr_shadow_decisions_total", fmt::format("outcome=\"{}\"", name),
                 static_cast<double>(v));
  }
  MetricHeader(out, "eldr_shadow_expected_distinct_experts", "gauge",
               "Shadow mode: expected distinct experts per MoE layer in one decode step of the "
               "requests in flight on the worker, under the real routing (actual) and the "
               "candidate's (shadow); docs/serve.md");
  MetricHeader(out, "eldr_shadow_in_flight", "gauge",
               "Shadow mode: requests the candidate would have in flight on the worker");
  double total_actual = 0, total_shadow = 0;
  for (const auto& w : s->decode) {
    if (!w->actual_experts) continue;
    const double a = w->actual_experts->ExpectedDistinct();
    const double b = w->shadow_experts->ExpectedDistinct();
    total_actual += a;
    total_shadow += b;
    MetricSample(out, "eldr_shadow_expected_distinct_experts",
                 fmt::format("{},routing=\"actual\"", w->labels), a);
    MetricSample(out, "eldr_shadow_expected_distinct_experts",
                 fmt::format("{},routing=\"shadow\"", w->labels), b);
    MetricSample(out, "eldr_shadow_in_flight", w->labels,
                 static_cast<double>(w->shadow_in_flight.load()));
  }
  MetricHeader(out, "eldr_shadow_predicted_change_ratio", "gauge",
               "Shadow mode: sum over decoders of the shadow estimate over the actual one, minus "
               "1 (negative: the candidate would load fewer experts per step); 0 when idle");
  MetricSample(out, "eldr_shadow_predicted_change_ratio", "",
               total_actual > 0 ? total_shadow / total_actual - 1 : 0.0);
}

}  // namespace eldr::server
