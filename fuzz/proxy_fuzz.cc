// libFuzzer target: everything the proxy parses from the outside — client request bodies,
// prefill responses (every engine shape: pd.h SignatureSource), the JSON scanner and the config
// file. The scanner must accept every document boost::json accepts.
#include <boost/json.hpp>
#include <cstdlib>
#include <string_view>

#include "eldr/server/config.h"
#include "eldr/server/json_scan.h"
#include "eldr/server/pd.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const eldr::ModelGeometry g = *eldr::FindModel("gpt-oss-20b");
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  using namespace eldr::server;  // NOLINT
  for (auto ep : {Endpoint::kCompletions, Endpoint::kChat}) {
    if (auto r = ParseClientRequest(ep, text)) {
      (void)VllmPrefillBody(*r, 16);
      (void)VllmDecodeBody(*r, "{\"a\":1}");
      (void)SglangPrefillBody(*r, {"h", 1, 2});
    }
  }
  eldr::PayloadOptions opts;
  opts.max_decoded_bytes = 1 << 20;
  (void)ParsePrefillResponse(text, g, opts);
  // Whatever boost::json accepts, the scanner accepts whole (the scanner is laxer on one point:
  // it does not validate UTF-8 inside strings, which routing never needs).
  boost::json::error_code ec;
  (void)boost::json::parse(text, ec);
  if (!ec) {
    auto len = JsonValueLength(text);
    size_t end = len ? *len : 0;
    while (end < text.size() &&
           std::string_view(" \t\r\n").find(text[end]) != std::string_view::npos)
      ++end;
    if (!len || end != text.size()) std::abort();
  }
  (void)JsonMember(text, "choices");
  (void)ParseServeConfig(text);
  return 0;
}
