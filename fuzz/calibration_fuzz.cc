// libFuzzer target: calibration JSONL.
#include <string_view>

#include "eldr/calibration.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const eldr::ModelGeometry g = *eldr::FindModel("mixtral-8x7b");
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)eldr::ParseCalibrationJsonl(text);
  (void)eldr::ParseCalibrationJsonl(text, &g);
  return 0;
}
