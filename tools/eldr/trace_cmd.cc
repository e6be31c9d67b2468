#include <zlib.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <boost/json.hpp>
#include <filesystem>

#include "commands.h"
#include "eldr/sim/trace.h"

namespace eldr::cli {

namespace fs = std::filesystem;

void AddTraceCommand(CLI::App& app, TraceArgs& a) {
  auto* t = app.add_subcommand("trace", "Convert and inspect routing traces");
  t->require_subcommand(1);
  auto* imp = t->add_subcommand(
      "import",
      "Convert GPT-OSS-MoE-ExpertFingerprinting per-request traces (*_examples.json or "
      ".json.gz, searched recursively) into an eldr trace file");
  imp->add_option("-i,--input", a.input, "Directory of trace files")->required();
  imp->add_option("-o,--output", a.output, "eldr trace file to write")->required();
  imp->add_option("-m,--model", a.model, "Model preset of the traces")->capture_default_str();
  imp->add_option("--max-tokens", a.max_tokens, "Routed tokens kept per request (0 = all)")
      ->capture_default_str();
  imp->add_option("--prefix-tokens", a.prefix_tokens,
                  "Leading routed tokens that stand in for the prompt on replay")
      ->capture_default_str();
  auto* st = t->add_subcommand("stats",
                               "Routing statistics of a trace (as for synthetic "
                               "workloads: prefill->decode correlation, same-domain "
                               "reduction, hot-expert skew)");
  st->add_option("file", a.input, "eldr trace file")->required();
  a.import_cmd = imp;
  a.stats_cmd = st;
}

namespace {

Result<std::string> ReadMaybeGzip(const fs::path& p) {
  if (p.extension() != ".gz") return ReadFile(p.string());
  gzFile f = gzopen(p.c_str(), "rb");
  if (f == nullptr) return NotFound("cannot open '{}'", p.string());
  std::string out;
  char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof(buf))) > 0) out.append(buf, n);
  const bool bad = n < 0;
  gzclose(f);
  if (bad) return DataLoss("'{}': corrupt gzip stream", p.string());
  return out;
}

// Benchmark family of a dataset name, as the calibration extract labels it.
std::string Family(std::string_view dataset) {
  for (std::string_view f : {"mmlu_pro", "mmlu", "gpqa", "sorry_bench", "Polyglot", "tulu3"}) {
    if (dataset.substr(0, f.size()) == f) {
      std::string s(f);
      std::transform(s.begin(), s.end(), s.begin(), ::tolower);
      return s;
    }
  }
  return std::string(dataset);
}

Result<sim::TraceRequest> ConvertOne(const std::string& text, const ModelGeometry& g,
                                     int max_tokens) {
  boost::system::error_code ec;
  auto v = boost::json::parse(text, ec);
  if (ec || !v.is_object()) return InvalidArgument("not a JSON object");
  const auto& o = v.get_object();
  sim::TraceRequest r;
  if (const auto* d = o.if_contains("dataset"); d && d->is_string()) {
    r.label = Family(std::string_view(d->get_string()));
  }
  const auto* rd = o.if_contains("router_data");
  if (!rd || !rd->is_array()) return InvalidArgument("no 'router_data' array");
  const size_t row = static_cast<size_t>(g.moe_layers) * g.top_k;
  for (const auto& entry : rd->get_array()) {
    if (max_tokens > 0 && r.tokens >= max_tokens) break;
    if (!entry.is_object() || entry.get_object().size() != 1) {
      return InvalidArgument("router_data entry {} is not a one-key object", r.tokens);
    }
    const auto& [key, layers] = *entry.get_object().begin();
    if (r.tokens == 0) {  // "token_<P>": the first routed position = the prompt length
      const std::string_view k(key.data(), key.size());
      if (k.substr(0, 6) != "token_") return InvalidArgument("unexpected key '{}'", k);
      r.prompt_tokens = std::atoi(std::string(k.substr(6)).c_str());
    }
    if (!layers.is_object()) return InvalidArgument("token {}: layers are not an object", r.tokens);
    const size_t base = r.picks.size();
    r.picks.resize(base + row);
    for (int l = 0; l < g.moe_layers; ++l) {
      const auto* layer = layers.get_object().if_contains(fmt::format("layer_{}", l));
      const auto* sel = layer && layer->is_object()
                            ? layer->get_object().if_contains("selected_experts")
                            : nullptr;
      if (!sel || !sel->is_array() || sel->get_array().size() != static_cast<size_t>(g.top_k)) {
        return InvalidArgument("token {} layer {}: need {} selected_experts", r.tokens, l, g.top_k);
      }
      for (int j = 0; j < g.top_k; ++j) {
        const auto& e = sel->get_array()[j];
        if (!e.is_int64() || e.get_int64() < 0 || e.get_int64() >= g.experts) {
          return OutOfRange("token {} layer {}: expert id outside [0, {})", r.tokens, l, g.experts);
        }
        r.picks[base + static_cast<size_t>(l) * g.top_k + j] = static_cast<uint16_t>(e.get_int64());
      }
    }
    ++r.tokens;
  }
  return r;
}

}  // namespace

Status RunTrace(const TraceArgs& a) {
  if (a.stats_cmd->parsed()) {
    auto bytes = ReadFile(a.input);
    if (!bytes) return bytes.error();
    auto t =
        sim::ParseTrace(std::span(reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size()));
    if (!t) return t.error().WithContext(a.input);
    sim::TraceWorkloadOptions o;
    o.requests = 1;
    o.calibration_fraction = 0.99;  // statistics over (nearly) every request
    sim::TraceReplayStats rs;
    auto w = sim::MakeTraceWorkload(*t, o, &rs);
    if (!w) return w.error().WithContext(a.input);
    int64_t tokens = 0;
    for (const auto& r : t->requests) tokens += r.tokens;
    const auto st = sim::MeasureWorkload(*w, 16);
    fmt::print(
        "{}: {} requests, {} routed tokens, {} ({} layers x {} experts, top-{}); first {} "
        "tokens per request stand in for the prompt\n",
        a.input, t->requests.size(), tokens, t->geometry.display_name, t->geometry.moe_layers,
        t->geometry.experts, t->geometry.top_k, t->prefix_tokens);
    fmt::print(
        "usable: {} of {} requests; dropped {} with fewer than {} routed tokens (prefix {} + "
        "min decode {}); statistics over {} calibrating requests, {} left as the evaluation "
        "pool\n",
        rs.eval_trace.usable, rs.eval_trace.requests, rs.eval_trace.too_short,
        rs.eval_trace.min_routed_tokens, t->prefix_tokens, o.min_decode_tokens, rs.calibrating,
        rs.pool);
    fmt::print("labels: ");
    for (size_t i = 0; i < w->labels.size(); ++i)
      fmt::print("{}{} {:.1f}%", i ? ", " : "", w->labels[i], 100 * w->label_shares[i]);
    fmt::print(
        "\nprefill->decode correlation {:.3f}; same-label batches of 16 select {:.1f}% "
        "fewer distinct experts than mixed; hottest expert {:.2f}x the layer mean\n",
        st.prefill_decode_correlation, 100 * st.same_domain_reduction, st.hot_expert_ratio);
    fmt::print("source: {}\n", t->source);
    return Status::Ok();
  }
  auto g = FindModel(a.model);
  if (!g) return g.error();
  std::vector<fs::path> files;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(a.input, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.find("_examples.json") != std::string::npos) files.push_back(it->path());
  }
  if (ec) return NotFound("cannot read directory '{}': {}", a.input, ec.message());
  if (files.empty()) return NotFound("no *_examples.json[.gz] files under '{}'", a.input);
  std::sort(files.begin(), files.end());
  sim::Trace t;
  t.geometry = *g;
  t.prefix_tokens = a.prefix_tokens;
  t.source =
      "GPT-OSS-MoE-ExpertFingerprinting (Aman Priyanshu, Supriti Vijay), Apache-2.0; decode-time "
      "routing only, the first prefix_tokens routed tokens stand in for the prompt";
  Progress progress(true);
  for (size_t i = 0; i < files.size(); ++i) {
    auto text = ReadMaybeGzip(files[i]);
    if (!text) return text.error();
    auto r = ConvertOne(*text, *g, a.max_tokens);
    if (!r) return r.error().WithContext(files[i].string());
    t.requests.push_back(std::move(*r));
    progress.Update("import", static_cast<double>(i + 1) / files.size());
  }
  const auto bytes = sim::SerializeTrace(t);
  if (Status s = WriteFileAtomically(
          a.output, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
      !s.ok()) {
    return s;
  }
  fmt::print("wrote {}: {} requests, {:.2f} MB\n", a.output, t.requests.size(), bytes.size() / 1e6);
  return Status::Ok();
}

}  // namespace eldr::cli
