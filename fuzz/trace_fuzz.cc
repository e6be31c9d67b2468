// libFuzzer target: the eldr.trace reader (sim/trace.h), as `eldr simulate --trace` and `eldr trace
// stats` load a trace file.
// Invariants on an accepted file: every request holds tokens x L x top_k picks, each in [0, E) and
// none repeated within a token's layer; the header's numbers are what the trace reports, read
// again here with boost::json (no silent truncation to int); and SerializeTrace of the result
// reads back equal (so a file the reader accepts can be rewritten by `eldr trace import`).
#include <boost/json.hpp>
#include <cstring>
#include <span>

#include "eldr/sim/trace.h"
#include "fuzz_util.h"

namespace {

bool SameTrace(const eldr::sim::Trace& a, const eldr::sim::Trace& b) {
  if (a.geometry.name != b.geometry.name || a.source != b.source ||
      a.prefix_tokens != b.prefix_tokens || a.requests.size() != b.requests.size()) {
    return false;
  }
  for (size_t i = 0; i < a.requests.size(); ++i) {
    const auto& x = a.requests[i];
    const auto& y = b.requests[i];
    if (x.label != y.label || x.prompt_tokens != y.prompt_tokens || x.tokens != y.tokens ||
        x.picks != y.picks) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> bytes(data, size);
  auto t = eldr::sim::ParseTrace(bytes);
  if (!t) return 0;
  ELDR_FUZZ_CHECK(eldr::sim::IsTraceBytes(bytes));
  const auto& g = t->geometry;
  for (const auto& r : t->requests) {
    eldr::fuzz::CheckTracePicks(r.tokens, r.prompt_tokens, r.picks, g);
  }
  // The header as written in the file: magic, u32 length, JSON.
  uint32_t hlen = 0;
  std::memcpy(&hlen, data + 8, 4);
  const auto h =
      boost::json::parse(std::string_view(reinterpret_cast<const char*>(data + 12), hlen))
          .as_object();
  ELDR_FUZZ_CHECK(h.at("prefix_tokens").to_number<int64_t>() == t->prefix_tokens);
  ELDR_FUZZ_CHECK(h.at("requests").to_number<int64_t>() ==
                  static_cast<int64_t>(t->requests.size()));
  // The model is the preset the header names, or the one its "geometry" describes (never a
  // path read from disk).
  const std::string_view model(h.at("model").as_string());
  ELDR_FUZZ_CHECK(model.find('/') == std::string_view::npos && !model.ends_with(".json"));
  if (auto named = eldr::FindModel(model)) {
    ELDR_FUZZ_CHECK(named->name == g.name && eldr::RoutingShapeDifference(*named, g).empty());
  } else {
    ELDR_FUZZ_CHECK(model == g.name);
    const auto* gj = h.if_contains("geometry");
    ELDR_FUZZ_CHECK(gj != nullptr);
    auto d = eldr::ModelGeometryFromJson(boost::json::serialize(*gj));
    ELDR_FUZZ_CHECK(d && d->name == g.name && eldr::RoutingShapeDifference(*d, g).empty());
  }

  const auto again = eldr::sim::SerializeTrace(*t);
  auto u = eldr::sim::ParseTrace(again);
  ELDR_FUZZ_CHECK(u.has_value());
  ELDR_FUZZ_CHECK(SameTrace(*t, *u));
  return 0;
}
