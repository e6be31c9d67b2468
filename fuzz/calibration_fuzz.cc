// libFuzzer target: calibration JSON Lines (calibration.h) and the capture files `eldr serve
// --capture` writes (server/capture.h): read as `eldr fit` / `eldr simulate` read them, gunzipped
// with an incomplete last batch allowed, then parsed.
// First byte 0: the rest is a file (gzip or text). Every accepted request then has [L, E]
// prefill counts (and decode counts of that shape or none) and one meta entry.
// First byte 1: the rest builds a CaptureRecord; its line, behind the writer's header and gzipped
// as a batch is, must parse back to the same id, label, counts and replay fields.
#include <fuzzer/FuzzedDataProvider.h>

#include <boost/json.hpp>
#include <string>
#include <string_view>

#include "eldr/calibration.h"
#include "eldr/gzip.h"
#include "eldr/server/capture.h"
#include "fuzz_util.h"

namespace {

void CheckSet(const eldr::CalibrationSet& s, const eldr::ModelGeometry& g) {
  ELDR_FUZZ_CHECK(s.meta.size() == s.requests.size());
  for (const auto& r : s.requests) {
    ELDR_FUZZ_CHECK(r.prefill.layers() == g.moe_layers && r.prefill.experts() == g.experts);
    ELDR_FUZZ_CHECK(r.decode.empty() ||
                    (r.decode.layers() == g.moe_layers && r.decode.experts() == g.experts));
  }
}

void FuzzFile(std::string_view raw, const eldr::ModelGeometry& g) {
  std::string text(raw);
  if (eldr::IsGzip(raw)) {
    eldr::GunzipOptions o{.max_output = 1 << 20, .allow_truncated_tail = true};
    auto inflated = eldr::Gunzip(raw, o);
    if (!inflated) return;
    text = std::move(*inflated);
  }
  if (auto s = eldr::ParseCalibrationJsonl(text, &g)) CheckSet(*s, g);
  if (auto s = eldr::ParseCalibrationJsonl(text)) {
    // The model is the preset the header names, or the one its "geometry" describes; a header
    // is never read as a path.
    ELDR_FUZZ_CHECK(s->geometry.name == s->model && s->model.find('/') == std::string::npos &&
                    !s->model.ends_with(".json"));
    if (auto named = eldr::FindModel(s->model)) {
      ELDR_FUZZ_CHECK(eldr::RoutingShapeDifference(*named, s->geometry).empty());
    } else {
      ELDR_FUZZ_CHECK(text.find("\"geometry\"") != std::string::npos);
    }
    CheckSet(*s, s->geometry);
  }
}

eldr::ExpertCounts Counts(FuzzedDataProvider& in, const eldr::ModelGeometry& g) {
  eldr::ExpertCounts c(g.moe_layers, g.experts);
  for (auto& v : c.mutable_data())
    v = in.ConsumeIntegral<uint32_t>() >> in.ConsumeIntegral<uint8_t>() % 32;
  return c;
}

void FuzzCaptureRoundTrip(FuzzedDataProvider& in, const eldr::ModelGeometry& g) {
  eldr::server::CaptureRecord r;
  r.id = in.ConsumeRandomLengthString(64);
  r.label = in.ConsumeRandomLengthString(32);
  r.decoder = in.ConsumeRandomLengthString(32);
  r.prompt_tokens = in.ConsumeIntegralInRange<int64_t>(0, INT64_MAX);
  r.output_tokens = in.ConsumeIntegralInRange<int64_t>(0, INT64_MAX);
  r.arrival_us = in.ConsumeIntegralInRange<int64_t>(0, INT64_MAX);
  r.prefill = Counts(in, g);
  if (in.ConsumeBool()) r.decode = Counts(in, g);
  const std::string text = std::string(R"({"format":"eldr.calibration","version":1,"model":")") +
                           g.name + "\"}\n" + eldr::server::CaptureRecordJson(r) + "\n";
  auto member = eldr::GzipMember(text, 1);
  ELDR_FUZZ_CHECK(member.has_value());
  eldr::GunzipOptions o{.allow_truncated_tail = true};
  auto back = eldr::Gunzip(*member, o);
  ELDR_FUZZ_CHECK(back && *back == text);
  auto s = eldr::ParseCalibrationJsonl(*back, &g);
  // Ids, labels and decoders are arbitrary bytes here: a line the writer made from a string that
  // is not UTF-8 may be refused (the proxy admits printable ASCII only in X-Request-Id and
  // X-Eldr-Label), but nothing else may be. A string is UTF-8 when its serialisation, as the
  // writer makes it, parses back.
  if (!s) {
    const auto utf8 = [](const std::string& x) {
      boost::json::error_code ec;
      (void)boost::json::parse(boost::json::serialize(boost::json::string_view(x)), ec);
      return !ec;
    };
    if (utf8(r.id) && utf8(r.label) && utf8(r.decoder)) {
      std::fprintf(stderr, "refused: %s\n", s.error().ToString().c_str());
      ELDR_FUZZ_CHECK(!"a capture line of UTF-8 strings was refused");
    }
    return;
  }
  ELDR_FUZZ_CHECK(s->requests.size() == 1 && s->meta.size() == 1);
  const auto& q = s->requests[0];
  ELDR_FUZZ_CHECK(q.id == r.id && q.label == r.label);
  ELDR_FUZZ_CHECK(q.prefill == r.prefill);
  ELDR_FUZZ_CHECK(r.decode ? q.decode == *r.decode : q.decode.empty());
  const auto& m = s->meta[0];
  ELDR_FUZZ_CHECK(m.prompt_tokens == r.prompt_tokens && m.output_tokens == r.output_tokens);
  ELDR_FUZZ_CHECK(m.arrival_us == r.arrival_us && m.decoder == r.decoder);
  ELDR_FUZZ_CHECK(s->HasReplayFields());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const eldr::ModelGeometry g = *eldr::FindModel("mixtral-8x7b");
  if (size < 1) return 0;
  if (data[0] % 2 == 0) {
    FuzzFile(std::string_view(reinterpret_cast<const char*>(data + 1), size - 1), g);
  } else {
    FuzzedDataProvider in(data + 1, size - 1);
    FuzzCaptureRoundTrip(in, g);
  }
  return 0;
}
