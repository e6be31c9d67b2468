#include "eldr/calibration.h"

#include <boost/json.hpp>
#include <map>

namespace eldr {

namespace json = boost::json;

namespace {

Result<ExpertCounts> ParseTable(const json::value& v, const ModelGeometry& g,
                                std::string_view field) {
  if (!v.is_array() || v.get_array().size() != static_cast<size_t>(g.moe_layers)) {
    return InvalidArgument("'{}' must be a list of {} layers ({} has {} MoE layers)", field,
                           g.moe_layers, g.display_name, g.moe_layers);
  }
  ExpertCounts c(g.moe_layers, g.experts);
  int l = 0;
  for (const auto& layer : v.get_array()) {
    if (!layer.is_array() || layer.get_array().size() != static_cast<size_t>(g.experts)) {
      return InvalidArgument("'{}' layer {} must list {} expert counts", field, l, g.experts);
    }
    int e = 0;
    for (const auto& x : layer.get_array()) {
      int64_t n;
      if (x.is_int64()) {
        n = x.get_int64();
      } else if (x.is_uint64() && x.get_uint64() <= UINT32_MAX) {
        n = static_cast<int64_t>(x.get_uint64());
      } else {
        return InvalidArgument("'{}' layer {} expert {}: counts must be integers", field, l, e);
      }
      if (n < 0 || n > UINT32_MAX) {
        return OutOfRange("'{}' layer {} expert {}: count {} out of range", field, l, e, n);
      }
      c.at(l, e) = static_cast<uint32_t>(n);
      ++e;
    }
    ++l;
  }
  return c;
}

}  // namespace

Result<CalibrationSet> ParseCalibrationJsonl(std::string_view text, const ModelGeometry* geometry) {
  CalibrationSet set;
  ModelGeometry g;
  bool have_geometry = geometry != nullptr;
  if (have_geometry) {
    g = *geometry;
    set.model = g.name;
  }
  size_t line_no = 0;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    ++line_no;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
    if (line.empty()) continue;
    boost::system::error_code ec;
    json::value v = json::parse(json::string_view(line.data(), line.size()), ec);
    auto fail = [&](const Status& s) {
      return tl::unexpected<Status>(s.WithContext(fmt::format("calibration line {}", line_no)));
    };
    if (ec) return fail(InvalidArgument("not valid JSON ({})", ec.message()).error());
    if (!v.is_object()) return fail(InvalidArgument("each line must be a JSON object").error());
    const json::object& o = v.get_object();
    if (const auto* f = o.if_contains("format")) {
      if (!f->is_string() || f->get_string() != kCalibrationFormat) {
        return fail(FailedPrecondition("format is not '{}'", kCalibrationFormat).error());
      }
      if (const auto* ver = o.if_contains("version");
          ver && (!ver->is_int64() || ver->get_int64() != 1)) {
        return fail(
            FailedPrecondition("unsupported calibration version (this eldr reads 1)").error());
      }
      if (const auto* m = o.if_contains("model"); m && m->is_string()) {
        const std::string_view name = m->get_string();
        // A header may describe its model (a capture of a model read from its config.json), so
        // the file is found again without the config.
        const auto* gj = o.if_contains("geometry");
        Result<ModelGeometry> found = ModelFromFileHeader(
            name, gj ? json::serialize(*gj) : std::string(), have_geometry ? &g : nullptr);
        if (!found && have_geometry && found.error().code() == StatusCode::kNotFound) {
          // -m was given: the header naming an unknown model is a file for another model.
          return fail(
              FailedPrecondition("file is calibration data for {}, not {}", name, g.display_name)
                  .error());
        }
        if (!found) return fail(found.error());
        if (have_geometry && found->name != g.name) {
          return fail(FailedPrecondition("file is calibration data for {}, not {}",
                                         found->display_name, g.display_name)
                          .error());
        }
        g = *found;
        have_geometry = true;
        set.model = g.name;
      }
      continue;
    }
    if (!have_geometry) {
      return fail(
          InvalidArgument("no model: add a header line with \"model\" or name the model").error());
    }
    CalibrationRequest r;
    if (const auto* id = o.if_contains("id"); id && id->is_string()) {
      r.id = std::string(id->get_string());
    } else {
      r.id = fmt::format("line{}", line_no);
    }
    if (const auto* lab = o.if_contains("label"); lab && lab->is_string()) {
      r.label = std::string(lab->get_string());
    }
    const auto* pre = o.if_contains("prefill");
    if (!pre) return fail(InvalidArgument("missing 'prefill' counts").error());
    auto pc = ParseTable(*pre, g, "prefill");
    if (!pc) return fail(pc.error());
    r.prefill = std::move(*pc);
    if (const auto* dec = o.if_contains("decode"); dec && !dec->is_null()) {
      auto dc = ParseTable(*dec, g, "decode");
      if (!dc) return fail(dc.error());
      r.decode = std::move(*dc);
    }
    CaptureMeta meta;
    for (auto [key, field] : {std::pair{"prompt_tokens", &meta.prompt_tokens},
                              std::pair{"output_tokens", &meta.output_tokens},
                              std::pair{"arrival_us", &meta.arrival_us}}) {
      const auto* v = o.if_contains(key);
      if (v == nullptr || v->is_null()) continue;
      if (!v->is_int64() || v->get_int64() < 0) {
        return fail(InvalidArgument("'{}' must be a non-negative integer", key).error());
      }
      *field = v->get_int64();
    }
    if (const auto* d = o.if_contains("decoder"); d && d->is_string()) {
      meta.decoder = std::string(d->get_string());
    }
    set.requests.push_back(std::move(r));
    set.meta.push_back(std::move(meta));
  }
  if (set.requests.empty()) return InvalidArgument("calibration data holds no requests");
  set.geometry = g;
  return set;
}

bool CalibrationSet::HasReplayFields() const {
  for (const auto& m : meta) {
    if (m.prompt_tokens < 0 || m.output_tokens < 0 || m.arrival_us < 0) return false;
  }
  return !meta.empty();
}

std::vector<LabelShare> LabelMix(std::span<const CalibrationRequest> requests) {
  std::map<std::string, int> n;
  int total = 0;
  for (const auto& r : requests) {
    if (r.label.empty()) continue;
    ++n[r.label];
    ++total;
  }
  std::vector<LabelShare> out;
  for (const auto& [label, c] : n) out.push_back({label, static_cast<double>(c) / total});
  return out;
}

}  // namespace eldr
