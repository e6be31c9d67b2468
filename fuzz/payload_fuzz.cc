// libFuzzer target: every engine payload decoder on arbitrary bytes. Accepted tables must be
// complete (tokens * L * top_k picks counted).
#include <cstdlib>
#include <string_view>

#include "eldr/payload.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const eldr::ModelGeometry g = *eldr::FindModel("gpt-oss-20b");
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  // Raw bytes as base64 text, and the bytes themselves wrapped as base64 (to reach the .npy and
  // int32 parsers past the base64 layer).
  const std::string wrapped = eldr::Base64Encode({data, size});
  for (std::string_view in : {text, std::string_view(wrapped)}) {
    for (auto r : {eldr::DecodeVllmRoutedExperts(in, g), eldr::DecodeSglangRoutedExperts(in, g)}) {
      if (r && r->Counts().Total() != static_cast<uint64_t>(r->tokens()) * g.moe_layers * g.top_k)
        std::abort();
    }
    (void)eldr::DecodeEldrSig(in, g);
  }
  auto list = eldr::ParsePickListJson(text, g);
  if (list &&
      list->Counts().Total() != static_cast<uint64_t>(list->tokens()) * g.moe_layers * g.top_k)
    std::abort();
  return 0;
}
