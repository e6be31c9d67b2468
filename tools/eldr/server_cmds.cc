// `eldr serve`, `eldr emulate` and `eldr bench`: flags -> options structs -> library.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <boost/json.hpp>
#include <cstdlib>

#include "commands.h"
#include "eldr/bench/load.h"
#include "eldr/emu/emulator.h"
#include "eldr/emu/model.h"
#include "eldr/fit.h"
#include "eldr/net/wire.h"
#include "eldr/server/proxy.h"
#include "eldr/sim/workload.h"

namespace eldr::cli {

namespace {

void SetupLogging(const std::string& level) {
  auto logger = spdlog::stderr_color_mt("eldr");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e%z level=%l %v");
  spdlog::set_level(spdlog::level::from_str(level));
}

Status WriteReady(const std::string& path, int port) {
  if (path.empty()) return Status::Ok();
  return WriteFileAtomically(path, fmt::format("{{\"port\":{}}}\n", port));
}

Status PrintSelfCheck(const std::vector<server::WorkerCheck>& checks) {
  int usable = 0;
  fmt::print("{:<32} {:>6}  {:<11} {:<7} {}\n", "prefill worker", "status", "source", "usable",
             "detail");
  for (const auto& c : checks) {
    usable += c.usable;
    fmt::print("{:<32} {:>6}  {:<11} {:<7} {}\n", c.url,
               c.status > 0 ? fmt::format("{}", c.status) : std::string("-"), c.source,
               c.usable ? "yes" : "no", c.detail);
  }
  fmt::print("{} of {} prefill workers return a usable signature\n", usable, checks.size());
  if (usable == 0) {
    return FailedPrecondition(
        "no prefill worker returned a usable signature: ELDR would route by load only");
  }
  return Status::Ok();
}

}  // namespace

// Every timeout as a flag named like its config key (docs/serve.md).
constexpr std::pair<const char*, int server::ServeOptions::*> kTimeoutFlags[] = {
    {"--connect-timeout-ms", &server::ServeOptions::connect_timeout_ms},
    {"--prefill-timeout-ms", &server::ServeOptions::prefill_timeout_ms},
    {"--first-byte-timeout-ms", &server::ServeOptions::first_byte_timeout_ms},
    {"--idle-timeout-ms", &server::ServeOptions::idle_timeout_ms},
    {"--client-timeout-ms", &server::ServeOptions::client_timeout_ms},
    {"--health-timeout-ms", &server::ServeOptions::health_timeout_ms},
    {"--open-ms", &server::ServeOptions::open_ms},
    {"--drain-timeout-ms", &server::ServeOptions::drain_timeout_ms},
    {"--admission-timeout-ms", &server::ServeOptions::admission_timeout_ms},
    {"--request-timeout-ms", &server::ServeOptions::request_timeout_ms},
    {"--breaker-window-ms", &server::ServeOptions::breaker_window_ms},
    {"--retry-initial-backoff-ms", &server::ServeOptions::retry_initial_backoff_ms},
    {"--retry-max-backoff-ms", &server::ServeOptions::retry_max_backoff_ms}};

// The other integer and real keys of the breaker, the retries and the metrics port, likewise.
constexpr std::pair<const char*, int server::ServeOptions::*> kIntFlags[] = {
    {"--failure-threshold", &server::ServeOptions::failure_threshold},
    {"--breaker-success-threshold", &server::ServeOptions::breaker_success_threshold},
    {"--max-retries", &server::ServeOptions::max_retries},
    {"--metrics-port", &server::ServeOptions::metrics_port}};
constexpr std::pair<const char*, double server::ServeOptions::*> kRealFlags[] = {
    {"--retry-backoff-multiplier", &server::ServeOptions::retry_backoff_multiplier},
    {"--retry-jitter-factor", &server::ServeOptions::retry_jitter_factor},
    {"--breaker-failure-rate", &server::ServeOptions::breaker_failure_rate}};

void AddServeCommand(CLI::App& app, ServeArgs& a) {
  auto* c = app.add_subcommand(
      "serve", "Run the PD router proxy in front of vLLM or SGLang prefill/decode servers");
  a.cmd = c;
  c->add_option("-c,--config", a.config, "Config file (YAML or JSON; docs/serve.md)");
  c->add_option("--listen", a.listen, "host:port to listen on (port 0: any free port)");
  c->add_option("--backend", a.backend, "vllm or sglang");
  c->add_option("-m,--model", a.model,
                "Model preset or a Hugging Face config.json (or its directory)");
  c->add_option("--served-model-name", a.served_model_name,
                "Model id /v1/models lists (the engines' --served-model-name)");
  c->add_option("--prefill", a.prefill, "Comma-separated prefill worker URLs");
  c->add_option("--decode", a.decode, "Comma-separated decode worker URLs");
  c->add_option("--policy", a.policy,
                "rr, random, jsq, p2c, eldr, eldr-plus, or shadow (route by --shadow-of, report "
                "what --shadow-candidate would do)");
  c->add_option("--shadow-of", a.shadow_of, "Shadow mode: the load policy that routes");
  c->add_option("--label-shares", a.label_shares,
                "Policy domain: the label mix its pools are sized by, e.g. code=0.4,math=0.6 "
                "(requests carry X-Eldr-Label)");
  c->add_option("--label-shares-from", a.label_shares_from,
                "Policy domain: take the label mix from a calibration file or capture");
  c->add_option("--shadow-candidate", a.shadow_candidate,
                "Shadow mode: eldr or eldr-plus, computed beside it");
  c->add_option("--tau", a.tau, "ELDR locality band");
  c->add_option("--band-min", a.band_min, "ELDR: widen a band to at least this many decoders");
  c->add_option("--plus-tau", a.plus_tau, "eldr-plus: locality band inside the load bound");
  c->add_option("--plus-slack", a.plus_slack,
                "eldr-plus: load bound, at most (1 + slack) x the mean in flight");
  c->add_option("--plus-sqrt-slack", a.plus_sqrt_slack,
                "eldr-plus: load bound grows by this x sqrt(mean in flight) (0: off)");
  c->add_option("-s,--space", a.space, "Signature-space file (from `eldr fit`)");
  c->add_option("--threads", a.threads, "I/O threads (0: all cores)");
  c->add_option("--busy-poll-us", a.busy_poll_us,
                "Poll without sleeping this long after each event (0: off)");
  c->add_option("--admin-token", a.admin_token, "Enables the admin API with this bearer token");
  c->add_option("--max-in-flight", a.max_in_flight,
                "Proxied requests at once (beyond, requests queue for a slot)");
  c->add_option("--admission-queue", a.timeouts.admission_queue,
                "Requests waiting for a slot at most (429 beyond; 0: refuse at once)")
      ->capture_default_str();
  c->add_option("--max-body-bytes", a.max_body_bytes, "Largest request body (413 beyond)");
  c->add_option("--health-interval-ms", a.health_interval_ms, "Active health checks (0: off)");
  c->add_option("--log-level", a.log_level, "trace, debug, info, warn, error, off");
  c->add_option("--ready-file", a.ready_file, "Write {\"port\":N} here once listening");
  c->add_option("--access-log", a.access_log,
                "One line per request on stdout: off, kv (key=value) or json");
  c->add_option("--api-keys-file", a.api_keys_file,
                "Require Authorization: Bearer <key> on /v1/* with a key from this file (one per "
                "line)");
  c->add_option("--upstream-api-key", a.upstream_api_key,
                "Bearer key for engines started with --api-key (or ELDR_UPSTREAM_API_KEY)");
  c->add_option("--signature-source", a.signature_source,
                "Where prefill answers carry routed experts: auto, vllm, vllm-list, vllm-0.21, "
                "sglang or eldr-hooks");
  c->add_option("--capture", a.capture,
                "Append one calibration record per completed request to this gzip file (input of "
                "`eldr fit -i` and `eldr simulate --trace`; docs/serve.md)");
  c->add_option("--capture-fraction", a.capture_fraction,
                "Share of completed requests captured, in [0, 1]");
  c->add_option("--capture-max-file-bytes", a.capture_max_file_bytes,
                "Rotate the capture file past this many compressed bytes");
  c->add_option("--capture-max-files", a.capture_max_files,
                "Capture files kept: the active one plus rotated PATH.1, PATH.2, ...");
  c->add_flag("--no-capture-decode", a.no_capture_decode,
              "Do not ask decode engines for the generated tokens' routed experts (config key "
              "capture_decode: false)");
  auto key_of = [](const char* flag) {
    std::string key = std::string(flag + 2);
    std::replace(key.begin(), key.end(), '-', '_');
    return "Config key " + key + " (docs/serve.md)";
  };
  for (const auto& [flag, field] : kTimeoutFlags) {
    c->add_option(flag, a.timeouts.*field, key_of(flag))->capture_default_str();
  }
  for (const auto& [flag, field] : kIntFlags) {
    c->add_option(flag, a.timeouts.*field, key_of(flag))->capture_default_str();
  }
  for (const auto& [flag, field] : kRealFlags) {
    c->add_option(flag, a.timeouts.*field, key_of(flag))->capture_default_str();
  }
  c->add_flag("--expert-estimate", a.expert_estimate,
              "Export each decode worker's expected distinct experts per step "
              "(eldr_decode_expected_distinct_experts)");
  c->add_flag("--refit", a.refit,
              "Refit the signature space online on recent traffic (config key refit; "
              "docs/serve.md)");
  c->add_option("--refit-interval-s", a.refit_config.interval_s, "Seconds between refits")
      ->capture_default_str();
  c->add_option("--refit-window-s", a.refit_config.window_s,
                "Refit on the requests routed in the last this many seconds")
      ->capture_default_str();
  c->add_option("--refit-min-requests", a.refit_config.min_requests,
                "Skip a refit with fewer requests in the window")
      ->capture_default_str();
  c->add_flag("--check", a.check,
              "Send one request through each prefill worker, report whether a usable signature "
              "comes back, and exit (non-zero when none does)");
}

Status RunServe(const ServeArgs& a) {
  server::ServeOptions o;
  if (!a.config.empty()) {
    ELDR_ASSIGN_OR_RETURN(std::string text, ReadFile(a.config));
    auto parsed = server::ParseServeConfig(text, o);
    if (!parsed) return parsed.error().WithContext(a.config);
    o = std::move(*parsed);
  }
  if (!a.listen.empty()) {
    ELDR_ASSIGN_OR_RETURN(server::WorkerSpec w, server::ParseWorkerUrl(a.listen, true));
    o.host = w.host;
    o.port = w.port;
  }
  if (!a.backend.empty()) {
    if (a.backend != "vllm" && a.backend != "sglang") {
      return InvalidArgument("--backend must be vllm or sglang");
    }
    o.backend = a.backend == "vllm" ? server::Backend::kVllm : server::Backend::kSglang;
  }
  // A flag given on the command line overrides the config, whatever its value: Validate then
  // judges it exactly as it judges the config (no sentinel can hide "--threads -1").
  auto given = [&](const char* flag) {
    const CLI::Option* opt = a.cmd != nullptr ? a.cmd->get_option_no_throw(flag) : nullptr;
    return opt != nullptr && opt->count() > 0;
  };
  if (!a.model.empty()) o.model = a.model;
  if (!a.served_model_name.empty()) o.served_model_name = a.served_model_name;
  if (!a.prefill.empty()) {
    o.prefill.clear();
    for (const auto& u : SplitList(a.prefill)) {
      ELDR_ASSIGN_OR_RETURN(server::WorkerSpec w, server::ParseWorkerUrl(u));
      o.prefill.push_back(w);
    }
  }
  if (!a.decode.empty()) {
    o.decode.clear();
    for (const auto& u : SplitList(a.decode)) {
      ELDR_ASSIGN_OR_RETURN(server::WorkerSpec w, server::ParseWorkerUrl(u));
      o.decode.push_back(w);
    }
  }
  if (!a.policy.empty()) o.policy = a.policy;
  if (!a.shadow_of.empty()) o.shadow_of = a.shadow_of;
  if (!a.label_shares.empty() && !a.label_shares_from.empty()) {
    return InvalidArgument("--label-shares and --label-shares-from both set the label mix");
  }
  if (!a.label_shares.empty()) {
    o.label_shares.clear();
    for (const auto& item : SplitList(a.label_shares)) {
      const size_t eq = item.find('=');
      char* end = nullptr;
      const std::string num = eq == std::string::npos ? "" : item.substr(eq + 1);
      const double v = std::strtod(num.c_str(), &end);
      if (eq == std::string::npos || num.empty() || end != num.c_str() + num.size()) {
        return InvalidArgument("--label-shares: '{}' is not LABEL=SHARE", item);
      }
      o.label_shares.push_back({item.substr(0, eq), v});
    }
  }
  if (!a.label_shares_from.empty()) {
    ELDR_ASSIGN_OR_RETURN(ModelGeometry g, FindModel(o.model));
    ELDR_ASSIGN_OR_RETURN(CalibrationInput in, ReadCalibrationInputs({a.label_shares_from}, &g));
    o.label_shares = LabelMix(in.set.requests);
    if (o.label_shares.empty()) {
      return InvalidArgument("--label-shares-from {}: no request there has a label",
                             a.label_shares_from);
    }
  }
  if (!a.shadow_candidate.empty()) o.shadow_candidate = a.shadow_candidate;
  if (given("--tau")) o.tau = a.tau;
  if (given("--band-min")) o.band_min = a.band_min;
  if (given("--plus-tau")) o.plus_tau = a.plus_tau;
  if (given("--plus-slack")) o.plus_slack = a.plus_slack;
  if (given("--plus-sqrt-slack")) o.plus_sqrt_slack = a.plus_sqrt_slack;
  if (!a.space.empty()) o.space = a.space;
  if (given("--threads")) o.threads = a.threads;
  if (given("--busy-poll-us")) o.busy_poll_us = a.busy_poll_us;
  if (!a.admin_token.empty()) o.admin_token = a.admin_token;
  if (given("--max-in-flight")) o.max_in_flight = a.max_in_flight;
  if (given("--max-body-bytes")) o.max_body_bytes = a.max_body_bytes;
  if (given("--health-interval-ms")) o.health_interval_ms = a.health_interval_ms;
  if (!a.log_level.empty()) o.log_level = a.log_level;
  if (!a.access_log.empty()) o.access_log = a.access_log;
  if (!a.ready_file.empty()) o.ready_file = a.ready_file;
  // The key from the environment keeps it out of process lists; the flag wins over it.
  if (const char* k = std::getenv("ELDR_UPSTREAM_API_KEY"); k && *k) o.upstream_api_key = k;
  if (!a.upstream_api_key.empty()) o.upstream_api_key = a.upstream_api_key;
  if (!a.signature_source.empty()) o.signature_source = a.signature_source;
  if (!a.api_keys_file.empty()) o.api_keys_file = a.api_keys_file;
  if (a.refit || given("--refit-interval-s") || given("--refit-window-s") ||
      given("--refit-min-requests")) {
    server::RefitConfig r = o.refit.value_or(server::RefitConfig{});
    if (given("--refit-interval-s")) r.interval_s = a.refit_config.interval_s;
    if (given("--refit-window-s")) r.window_s = a.refit_config.window_s;
    if (given("--refit-min-requests")) r.min_requests = a.refit_config.min_requests;
    o.refit = r;
  }
  for (const auto& [flag, field] : kTimeoutFlags) {
    if (given(flag)) o.*field = a.timeouts.*field;
  }
  for (const auto& [flag, field] : kIntFlags) {
    if (given(flag)) o.*field = a.timeouts.*field;
  }
  for (const auto& [flag, field] : kRealFlags) {
    if (given(flag)) o.*field = a.timeouts.*field;
  }
  if (given("--admission-queue")) o.admission_queue = a.timeouts.admission_queue;
  if (a.expert_estimate) o.expert_estimate = true;
  if (given("--capture")) o.capture.path = a.capture;
  if (given("--capture-fraction")) o.capture.fraction = a.capture_fraction;
  if (given("--capture-max-file-bytes")) o.capture.max_file_bytes = a.capture_max_file_bytes;
  if (given("--capture-max-files")) o.capture.max_files = a.capture_max_files;
  if (a.no_capture_decode) o.capture.decode = false;
  ELDR_RETURN_IF_ERROR(o.Validate());
  SetupLogging(o.log_level);
  ELDR_ASSIGN_OR_RETURN(auto proxy, server::Proxy::Create(o));
  if (a.check) return PrintSelfCheck(proxy->SelfCheck());
  fmt::print("eldr serve: listening on http://{}:{}\n", o.host, proxy->port());
  std::fflush(stdout);
  ELDR_RETURN_IF_ERROR(WriteReady(o.ready_file, proxy->port()));
  return proxy->Run();
}

void AddEmulateCommand(CLI::App& app, EmulateArgs& a) {
  auto* c = app.add_subcommand("emulate",
                               "Run an emulated vLLM/SGLang prefill or decode engine (no GPU)");
  a.cmd = c;
  c->add_option("--role", a.role, "prefill or decode")->capture_default_str();
  c->add_option("-m,--model", a.model,
                "Model preset or a Hugging Face config.json (or its directory)")
      ->capture_default_str();
  c->add_option("-w,--workload", a.workload, "task or language")->capture_default_str();
  c->add_option("--seed", a.seed, "Workload seed (all emulators of a set-up must agree)")
      ->capture_default_str();
  c->add_option("--listen", a.listen, "host:port (port 0: any free port)")->capture_default_str();
  c->add_option("--backend", a.backend, "PD flow: vllm (NIXL) or sglang (bootstrap)")
      ->capture_default_str();
  c->add_option("--engine", a.engine,
                "Engine whose routed-experts output to emulate: vllm-0.22, vllm-0.21, sglang or "
                "eldr-hooks (default: vllm-0.22 for backend vllm, sglang for sglang)");
  c->add_option("--experts-format", a.experts_format,
                "Deprecated alias of --engine: vllm-npy, vllm-list (vllm-0.21), sglang, eldr_sig "
                "(eldr-hooks) or auto");
  c->add_flag("--honour-prompt-start", a.honour_prompt_start,
              "vllm-0.22: apply routed_experts_prompt_start (vLLM PR #51906)");
  c->add_option("--served-model-name", a.served_model_names,
                "Model names requests may give; the first is echoed (default: the preset's "
                "canonical name, display name also accepted)");
  c->add_option("--api-key", a.api_key, "Require Authorization: Bearer KEY on /v1/*");
  c->add_option("--time-scale", a.time_scale, "Multiplies every emulated duration (0: instant)")
      ->capture_default_str();
  c->add_option("--max-batch", a.max_batch, "Decode batch limit")->capture_default_str();
  c->add_option("--default-max-tokens", a.default_max_tokens, "When a request gives none")
      ->capture_default_str();
  c->add_option("--archetypes", a.archetypes, "Workload requests prompts map onto")
      ->capture_default_str();
  c->add_option("--fault", a.fault,
                "Test faults: malformed, error500, error400 or garbage (a request may name its "
                "own in the body field emu_fault)");
  c->add_option("--ready-file", a.ready_file, "Write {\"port\":N} here once listening");
  c->add_option("--write-space", a.write_space,
                "Instead of serving: fit a signature space for this emulated model and exit");
  c->add_option("-k,--decoders", a.decoders, "Centroids for --write-space")->capture_default_str();
}

namespace {

Result<std::pair<sim::Workload, CellSetup>> EmulatedWorkload(const EmulateArgs& a,
                                                             const ModelGeometry& g) {
  sim::WorkloadOptions wo;
  wo.kind = a.workload;
  wo.requests = a.archetypes;
  wo.calibration = 1000;
  wo.seed = a.seed;
  wo.output_tokens = 512;
  ELDR_ASSIGN_OR_RETURN(sim::Workload w, sim::MakeSyntheticWorkload(g, wo));
  ELDR_ASSIGN_OR_RETURN(CellSetup cell, PrepareCell(g, w, a.seed));
  return std::make_pair(std::move(w), std::move(cell));
}

}  // namespace

Status RunEmulate(const EmulateArgs& a) {
  ELDR_ASSIGN_OR_RETURN(ModelGeometry g, FindModel(a.model));
  ELDR_ASSIGN_OR_RETURN(auto wc, EmulatedWorkload(a, g));
  if (!a.write_space.empty()) {
    FitOptions fo;
    fo.k = a.decoders;
    fo.seed = a.seed;
    ELDR_ASSIGN_OR_RETURN(FitResult fit, Fit(wc.second.calib, g, fo));
    ELDR_RETURN_IF_ERROR(WriteFileAtomically(a.write_space, fit.space->ToJson()));
    fmt::print(stderr,
               "eldr emulate: wrote a k={} signature space for {} ({} workload, seed {}) "
               "to {}\n",
               a.decoders, g.display_name, a.workload, a.seed, a.write_space);
    return Status::Ok();
  }
  if (!wc.second.cost_note.empty()) fmt::print(stderr, "{}\n", wc.second.cost_note);
  emu::EngineModelOptions mo;
  mo.archetypes = a.archetypes;
  ELDR_ASSIGN_OR_RETURN(auto model,
                        emu::EngineModel::Create(std::move(wc.first), wc.second.cost, mo));
  emu::EmulatorOptions eo;
  ELDR_ASSIGN_OR_RETURN(net::HostPort l, net::ParseHttpUrl(a.listen, true));
  eo.host = l.host;
  eo.port = l.port;
  eo.role = a.role;
  eo.backend = a.backend;
  eo.engine = a.engine;
  if (eo.engine.empty() && a.experts_format != "auto") {
    static const std::pair<std::string_view, std::string_view> kAlias[] = {
        {"vllm-npy", "vllm-0.22"},
        {"vllm-list", "vllm-0.21"},
        {"sglang", "sglang"},
        {"eldr_sig", "eldr-hooks"}};
    for (const auto& [from, to] : kAlias) {
      if (a.experts_format == from) eo.engine = std::string(to);
    }
    if (eo.engine.empty()) {
      return InvalidArgument(
          "--experts-format must be auto, vllm-npy, vllm-list, sglang or "
          "eldr_sig (or use --engine)");
    }
  }
  eo.honour_prompt_start = a.honour_prompt_start;
  eo.served_model_names = a.served_model_names;
  eo.api_key = a.api_key;
  eo.time_scale = a.time_scale;
  eo.max_batch = a.max_batch;
  eo.default_max_tokens = a.default_max_tokens;
  eo.fault = a.fault;
  ELDR_ASSIGN_OR_RETURN(auto e, emu::Emulator::Create(eo, model));
  fmt::print("eldr emulate: {} {} engine ({} flow) for {} on http://{}:{}\n", eo.ResolvedEngine(),
             a.role, a.backend, g.display_name, eo.host, e->port());
  std::fflush(stdout);
  ELDR_RETURN_IF_ERROR(WriteReady(a.ready_file, e->port()));
  return e->Run();
}

void AddBenchCommand(CLI::App& app, BenchArgs& a) {
  auto* c = app.add_subcommand(
      "bench", "Open-loop load generator for OpenAI-compatible servers (TTFT, TPOT, ITL)");
  a.cmd = c;
  c->add_option("-u,--url", a.url, "Server base URL")->capture_default_str();
  c->add_flag("--chat", a.chat, "Use /v1/chat/completions");
  c->add_option("-m,--model", a.model, "Model field of requests")->capture_default_str();
  c->add_option("-r,--rate", a.rate, "Requests per second, Poisson (<= 0: all at once)")
      ->capture_default_str();
  c->add_option("-n,--requests", a.requests, "Requests to send")->capture_default_str();
  c->add_option("--max-tokens", a.max_tokens, "Output tokens per request")->capture_default_str();
  c->add_flag("--no-stream", a.no_stream, "Non-streaming requests");
  c->add_option("--prompt-words", a.prompt_words, "Mean synthetic prompt length in words")
      ->capture_default_str();
  c->add_option("--prompts", a.prompts, "Prompts file (JSONL with \"prompt\", or text lines)");
  c->add_option("--seed", a.seed, "Seed of arrivals and synthetic prompts")->capture_default_str();
  c->add_option("--json", a.json, "Write the report as JSON here");
  c->add_option("--extra-body", a.extra_body, "JSON object merged into every request body");
  c->add_flag("-q,--quiet", a.quiet, "No progress");
}

Status RunBench(const BenchArgs& a) {
  bench::LoadOptions o;
  o.url = a.url;
  o.chat = a.chat;
  o.model = a.model;
  o.rate = a.rate;
  o.requests = a.requests;
  o.max_tokens = a.max_tokens;
  o.stream = !a.no_stream;
  o.prompt_words = a.prompt_words;
  o.seed = a.seed;
  o.extra_body = a.extra_body;
  if (!a.prompts.empty()) {
    ELDR_ASSIGN_OR_RETURN(std::string text, ReadFile(a.prompts));
    auto p = bench::LoadPrompts(text);
    if (!p) return p.error().WithContext(a.prompts);
    o.prompts = std::move(*p);
  }
  Progress progress(!a.quiet);
  ELDR_ASSIGN_OR_RETURN(bench::LoadReport r, bench::RunLoad(o, [&](int done, int total) {
                          if (done == total || done % std::max(1, total / 20) == 0) {
                            progress.Update("requests", static_cast<double>(done) / total);
                          }
                        }));
  fmt::print("{}", r.ToText());
  if (!a.json.empty()) ELDR_RETURN_IF_ERROR(WriteFileAtomically(a.json, r.ToJson()));
  return r.ok > 0 ? Status::Ok() : Unavailable("no request succeeded ({} failed)", r.failed);
}

}  // namespace eldr::cli
