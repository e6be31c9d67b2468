// libFuzzer target: the .npy reader (ParseNpy) on raw bytes, as vLLM >= 0.22 sends them inside
// choices[i].routed_experts once base64-decoded.
// Invariants: an accepted array is an integer dtype whose data is exactly prod(shape) items at
// the end of the buffer; MakeNpy of what was read reads back the same; and a 3-D array decodes as
// routed experts exactly when the reference (fuzz_util.h) accepts its shape and items, with equal
// counts (dimensions compared as the 64-bit numbers in the header, never truncated).
#include <string_view>

#include "eldr/payload.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> bytes(data, size);
  auto v = eldr::ParseNpy(bytes);
  if (!v) return 0;
  ELDR_FUZZ_CHECK(v->kind == 'u' || v->kind == 'i');
  ELDR_FUZZ_CHECK(v->item_size == 1 || v->item_size == 2 || v->item_size == 4 || v->item_size == 8);
  uint64_t n = 1;
  for (int64_t d : v->shape) {
    ELDR_FUZZ_CHECK(d >= 0);
    n *= static_cast<uint64_t>(d);
  }
  ELDR_FUZZ_CHECK(v->data.size() == n * v->item_size);
  ELDR_FUZZ_CHECK(v->data.data() + v->data.size() == data + size);

  const auto again = eldr::MakeNpy(v->kind, v->item_size, v->shape, v->data);
  auto w = eldr::ParseNpy(again);
  ELDR_FUZZ_CHECK(w.has_value());
  ELDR_FUZZ_CHECK(w->kind == v->kind && w->item_size == v->item_size && w->shape == v->shape);
  ELDR_FUZZ_CHECK(std::equal(w->data.begin(), w->data.end(), v->data.begin(), v->data.end()));

  if (v->shape.size() != 3) return 0;
  const std::string b64 = eldr::Base64Encode(bytes);
  for (int which = 0; which < 5; ++which) {
    const eldr::ModelGeometry g = eldr::fuzz::MakeGeometry(which);
    auto got = eldr::DecodeVllmRoutedExperts(b64, g);
    std::optional<eldr::ExpertCounts> want;
    if (v->shape[2] == g.top_k) {
      want = eldr::fuzz::RefCounts(eldr::fuzz::RefItems(v->data, v->item_size, v->kind == 'i'),
                                   v->shape[0], v->shape[1], g);
    }
    ELDR_FUZZ_CHECK(got.has_value() == want.has_value());
    if (got) {
      ELDR_FUZZ_CHECK(got->tokens() == v->shape[0]);
      ELDR_FUZZ_CHECK(got->Counts() == *want);
    }
  }
  return 0;
}
