#include "commands.h"
#include "eldr/gzip.h"
#include "eldr/sha256.h"

namespace eldr::cli {

Result<CalibrationInput> ReadCalibrationInputs(const std::vector<std::string>& paths,
                                               const ModelGeometry* geometry) {
  if (paths.empty()) return InvalidArgument("no calibration file given");
  CalibrationInput in;
  std::string all_bytes;
  std::optional<ModelGeometry> g;
  if (geometry != nullptr) g = *geometry;
  for (const auto& path : paths) {
    ELDR_ASSIGN_OR_RETURN(std::string raw, ReadFile(path));
    all_bytes += raw;
    std::string text;
    if (IsGzip(raw)) {
      GunzipOptions go;
      go.allow_truncated_tail = true;
      GunzipInfo info;
      auto inflated = Gunzip(raw, go, &info);
      if (!inflated) return Error{inflated.error().WithContext(path)};
      text = std::move(*inflated);
      if (info.truncated_bytes > 0) {
        in.notes.push_back(fmt::format(
            "{}: the last {} bytes are an incomplete batch (a writer stopped mid-write); read "
            "the {} complete ones",
            path, info.truncated_bytes, info.members));
      }
    } else {
      text = std::move(raw);
    }
    if (text.find_first_not_of(" \r\n\t") == std::string::npos) {
      in.notes.push_back(fmt::format("{}: empty, skipped", path));
      continue;
    }
    auto set = ParseCalibrationJsonl(text, g ? &*g : nullptr);
    if (!set) return Error{set.error().WithContext(path)};
    if (!g) g = set->geometry;  // a preset, or the model the file's header describes
    in.set.model = set->model;
    in.set.geometry = set->geometry;
    for (auto& r : set->requests) in.set.requests.push_back(std::move(r));
    for (auto& m : set->meta) in.set.meta.push_back(std::move(m));
  }
  if (in.set.requests.empty()) {
    return InvalidArgument("no calibration requests in {} file{}", paths.size(),
                           paths.size() == 1 ? "" : "s");
  }
  in.sha256 = Sha256Hex(all_bytes);
  return in;
}

}  // namespace eldr::cli
