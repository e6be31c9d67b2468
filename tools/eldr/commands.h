// Private to the eldr tool: subcommand arguments and runners.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "eldr/calibration.h"
#include "eldr/file.h"
#include "eldr/fit.h"
#include "eldr/policy.h"
#include "eldr/server/config.h"
#include "eldr/server/refit_loop.h"
#include "eldr/sim/simulator.h"
#include "eldr/status.h"

namespace CLI {
class App;
class Option;
}  // namespace CLI

namespace eldr::cli {

using ::eldr::ReadFile;  // eldr/file.h
// "a,b,,c" -> {"a", "b", "c"}: the --policies lists.
std::vector<std::string> SplitList(std::string_view list);
using ::eldr::WriteFileAtomically;

// Calibration files as `eldr fit -i` and `eldr simulate --trace` read them: plain or gzip JSON
// Lines (`eldr serve --capture` writes gzip, rotated into PATH, PATH.1, ...), one or several
// files of one model merged in the order given. A gzip file whose last batch was cut short (a
// router that died mid-write) is read up to its last complete batch, and `notes` says so; empty
// files are skipped with a note. `sha256` is over the bytes read, files concatenated in order
// (for one file, `sha256sum FILE` matches).
struct CalibrationInput {
  CalibrationSet set;
  std::string sha256;
  std::vector<std::string> notes;
};
Result<CalibrationInput> ReadCalibrationInputs(const std::vector<std::string>& paths,
                                               const ModelGeometry* geometry);

// Mean and range of one figure over seeds.
struct Spread {
  double mean = 0, lo = 0, hi = 0;
  int n = 0;
};
Spread SpreadOf(const std::vector<double>& values);
// "+1.2% [-0.3, +2.5]" for a change in percent; "+1.2%" for one seed.
std::string PctSpread(const Spread& s);
// "12.34 [12.10, 12.60]" with `decimals` digits; "12.34" for one seed.
std::string ValueSpread(const Spread& s, int decimals);

// Progress on stderr: a redrawn bar on a terminal, a few plain lines otherwise.
class Progress {
 public:
  explicit Progress(bool enabled);
  void Update(std::string_view stage, double fraction);

 private:
  bool enabled_, tty_;
  std::string last_stage_;
  int last_pct_ = -100;
};

struct FitArgs {
  std::vector<std::string> inputs;
  std::string output, model, algo = "kmbal", transform = "count_idf", mask_from;
  int decoders = 16, pairs = 30000, max_iters = 50;
  uint64_t seed = 1;
  bool all_layers = false, quiet = false;
};

struct RouteArgs {
  std::string space, input, policies = "rr,random,jsq,p2c,domain,eldr,eldr-plus", calibration;
  double tau = 0.1;
  int per_decoder = 4, arrivals = 4000;
  uint64_t seed = 1;
};

// One simulated (configuration, policy) result, as written by --json / --csv.
struct SimRecord {
  std::string model, workload, experiment, variant;
  int rate = 0, prefill = 0, decoders = 0;
  std::string policy;
  double tau = 0;
  sim::SimSummary summary;
  uint64_t seed = 1;
};
Status WriteRecords(const std::vector<SimRecord>& records, const std::string& json_path,
                    const std::string& csv_path);

// What a simulation cell needs besides its workload: the cost parameters (from the model's
// published baseline; a donor's scaled; or, for any other model, derived from its geometry and
// `hw` (sim::DeriveCost); moved to `hw` when it is not the calibration hardware), with
// `cost_note` stating every assumption, the calibration requests for the fit and the label mix
// for the domain policy.
struct CellSetup {
  sim::CostParams cost;
  sim::Calibration calibration;  // of the cost model actually calibrated (a donor's, if borrowed)
  std::string cost_note;         // empty unless the parameters rest on assumptions; one per line
  std::vector<CalibrationRequest> calib;
  std::vector<LabelShare> mix;
};
Result<CellSetup> PrepareCell(const ModelGeometry& g, const sim::Workload& w, uint64_t seed,
                              const sim::HardwareProfile& hw = sim::CalibrationHardware());

struct TraceArgs {
  std::string input, output, model = "gpt-oss-20b";
  int max_tokens = 0, prefix_tokens = 32;
  CLI::App* import_cmd = nullptr;
  CLI::App* stats_cmd = nullptr;
};
void AddTraceCommand(CLI::App& app, TraceArgs& a);
Status RunTrace(const TraceArgs& a);

struct SimulateArgs {
  std::string model = "qwen3-30b-a3b", workload = "task",
              policies = "rr,random,jsq,p2c,domain,eldr,eldr:0.2,eldr:0.3,eldr-plus";
  int prefill = 8, decode = 16, calibration = 1000;
  double rate = 60, duration = 120, tau = 0.1, warmup = 0;
  int band_min = 1;
  PolicyOptions::Plus plus;
  uint64_t seed = 1;
  int seeds = 5;  // seeds seed, seed+1, ...: results as mean and range
  bool stats = false;
  std::string matrix, json, csv, trace, requests_csv, calibration_trace;
  std::string hardware = "mi300x";    // sim::FindHardwareProfile name
  double calibration_fraction = 0.5;  // --trace without --calibration-trace
  int threads = 2;
  CLI::Option* calibration_opt = nullptr;  // to tell an explicit --calibration
  CLI::Option* model_opt = nullptr;        // to tell an explicit --model
  double popularity = -1, domain_boost = -1, subdomain_boost = -1, request_boost = -1, drift = -1,
         domain_drift = -1;
  double mix_drift = 0;            // sim::WorkloadOptions::mix_drift
  bool oracle_signatures = false;  // sim::UseDecodeSignatures (research: a ceiling)
  // --refit: every eldr / eldr-plus policy also runs refitted online (label "+refit"), every
  // refit_interval s of simulated time on the requests of the last refit_window s.
  bool refit = false;
  double refit_interval = 5, refit_window = 10;
  int refit_min = 64;
};

struct ServeArgs {
  std::string config, listen, backend, model, prefill, decode, policy, space, admin_token,
      log_level, ready_file, upstream_api_key, signature_source, capture, shadow_of,
      shadow_candidate, label_shares, label_shares_from, served_model_name, api_keys_file,
      access_log;
  double tau = -1, plus_tau = -1, plus_slack = -1, plus_sqrt_slack = -1, capture_fraction = 1;
  int64_t capture_max_file_bytes = 0;
  int capture_max_files = 0;
  bool refit = false, expert_estimate = false, no_capture_decode = false;
  server::RefitConfig refit_config;  // the --refit-* flags bind straight onto it
  server::ServeOptions timeouts;     // the timeout flags bind straight onto its fields
  int threads = -1, max_in_flight = 0, health_interval_ms = -1, busy_poll_us = -1, band_min = 0;
  bool check = false;
  int64_t max_body_bytes = 0;
  CLI::App* cmd = nullptr;
};
struct EmulateArgs {
  std::string role = "decode", model = "qwen3-30b-a3b", workload = "task", listen = "127.0.0.1:0",
              backend = "vllm", experts_format = "auto", engine, api_key, fault, ready_file,
              write_space;
  std::vector<std::string> served_model_names;
  bool honour_prompt_start = false;
  uint64_t seed = 1;
  double time_scale = 1.0;
  int max_batch = 256, default_max_tokens = 16, archetypes = 256, decoders = 16;
  CLI::App* cmd = nullptr;
};
struct BenchArgs {
  std::string url = "http://127.0.0.1:8000", model = "qwen3-30b-a3b", prompts, json, extra_body;
  bool chat = false, no_stream = false, quiet = false;
  double rate = 10;
  int requests = 200, max_tokens = 64, prompt_words = 300;
  uint64_t seed = 1;
  CLI::App* cmd = nullptr;
};
void AddServeCommand(CLI::App& app, ServeArgs& a);
Status RunServe(const ServeArgs& a);
void AddEmulateCommand(CLI::App& app, EmulateArgs& a);
Status RunEmulate(const EmulateArgs& a);
void AddBenchCommand(CLI::App& app, BenchArgs& a);
Status RunBench(const BenchArgs& a);

void AddFitCommand(CLI::App& app, FitArgs& a);
void AddSimulateCommand(CLI::App& app, SimulateArgs& a);
Status RunSimulate(const SimulateArgs& a);
Status RunMatrix(const SimulateArgs& a, std::vector<SimRecord>* records);
void AddRouteCommand(CLI::App& app, RouteArgs& a);
Status RunFit(const FitArgs& a);
Status RunRoute(const RouteArgs& a);
void PrintModels();

}  // namespace eldr::cli
