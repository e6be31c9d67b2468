// eldr: the one command-line tool. Flags are parsed here and nowhere else; every subcommand maps
// its flags onto the library's Options structs and reports errors as "eldr <cmd>: message".
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "commands.h"

namespace eldr::cli {

std::vector<std::string> SplitList(std::string_view list) {
  std::vector<std::string> out;
  while (!list.empty()) {
    const size_t comma = list.find(',');
    if (comma != 0) out.emplace_back(list.substr(0, comma));
    list = comma == std::string_view::npos ? "" : list.substr(comma + 1);
  }
  return out;
}

Progress::Progress(bool enabled) : enabled_(enabled), tty_(isatty(2)) {}

void Progress::Update(std::string_view stage, double fraction) {
  if (!enabled_) return;
  const int pct = static_cast<int>(std::lround(fraction * 100));
  if (tty_) {
    const int filled = pct / 5;
    fmt::print(stderr, "\r  {:<12} [{}{}] {:3d}%", stage, std::string(filled, '#'),
               std::string(20 - filled, '.'), pct);
    if (pct >= 100) fmt::print(stderr, "\n");
  } else if (stage != last_stage_ || pct >= last_pct_ + 25 || (pct == 100 && last_pct_ != 100)) {
    fmt::print(stderr, "  {} {}%\n", stage, pct);
    last_pct_ = pct;
  }
  if (stage != last_stage_) last_stage_ = std::string(stage);
  std::fflush(stderr);
}

namespace {

// The error line of subcommand `cmd`: "eldr <cmd>: CODE: message", each context said once.
// The library prefixes some messages with its own part's name ("fit: ...", "trace: ..."): when
// that is the subcommand's name, already said by "eldr <cmd>: ", it is dropped; and a context
// that a command adds and the library adds again ("fit: fit: ...") is said once.
std::string ErrorLine(std::string_view cmd, const Status& s) {
  std::vector<std::string_view> parts;  // the contexts, outermost first
  std::string_view rest = s.message();
  for (size_t at; (at = rest.find(": ")) != std::string_view::npos; rest.remove_prefix(at + 2)) {
    parts.push_back(rest.substr(0, at));
  }
  if (!parts.empty() && parts.back() == cmd) parts.pop_back();  // the innermost: the library's
  std::string message;
  std::string_view prev;
  for (std::string_view p : parts) {
    if (p == prev) continue;
    message += fmt::format("{}: ", p);
    prev = p;
  }
  message += rest;  // the message itself
  return fmt::format("eldr {}: {}: {}", cmd, StatusCodeName(s.code()), message);
}

}  // namespace

}  // namespace eldr::cli

int main(int argc, char** argv) {
  CLI::App app{"eldr: expert-locality-aware decode routing for PD-disaggregated MoE serving"};
  app.require_subcommand(1);
  eldr::cli::FitArgs fit;
  eldr::cli::RouteArgs route;
  eldr::cli::AddFitCommand(app, fit);
  eldr::cli::AddRouteCommand(app, route);
  eldr::cli::SimulateArgs simulate;
  eldr::cli::AddSimulateCommand(app, simulate);
  eldr::cli::TraceArgs trace;
  eldr::cli::AddTraceCommand(app, trace);
  eldr::cli::ServeArgs serve;
  eldr::cli::AddServeCommand(app, serve);
  eldr::cli::EmulateArgs emulate;
  eldr::cli::AddEmulateCommand(app, emulate);
  eldr::cli::BenchArgs bench;
  eldr::cli::AddBenchCommand(app, bench);
  auto* models = app.add_subcommand("models", "List the model geometry presets");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  eldr::Status s;
  std::string name;
  if (app.got_subcommand("fit")) {
    name = "fit";
    s = eldr::cli::RunFit(fit);
  } else if (app.got_subcommand("simulate")) {
    name = "simulate";
    s = eldr::cli::RunSimulate(simulate);
  } else if (app.got_subcommand("trace")) {
    name = "trace";
    s = eldr::cli::RunTrace(trace);
  } else if (app.got_subcommand("route")) {
    name = "route";
    s = eldr::cli::RunRoute(route);
  } else if (serve.cmd->parsed()) {
    name = "serve";
    s = eldr::cli::RunServe(serve);
  } else if (emulate.cmd->parsed()) {
    name = "emulate";
    s = eldr::cli::RunEmulate(emulate);
  } else if (bench.cmd->parsed()) {
    name = "bench";
    s = eldr::cli::RunBench(bench);
  } else if (models->parsed()) {
    eldr::cli::PrintModels();
  }
  if (!s.ok()) {
    fmt::print(stderr, "{}\n", eldr::cli::ErrorLine(name, s));
    return 1;
  }
  return 0;
}
