// -----------------------------------------------------------------------------
// File: calibration.h
// -----------------------------------------------------------------------------
// Calibration data for `eldr fit`: JSON Lines, one request per line (docs/formats.md):
//   {"format":"eldr.calibration","version":1,"model":"gpt-oss-20b"}      optional header line
//   {"id":"r1","label":"code","prefill":[[c00,c01,...],...],"decode":[[...],...]}
// prefill / decode are [L][E] expert counts; decode and label are optional. Records captured from
// live traffic (`eldr serve --capture`) add prompt_tokens, output_tokens, arrival_us and decoder,
// optional here and validated when present. Header lines may repeat (a capture file writes one
// each time it is opened); they must all name the same model. Every problem is reported with its
// line number; nothing is half-parsed.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "eldr/fit.h"
#include "eldr/geometry.h"
#include "eldr/policy.h"
#include "eldr/status.h"

namespace eldr {

inline constexpr std::string_view kCalibrationFormat = "eldr.calibration";

// What a captured record adds to a calibration request; -1 / empty where the line has none.
struct CaptureMeta {
  int64_t prompt_tokens = -1;
  int64_t output_tokens = -1;
  int64_t arrival_us = -1;  // Unix time in microseconds
  std::string decoder;      // the decode worker the router chose
};

struct CalibrationSet {
  std::string model;       // from the header, or the geometry given
  ModelGeometry geometry;  // the model's: the one given, a preset, or the header's description
  std::vector<CalibrationRequest> requests;
  std::vector<CaptureMeta> meta;  // parallel to requests
  // True when every request carries prompt_tokens, output_tokens and arrival_us (a capture).
  bool HasReplayFields() const;
};

// Parses the whole text. The model comes from `geometry` if given (a header naming a different
// model is then an error; a header naming the given geometry's own name is accepted even when
// that is no preset, as for a model read from its config.json), else from the header line: a
// preset name, or any name with a "geometry" object (ModelGeometryToJson) describing the model,
// as `eldr serve --capture` writes. A header's geometry whose routing shape (layers, experts,
// top-k) differs from the named or given model's is FailedPrecondition. A header's model is
// never read as a path.
Result<CalibrationSet> ParseCalibrationJsonl(std::string_view text,
                                             const ModelGeometry* geometry = nullptr);

// Share of each label among requests with a label, sorted by label.
std::vector<LabelShare> LabelMix(std::span<const CalibrationRequest> requests);

}  // namespace eldr
