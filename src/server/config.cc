#include "eldr/server/config.h"

#include <yaml-cpp/yaml.h>

#include <charconv>
#include <set>

#include "eldr/net/wire.h"
#include "eldr/policy.h"
#include "eldr/server/pd.h"

namespace eldr::server {

std::string_view BackendName(Backend b) { return b == Backend::kVllm ? "vllm" : "sglang"; }

Status WorkerSpec::Validate() const {
  if (host.empty()) return InvalidArgument("worker '{}': empty host", url);
  if (port < 1 || port > 65535) return InvalidArgument("worker '{}': port out of range", url);
  if (bootstrap_port < 0 || bootstrap_port > 65535) {
    return InvalidArgument("worker '{}': bootstrap_port out of range", url);
  }
  return Status::Ok();
}

Result<WorkerSpec> ParseWorkerUrl(std::string_view url, bool listen) {
  auto hp = net::ParseHttpUrl(url, listen);
  if (!hp) return tl::unexpected<Status>(hp.error().WithContext("worker"));
  WorkerSpec w;
  w.url = std::string(url);
  w.host = std::move(hp->host);
  w.port = hp->port;
  if (listen && w.port == 0) return w;
  ELDR_RETURN_IF_ERROR(w.Validate());
  return w;
}

CircuitBreakerOptions BreakerOptions(const ServeOptions& o) {
  CircuitBreakerOptions b;
  b.failure_threshold = o.failure_threshold;
  b.window_us = int64_t{o.breaker_window_ms} * 1000;
  b.open_us = int64_t{o.open_ms} * 1000;
  b.success_threshold = o.breaker_success_threshold;
  b.failure_rate = o.breaker_failure_rate;
  return b;
}

RetryOptions RetryOptionsOf(const ServeOptions& o) {
  RetryOptions r;
  r.max_retries = o.max_retries;
  r.initial_backoff_us = int64_t{o.retry_initial_backoff_ms} * 1000;
  r.max_backoff_us = int64_t{o.retry_max_backoff_ms} * 1000;
  r.backoff_multiplier = o.retry_backoff_multiplier;
  r.jitter_factor = o.retry_jitter_factor;
  return r;
}

Status ServeOptions::Validate() const {
  if (host.empty()) return InvalidArgument("listen host is empty");
  if (port < 0 || port > 65535) return InvalidArgument("listen port {} out of range", port);
  if (threads < 0 || threads > 256) return InvalidArgument("threads must be in [0, 256]");
  if (busy_poll_us < 0 || busy_poll_us > 1000000) {
    return InvalidArgument("busy_poll_us must be in [0, 1000000]");
  }
  if (prefill.empty()) return InvalidArgument("no prefill workers configured");
  if (decode.empty()) return InvalidArgument("no decode workers configured");
  std::set<std::string> seen;
  for (const auto* list : {&prefill, &decode}) {
    for (const auto& w : *list) {
      ELDR_RETURN_IF_ERROR(w.Validate());
      const std::string key =
          fmt::format("{}{}:{}/{}", list == &prefill ? "P" : "D", w.host, w.port, w.dp_rank);
      if (!seen.insert(key).second) return InvalidArgument("worker '{}' listed twice", w.url);
    }
  }
  bool known = policy == "shadow";
  for (auto n : PolicyNames()) known |= n == policy;
  if (!known) {
    return InvalidArgument(
        "policy '{}' cannot serve: use rr, random, jsq, p2c, domain, eldr, eldr-plus or shadow",
        policy);
  }
  if (policy == "domain" && label_shares.empty()) {
    return InvalidArgument(
        "policy domain needs label_shares (a map label -> share, or --label-shares-from a "
        "calibration file) and requests labelled by the X-Eldr-Label header");
  }
  for (const auto& ls : label_shares) {
    if (ls.label.empty() || !(ls.share > 0) || !std::isfinite(ls.share)) {
      return InvalidArgument("label_shares: '{}' needs a non-empty label and a share > 0 (got {})",
                             ls.label, ls.share);
    }
  }
  if (policy == "shadow") {
    if (shadow_of != "rr" && shadow_of != "random" && shadow_of != "jsq" && shadow_of != "p2c") {
      return InvalidArgument("shadow_of must be a load policy (rr, random, jsq or p2c), got '{}'",
                             shadow_of);
    }
    if (shadow_candidate != "eldr" && shadow_candidate != "eldr-plus") {
      return InvalidArgument("shadow_candidate must be eldr or eldr-plus, got '{}'",
                             shadow_candidate);
    }
    if (space.empty()) {
      return InvalidArgument("policy shadow needs a signature space (space: file from `eldr fit`)");
    }
  }
  if ((policy == "eldr" || policy == "eldr-plus") && space.empty()) {
    return InvalidArgument("policy {} needs a signature space (space: file from `eldr fit`)",
                           policy);
  }
  if (!(plus_tau >= 0 && plus_tau <= 2)) {
    return InvalidArgument("plus_tau must be in [0, 2] (got {})", plus_tau);
  }
  if (!(plus_sqrt_slack >= 0) || !std::isfinite(plus_sqrt_slack)) {
    return InvalidArgument("plus_sqrt_slack must be finite and >= 0 (got {})", plus_sqrt_slack);
  }
  if (!(plus_slack >= 0) || !std::isfinite(plus_slack)) {
    return InvalidArgument("plus_slack must be finite and >= 0 (got {})", plus_slack);
  }
  if (!(tau >= 0 && tau <= 2)) {
    return InvalidArgument(
        "tau must be in [0, 2] (got {}): cosines lie in [-1, 1], so a band of 2 already holds "
        "every decoder",
        tau);
  }
  if (band_min < 1) return InvalidArgument("band_min must be >= 1");
  ELDR_RETURN_IF_ERROR(cache.Validate());
  if (!(prefill_load_factor >= 1) || !std::isfinite(prefill_load_factor)) {
    return InvalidArgument("prefill_load_factor must be >= 1");
  }
  if (prefix_bytes < 1) return InvalidArgument("prefix_bytes must be >= 1");
  if (max_body_bytes < 1) return InvalidArgument("max_body_bytes must be >= 1");
  if (max_header_bytes < 1024 || max_header_bytes > (16 << 20)) {
    return InvalidArgument("max_header_bytes must be in [1024, 16777216], got {}",
                           max_header_bytes);
  }
  if (max_in_flight < 1) return InvalidArgument("max_in_flight must be >= 1");
  if (admission_queue < 0) return InvalidArgument("admission_queue must be >= 0");
  if (admission_timeout_ms < 1) return InvalidArgument("admission_timeout_ms must be >= 1");
  if (max_payload_bytes < 1024) return InvalidArgument("max_payload_bytes must be >= 1024");
  for (int t : {connect_timeout_ms, prefill_timeout_ms, first_byte_timeout_ms, idle_timeout_ms,
                health_timeout_ms, open_ms, breaker_window_ms, client_timeout_ms}) {
    if (t < 1) return InvalidArgument("timeouts must be >= 1 ms");
  }
  if (request_timeout_ms < 0) return InvalidArgument("request_timeout_ms must be >= 0 (0: none)");
  if (health_interval_ms < 0) return InvalidArgument("health_interval_ms must be >= 0");
  ELDR_RETURN_IF_ERROR(BreakerOptions(*this).Validate());
  ELDR_RETURN_IF_ERROR(RetryOptionsOf(*this).Validate());
  if (metrics_port < 0 || metrics_port > 65535) {
    return InvalidArgument("metrics_port must be in [0, 65535] (0: /metrics on the main port)");
  }
  if (metrics_port > 0 && metrics_port == port) {
    return InvalidArgument("metrics_port {} is the main port", metrics_port);
  }
  if (drain_timeout_ms < 0) return InvalidArgument("drain_timeout_ms must be >= 0");
  if (!capture.path.empty()) ELDR_RETURN_IF_ERROR(capture.Validate());
  if (refit) {
    ELDR_RETURN_IF_ERROR(refit->Validate());
    if (policy != "eldr" && policy != "eldr-plus" && policy != "shadow") {
      return InvalidArgument(
          "refit needs a policy with a signature space (eldr, eldr-plus or "
          "shadow), not {}",
          policy);
    }
  }
  if (auto pin = ParseSignatureSourcePin(signature_source); !pin) return pin.error();
  if (served_model_name.find_first_of("\r\n\"\\") != std::string::npos) {
    return InvalidArgument("served_model_name must not contain quotes, backslashes or line breaks");
  }
  for (const auto& key : api_keys) {
    if (key.empty() || key.find_first_of(" \t\r\n") != std::string::npos) {
      return InvalidArgument("api_keys: a key must be non-empty and hold no whitespace");
    }
  }
  if (upstream_api_key.find_first_of("\r\n") != std::string::npos) {
    return InvalidArgument("upstream_api_key must not contain line breaks");
  }
  static const std::set<std::string> kLevels = {"trace", "debug", "info", "warn", "error", "off"};
  if (!kLevels.count(log_level)) return InvalidArgument("unknown log_level '{}'", log_level);
  if (access_log != "off" && access_log != "kv" && access_log != "json") {
    return InvalidArgument("access_log must be off, kv or json, got '{}'", access_log);
  }
  return Status::Ok();
}

namespace {

// yaml-cpp reports problems by exception; config parsing is startup (or admin) work, never the
// request path, so they are caught here and turned into a Status naming the key.
template <class T>
Status Get(const YAML::Node& n, const std::string& key, T* out) {
  try {
    *out = n.as<T>();
  } catch (const YAML::Exception&) {
    return InvalidArgument("config key '{}': expected a {} value", key,
                           std::is_same_v<T, std::string> ? "string"
                           : std::is_same_v<T, bool>      ? "boolean"
                                                          : "numeric");
  }
  return Status::Ok();
}

Result<std::vector<WorkerSpec>> GetWorkers(const YAML::Node& n, const std::string& key) {
  if (!n.IsSequence()) return InvalidArgument("config key '{}': expected a list of workers", key);
  std::vector<WorkerSpec> out;
  for (size_t i = 0; i < n.size(); ++i) {
    const YAML::Node& item = n[i];
    const std::string where = fmt::format("{}[{}]", key, i);
    if (item.IsScalar()) {
      ELDR_ASSIGN_OR_RETURN(WorkerSpec w, ParseWorkerUrl(item.Scalar()));
      out.push_back(std::move(w));
      continue;
    }
    if (!item.IsMap()) return InvalidArgument("config key '{}': expected a url or a map", where);
    std::string url;
    int bootstrap = 0, dp = -1;
    for (const auto& kv : item) {
      const std::string k = kv.first.as<std::string>();
      if (k == "url") {
        ELDR_RETURN_IF_ERROR(Get(kv.second, where + ".url", &url));
      } else if (k == "bootstrap_port") {
        ELDR_RETURN_IF_ERROR(Get(kv.second, where + ".bootstrap_port", &bootstrap));
      } else if (k == "dp_rank") {
        ELDR_RETURN_IF_ERROR(Get(kv.second, where + ".dp_rank", &dp));
      } else {
        return InvalidArgument("config key '{}.{}': unknown (url, bootstrap_port, dp_rank)", where,
                               k);
      }
    }
    if (url.empty()) return InvalidArgument("config key '{}': missing url", where);
    ELDR_ASSIGN_OR_RETURN(WorkerSpec w, ParseWorkerUrl(url));
    w.bootstrap_port = bootstrap;
    w.dp_rank = dp;
    ELDR_RETURN_IF_ERROR(w.Validate());
    out.push_back(std::move(w));
  }
  return out;
}

Status ApplyKey(const std::string& k, const YAML::Node& v, ServeOptions* o) {
  auto num = [&](auto* field) { return Get(v, k, field); };
  if (k == "listen") {
    std::string s;
    ELDR_RETURN_IF_ERROR(Get(v, k, &s));
    ELDR_ASSIGN_OR_RETURN(WorkerSpec w, ParseWorkerUrl(s, true));
    o->host = w.host;
    o->port = w.port;
    return Status::Ok();
  }
  if (k == "host") return Get(v, k, &o->host);
  if (k == "port") return num(&o->port);
  if (k == "threads") return num(&o->threads);
  if (k == "busy_poll_us") return num(&o->busy_poll_us);
  if (k == "backend") {
    std::string s;
    ELDR_RETURN_IF_ERROR(Get(v, k, &s));
    if (s == "vllm") {
      o->backend = Backend::kVllm;
    } else if (s == "sglang") {
      o->backend = Backend::kSglang;
    } else {
      return InvalidArgument("config key 'backend': '{}' is not vllm or sglang", s);
    }
    return Status::Ok();
  }
  if (k == "model") return Get(v, k, &o->model);
  if (k == "served_model_name") return Get(v, k, &o->served_model_name);
  if (k == "prefill" || k == "decode") {
    ELDR_ASSIGN_OR_RETURN(auto ws, GetWorkers(v, k));
    (k == "prefill" ? o->prefill : o->decode) = std::move(ws);
    return Status::Ok();
  }
  if (k == "policy") return Get(v, k, &o->policy);
  if (k == "expert_estimate") return Get(v, k, &o->expert_estimate);
  if (k == "label_shares") {
    if (!v.IsMap())
      return InvalidArgument("config key 'label_shares': expected a map label: share");
    o->label_shares.clear();
    for (const auto& kv : v) {
      LabelShare ls;
      ls.label = kv.first.as<std::string>();
      ELDR_RETURN_IF_ERROR(Get(kv.second, "label_shares." + ls.label, &ls.share));
      o->label_shares.push_back(std::move(ls));
    }
    return Status::Ok();
  }
  if (k == "shadow_of") return Get(v, k, &o->shadow_of);
  if (k == "shadow_candidate") return Get(v, k, &o->shadow_candidate);
  if (k == "tau") return num(&o->tau);
  if (k == "band_min") return num(&o->band_min);
  if (k == "plus_tau") return num(&o->plus_tau);
  if (k == "plus_slack") return num(&o->plus_slack);
  if (k == "plus_sqrt_slack") return num(&o->plus_sqrt_slack);
  if (k == "space") return Get(v, k, &o->space);
  if (k == "cache") {
    if (!v.IsMap()) return InvalidArgument("config key 'cache': expected a map");
    for (const auto& kv : v) {
      const std::string ck = kv.first.as<std::string>();
      const std::string where = "cache." + ck;
      if (ck == "block_size") {
        ELDR_RETURN_IF_ERROR(Get(kv.second, where, &o->cache.block_size));
      } else if (ck == "chunk_blocks") {
        ELDR_RETURN_IF_ERROR(Get(kv.second, where, &o->cache.chunk_blocks));
      } else if (ck == "memory_mb") {
        double mb = 0;
        ELDR_RETURN_IF_ERROR(Get(kv.second, where, &mb));
        if (!(mb > 0)) return InvalidArgument("config key 'cache.memory_mb' must be > 0");
        o->cache.memory_budget_bytes = static_cast<size_t>(mb * (1 << 20));
      } else {
        return InvalidArgument("config key '{}': unknown (block_size, chunk_blocks, memory_mb)",
                               where);
      }
    }
    return Status::Ok();
  }
  if (k == "prefill_load_factor") return num(&o->prefill_load_factor);
  if (k == "prefix_bytes") return num(&o->prefix_bytes);
  if (k == "prefill_attempts") {
    int attempts = 0;
    ELDR_RETURN_IF_ERROR(num(&attempts));
    if (attempts < 1) return InvalidArgument("config key 'prefill_attempts' must be >= 1");
    o->max_retries = attempts - 1;
    return Status::Ok();
  }
  if (k == "max_retries") return num(&o->max_retries);
  if (k == "retry_initial_backoff_ms") return num(&o->retry_initial_backoff_ms);
  if (k == "retry_max_backoff_ms") return num(&o->retry_max_backoff_ms);
  if (k == "retry_backoff_multiplier") return num(&o->retry_backoff_multiplier);
  if (k == "retry_jitter_factor") return num(&o->retry_jitter_factor);
  if (k == "request_timeout_ms") return num(&o->request_timeout_ms);
  if (k == "breaker_window_ms") return num(&o->breaker_window_ms);
  if (k == "breaker_success_threshold") return num(&o->breaker_success_threshold);
  if (k == "breaker_failure_rate") return num(&o->breaker_failure_rate);
  if (k == "metrics_port") return num(&o->metrics_port);
  if (k == "max_body_bytes") return num(&o->max_body_bytes);
  if (k == "max_header_bytes") return num(&o->max_header_bytes);
  if (k == "max_in_flight") return num(&o->max_in_flight);
  if (k == "admission_queue") return num(&o->admission_queue);
  if (k == "admission_timeout_ms") return num(&o->admission_timeout_ms);
  if (k == "max_payload_bytes") return num(&o->max_payload_bytes);
  if (k == "connect_timeout_ms") return num(&o->connect_timeout_ms);
  if (k == "prefill_timeout_ms") return num(&o->prefill_timeout_ms);
  if (k == "first_byte_timeout_ms") return num(&o->first_byte_timeout_ms);
  if (k == "idle_timeout_ms") return num(&o->idle_timeout_ms);
  if (k == "client_timeout_ms") return num(&o->client_timeout_ms);
  if (k == "health_interval_ms") return num(&o->health_interval_ms);
  if (k == "health_timeout_ms") return num(&o->health_timeout_ms);
  if (k == "failure_threshold") return num(&o->failure_threshold);
  if (k == "open_ms") return num(&o->open_ms);
  if (k == "upstream_api_key") return Get(v, k, &o->upstream_api_key);
  if (k == "api_keys") {
    if (!v.IsSequence()) return InvalidArgument("config key 'api_keys': expected a list of keys");
    o->api_keys.clear();
    for (size_t i = 0; i < v.size(); ++i) {
      std::string key;
      ELDR_RETURN_IF_ERROR(Get(v[i], fmt::format("api_keys[{}]", i), &key));
      o->api_keys.push_back(std::move(key));
    }
    return Status::Ok();
  }
  if (k == "api_keys_file") return Get(v, k, &o->api_keys_file);
  if (k == "signature_source") return Get(v, k, &o->signature_source);
  if (k == "admin_token") return Get(v, k, &o->admin_token);
  if (k == "admin_remote") return Get(v, k, &o->admin_remote);
  if (k == "log_level") return Get(v, k, &o->log_level);
  if (k == "access_log") return Get(v, k, &o->access_log);
  if (k == "ready_file") return Get(v, k, &o->ready_file);
  if (k == "drain_timeout_ms") return num(&o->drain_timeout_ms);
  if (k == "refit") {
    if (!v.IsMap())
      return InvalidArgument("config key 'refit': expected a map ({{}} for defaults)");
    RefitConfig r = o->refit.value_or(RefitConfig{});
    for (const auto& kv : v) {
      const std::string rk = kv.first.as<std::string>();
      const std::string where = "refit." + rk;
      if (rk == "interval_s") {
        ELDR_RETURN_IF_ERROR(Get(kv.second, where, &r.interval_s));
      } else if (rk == "window_s") {
        ELDR_RETURN_IF_ERROR(Get(kv.second, where, &r.window_s));
      } else if (rk == "min_requests") {
        ELDR_RETURN_IF_ERROR(Get(kv.second, where, &r.min_requests));
      } else if (rk == "max_window") {
        ELDR_RETURN_IF_ERROR(Get(kv.second, where, &r.max_window));
      } else {
        return InvalidArgument(
            "config key '{}': unknown (interval_s, window_s, min_requests, max_window)", where);
      }
    }
    o->refit = r;
    return Status::Ok();
  }
  if (k == "capture") return Get(v, k, &o->capture.path);
  if (k == "capture_fraction") return num(&o->capture.fraction);
  if (k == "capture_max_file_bytes") return num(&o->capture.max_file_bytes);
  if (k == "capture_max_files") return num(&o->capture.max_files);
  if (k == "capture_queue_records") return num(&o->capture.queue_records);
  if (k == "capture_flush_interval_ms") return num(&o->capture.flush_interval_ms);
  if (k == "capture_decode") return Get(v, k, &o->capture.decode);
  return InvalidArgument("config key '{}' is unknown (see docs/serve.md)", k);
}

}  // namespace

Result<ServeOptions> ParseServeConfig(std::string_view text, ServeOptions base) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return InvalidArgument("config: {}", e.what());
  }
  if (root.IsNull()) return base;
  if (!root.IsMap()) return InvalidArgument("config: expected a map of keys at the top level");
  try {
    for (const auto& kv : root) {
      ELDR_RETURN_IF_ERROR(ApplyKey(kv.first.as<std::string>(), kv.second, &base));
    }
  } catch (const YAML::Exception& e) {
    return InvalidArgument("config: {}", e.what());
  }
  return base;
}

}  // namespace eldr::server
