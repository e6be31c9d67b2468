// -----------------------------------------------------------------------------
// File: calibration.h
// -----------------------------------------------------------------------------
// Calibration data for `eldr fit`: JSON Lines, one request per line (docs/formats.md):
//   {"format":"eldr.calibration","version":1,"model":"gpt-oss-20b"}      optional header line
//   {"id":"r1","label":"code","prefill":[[c00,c01,...],...],"decode":[[...],...]}
// prefill / decode are [L][E] expert counts; decode and label are optional. Every problem is
// reported with its line number; nothing is half-parsed.
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "eldr/fit.h"
#include "eldr/geometry.h"
#include "eldr/policy.h"
#include "eldr/status.h"

namespace eldr {

inline constexpr std::string_view kCalibrationFormat = "eldr.calibration";

struct CalibrationSet {
  std::string model;  // from the header, or the geometry given
  std::vector<CalibrationRequest> requests;
};

// Parses the whole text. The model comes from `geometry` if given (a header naming a different
// model is then an error), else from the header line (an error if absent or unknown).
Result<CalibrationSet> ParseCalibrationJsonl(std::string_view text,
                                             const ModelGeometry* geometry = nullptr);

// Share of each label among requests with a label, sorted by label.
std::vector<LabelShare> LabelMix(std::span<const CalibrationRequest> requests);

}  // namespace eldr
