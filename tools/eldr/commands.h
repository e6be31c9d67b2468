// Private to the eldr tool: subcommand arguments and runners.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "eldr/status.h"

namespace CLI {
class App;
}

namespace eldr::cli {

Result<std::string> ReadFile(const std::string& path);
Status WriteFileAtomically(const std::string& path, std::string_view data);

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
  std::string input, output, model, algo = "kmbal", transform = "count_idf";
  int decoders = 16, pairs = 30000, max_iters = 50;
  uint64_t seed = 1;
  bool all_layers = false, quiet = false;
};

struct RouteArgs {
  std::string space, input, policies = "rr,random,jsq,p2c,domain,eldr", calibration;
  double tau = 0.1;
  int per_decoder = 4, arrivals = 4000;
  uint64_t seed = 1;
};

void AddFitCommand(CLI::App& app, FitArgs& a);
void AddRouteCommand(CLI::App& app, RouteArgs& a);
Status RunFit(const FitArgs& a);
Status RunRoute(const RouteArgs& a);
void PrintModels();

}  // namespace eldr::cli
