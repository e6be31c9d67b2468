// libFuzzer target: signature-space files. Whatever loads must be usable.
#include <cstdlib>
#include <string_view>
#include <vector>

#include "eldr/signature_space.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto s =
      eldr::SignatureSpace::FromJson(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!s) return 0;
  eldr::ExpertCounts c((*s)->spec().layers, (*s)->spec().experts);
  c.mutable_data()[0] = 1;
  std::vector<float> scores((*s)->k());
  (void)(*s)->Score(c, scores);
  if ((*s)->ToJson().empty()) std::abort();
  return 0;
}
