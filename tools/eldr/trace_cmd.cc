#include <CLI/CLI.hpp>
#include <algorithm>
#include <boost/json.hpp>
#include <charconv>
#include <climits>
#include <filesystem>
#include <map>
#include <set>

#include "commands.h"
#include "eldr/gzip.h"
#include "eldr/sim/trace.h"
#include "eldr/sim/trace_import.h"

namespace eldr::cli {

namespace fs = std::filesystem;

void AddTraceCommand(CLI::App& app, TraceArgs& a) {
  auto* t = app.add_subcommand("trace", "Convert and inspect routing traces");
  t->require_subcommand(1);
  auto* imp = t->add_subcommand(
      "import",
      "Convert GPT-OSS-MoE-ExpertFingerprinting per-request traces (*_examples.json or "
      ".json.gz, searched recursively, following directory links; where both x_examples.json "
      "and x_examples.json.gz exist only the .json.gz is read) into an eldr trace file");
  imp->add_option("-i,--input", a.input, "Directory of trace files")->required();
  imp->add_option("-o,--output", a.output, "eldr trace file to write")->required();
  imp->add_option("-m,--model", a.model,
                  "Model of the traces: a preset or a Hugging Face config.json")
      ->capture_default_str();
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

constexpr std::string_view kJsonSuffix = "_examples.json";
constexpr std::string_view kGzSuffix = "_examples.json.gz";
// A per-request file larger than this once decompressed is refused (a gzip bomb, not a trace).
constexpr size_t kMaxDecompressed = size_t{1} << 32;

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

Result<std::string> ReadRequestFile(const fs::path& p) {
  ELDR_ASSIGN_OR_RETURN(std::string raw, ReadFile(p.string()));
  if (!EndsWith(p.filename().string(), ".gz")) return raw;
  auto text = Gunzip(raw, {.max_output = kMaxDecompressed});
  if (!text) return Error{text.error().WithContext(p.string())};
  return text;
}

// The *_examples.json[.gz] files under a directory tree, directory links followed.
struct Scan {
  std::vector<fs::path> files;      // to read, sorted
  std::vector<fs::path> shadowed;   // x_examples.json beside x_examples.json.gz: not read
  std::vector<fs::path> revisited;  // directory links to a directory already walked
  std::vector<fs::path> relinked;   // file links to a file already found: not read again
  int found = 0;                    // matching files found (read + shadowed)
};

Result<Scan> FindRequestFiles(const std::string& root) {
  Scan scan;
  std::error_code ec;
  std::set<fs::path> dirs, seen_files;
  const fs::path root_canon = fs::canonical(root, ec);
  if (ec) return NotFound("cannot read directory '{}': {}", root, ec.message());
  if (!fs::is_directory(root_canon)) return NotFound("'{}' is not a directory", root);
  dirs.insert(root_canon);
  std::map<std::string, std::pair<fs::path, fs::path>> by_stem;  // stem -> (.json, .json.gz)
  for (auto it = fs::recursive_directory_iterator(
           root, fs::directory_options::follow_directory_symlink, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    std::error_code e2;
    if (it->is_directory(e2)) {
      // Walk each directory once, however many links lead to it (a link cycle included).
      const fs::path canon = fs::canonical(it->path(), e2);
      if (e2 || !dirs.insert(canon).second) {
        it.disable_recursion_pending();
        scan.revisited.push_back(it->path());
      }
      continue;
    }
    if (!it->is_regular_file(e2)) continue;  // broken links, sockets, ...
    const std::string name = it->path().filename().string();
    const bool gz = EndsWith(name, kGzSuffix);
    if (!gz && !EndsWith(name, kJsonSuffix)) continue;
    const fs::path canon = fs::canonical(it->path(), e2);
    if (e2 || !seen_files.insert(canon).second) {  // a link to a file already found
      scan.relinked.push_back(it->path());
      continue;
    }
    std::string stem = it->path().string();
    if (gz) stem.resize(stem.size() - 3);
    (gz ? by_stem[stem].second : by_stem[stem].first) = it->path();
    ++scan.found;
  }
  if (ec) return NotFound("cannot read directory '{}': {}", root, ec.message());
  for (const auto& [stem, pair] : by_stem) {
    const auto& [json, gz] = pair;
    if (!gz.empty()) {
      scan.files.push_back(gz);
      if (!json.empty()) scan.shadowed.push_back(json);
    } else {
      scan.files.push_back(json);
    }
  }
  std::sort(scan.files.begin(), scan.files.end());
  std::sort(scan.shadowed.begin(), scan.shadowed.end());
  return scan;
}

// " (e.g. FIRST)" for a report line; "" when `paths` is empty.
std::string Example(const std::vector<fs::path>& paths) {
  return paths.empty() ? "" : fmt::format(" (e.g. {})", paths.front().string());
}

Status RunStats(const TraceArgs& a) {
  ELDR_ASSIGN_OR_RETURN(std::string bytes, ReadFile(a.input));
  auto t = sim::ParseTrace(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
  if (!t) return t.error().WithContext(a.input);
  sim::TraceWorkloadOptions o;
  o.requests = 1;
  o.calibration_fraction = 0.99;  // statistics over (nearly) every request
  sim::TraceReplayStats rs;
  auto w = sim::MakeTraceWorkload(*t, o, &rs);
  if (!w) return w.error().WithContext(a.input);
  int64_t tokens = 0;
  std::map<std::string, int> file_labels;
  for (const auto& r : t->requests) {
    tokens += r.tokens;
    ++file_labels[r.label];
  }
  constexpr int kBatch = 16;
  const auto st = sim::MeasureWorkload(*w, kBatch);
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
  fmt::print("label shares over the file ({} requests): ", t->requests.size());
  bool first = true;
  for (const auto& [label, n] : file_labels) {
    fmt::print("{}{} {:.1f}% ({})", first ? "" : ", ", label.empty() ? "(none)" : label,
               100.0 * n / static_cast<double>(t->requests.size()), n);
    first = false;
  }
  fmt::print("\nlabel shares of the {} calibrating requests: ", rs.calibrating);
  int calibrating_labels = 0;
  for (size_t i = 0; i < w->labels.size(); ++i) {
    fmt::print("{}{} {:.1f}%", i ? ", " : "", w->labels[i].empty() ? "(none)" : w->labels[i],
               100 * w->label_shares[i]);
    calibrating_labels += w->label_shares[i] > 0;
  }
  // With one label a "same-label" batch is just a mixed one: the reduction means nothing.
  const std::string reduction =
      calibrating_labels < 2
          ? fmt::format("n/a (the calibrating requests have {} label)", calibrating_labels)
          : fmt::format("{:.1f}% fewer distinct experts than mixed",
                        100 * st.same_domain_reduction);
  fmt::print(
      "\nprefill->decode correlation {:.3f}; same-label batches of up to {} (drawn without "
      "replacement) select {}; hottest expert {:.2f}x the layer mean\n",
      st.prefill_decode_correlation, kBatch, reduction, st.hot_expert_ratio);
  fmt::print("source: {}\n", t->source);
  return Status::Ok();
}

Status RunImport(const TraceArgs& a) {
  if (a.prefix_tokens < 0) {
    return InvalidArgument("--prefix-tokens must be >= 0, got {}", a.prefix_tokens);
  }
  if (a.max_tokens < 0) return InvalidArgument("--max-tokens must be >= 0, got {}", a.max_tokens);
  if (a.max_tokens > 0 && a.max_tokens <= a.prefix_tokens) {
    return InvalidArgument(
        "--max-tokens {} keeps no routed token after the --prefix-tokens {} that stand in for "
        "the prompt",
        a.max_tokens, a.prefix_tokens);
  }
  ELDR_ASSIGN_OR_RETURN(const ModelGeometry g, FindModel(a.model));
  ELDR_ASSIGN_OR_RETURN(const Scan scan, FindRequestFiles(a.input));
  if (scan.files.empty()) return NotFound("no *_examples.json[.gz] files under '{}'", a.input);
  sim::Trace t;
  t.geometry = g;
  t.prefix_tokens = a.prefix_tokens;
  t.source =
      "GPT-OSS-MoE-ExpertFingerprinting (Aman Priyanshu, Supriti Vijay), Apache-2.0; decode-time "
      "routing only, the first prefix_tokens routed tokens stand in for the prompt";
  std::vector<fs::path> not_requests, too_short;
  int gz = 0;
  Progress progress(true);
  for (size_t i = 0; i < scan.files.size(); ++i) {
    const fs::path& f = scan.files[i];
    gz += EndsWith(f.filename().string(), ".gz");
    ELDR_ASSIGN_OR_RETURN(const std::string text, ReadRequestFile(f));
    auto r = sim::ImportFingerprintRequest(text, g, a.max_tokens);
    if (!r) return r.error().WithContext(f.string());
    if (!r->is_request) {
      not_requests.push_back(f);
    } else if (r->request.tokens <= a.prefix_tokens) {
      too_short.push_back(f);  // no decode part: never replayable
    } else {
      t.requests.push_back(std::move(r->request));
    }
    progress.Update("import", static_cast<double>(i + 1) / scan.files.size());
  }
  if (t.requests.empty()) {
    return InvalidArgument(
        "no request under '{}' to write: {} files read, {} not per-request traces, {} with at "
        "most --prefix-tokens {} routed tokens",
        a.input, scan.files.size(), not_requests.size(), too_short.size(), a.prefix_tokens);
  }
  const auto bytes = sim::SerializeTrace(t);
  // Belt and braces: the file must read back (the checks above should make this unreachable).
  if (auto back = sim::ParseTrace(bytes); !back) {
    return Internal("the trace built from '{}' does not read back: {}", a.input,
                    back.error().ToString());
  }
  ELDR_RETURN_IF_ERROR(WriteFileAtomically(
      a.output, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size())));
  const size_t skipped =
      scan.shadowed.size() + scan.relinked.size() + not_requests.size() + too_short.size();
  fmt::print("found {} *_examples.json[.gz] files under {}; read {} ({} .json.gz, {} .json)\n",
             scan.found + scan.relinked.size(), a.input, scan.files.size(), gz,
             scan.files.size() - gz);
  fmt::print("skipped {} files\n", skipped);
  if (!scan.shadowed.empty()) {
    fmt::print("  {} .json beside a .json.gz of the same name: read the .json.gz only{}\n",
               scan.shadowed.size(), Example(scan.shadowed));
  }
  if (!scan.relinked.empty()) {
    fmt::print("  {} names of a file already found under another name: read once{}\n",
               scan.relinked.size(), Example(scan.relinked));
  }
  if (!not_requests.empty()) {
    fmt::print(
        "  {} not per-request traces (not a JSON object with 'router_data'; an aggregate?){}\n",
        not_requests.size(), Example(not_requests));
  }
  if (!too_short.empty()) {
    fmt::print("  {} too short: at most --prefix-tokens {} routed tokens, nothing to decode{}\n",
               too_short.size(), a.prefix_tokens, Example(too_short));
  }
  if (!scan.revisited.empty()) {
    fmt::print("not walked again: {} directory links to a directory already walked{}\n",
               scan.revisited.size(), Example(scan.revisited));
  }
  fmt::print("wrote {}: {} requests, {:.2f} MB\n", a.output, t.requests.size(), bytes.size() / 1e6);
  return Status::Ok();
}

}  // namespace

Status RunTrace(const TraceArgs& a) {
  if (a.stats_cmd->parsed()) return RunStats(a);
  return RunImport(a);
}

}  // namespace eldr::cli
