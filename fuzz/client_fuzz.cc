// libFuzzer target: the client's request body as the proxy reads it (ParseClientRequest, server/
// pd.h) and the legs it derives from it, plus the tree-free JSON scanner (server/json_scan.h) that
// reads the upstream bodies, compared with boost::json on the same text.
// Invariants:
//   * an accepted request has n >= 1, a prompt (text or token ids), and every leg body is a JSON
//     object: the vLLM prefill leg non-streaming with max_tokens 1 and return_token_ids, the
//     decode legs keeping the client's stream flag, SGLang legs carrying the bootstrap room;
//   * JsonValueLength spans exactly a document boost::json accepts (up to trailing whitespace);
//   * JsonMember finds the value boost::json finds under a key that occurs once.
#include <algorithm>
#include <boost/json.hpp>
#include <cmath>
#include <string>
#include <string_view>

#include "eldr/server/json_scan.h"
#include "eldr/server/pd.h"
#include "fuzz_util.h"

namespace {

namespace json = boost::json;
using eldr::server::ClientRequest;

json::object MustObject(const std::string& text) {
  json::error_code ec;
  json::value v = json::parse(text, ec);
  ELDR_FUZZ_CHECK(!ec && v.is_object());
  return std::move(v.get_object());
}

void CheckLegs(const ClientRequest& r) {
  ELDR_FUZZ_CHECK(r.n >= 1);
  ELDR_FUZZ_CHECK(r.endpoint == eldr::server::Endpoint::kChat || r.body.contains("prompt"));
  const json::object pre = MustObject(eldr::server::VllmPrefillBody(r, 3));
  ELDR_FUZZ_CHECK(pre.at("stream") == false && pre.at("max_tokens") == 1);
  ELDR_FUZZ_CHECK(pre.at("return_token_ids") == true);
  ELDR_FUZZ_CHECK(pre.at("kv_transfer_params").at("do_remote_decode") == true);
  ELDR_FUZZ_CHECK(!pre.contains("stream_options") && !pre.contains("min_tokens"));
  const int32_t ids[] = {1, 2, 3};
  const json::object dec = MustObject(eldr::server::VllmDecodeBody(r, R"({"x":1})", ids));
  ELDR_FUZZ_CHECK(dec.at("kv_transfer_params").at("x") == 1);
  ELDR_FUZZ_CHECK(dec.contains("stream") == r.body.contains("stream"));
  const eldr::server::Bootstrap b{"h", 1, 77};
  const json::object sp = MustObject(eldr::server::SglangPrefillBody(r, b));
  const json::object sd = MustObject(eldr::server::SglangDecodeBody(r, b));
  ELDR_FUZZ_CHECK(sp.at("bootstrap_room") == 77 && sd.at("bootstrap_room") == 77);
}

// Equal JSON, with doubles equal to the last bits: boost::json 1.81 reads a long mantissa
// imprecisely and differently depending on what follows the number (`-58.50807957213099906880623`
// alone and inside an object differ in the last digit), and `0e382` as NaN, so the same text
// need not give the same double twice. Its depth limit (32) bounds the recursion.
bool SameValue(const json::value& a, const json::value& b) {
  if (a.is_double() && b.is_double()) {
    const double x = a.get_double(), y = b.get_double();
    if (std::isnan(x) || std::isnan(y)) return std::isnan(x) && std::isnan(y);
    return x == y || std::fabs(x - y) <= 1e-14 * std::max(std::fabs(x), std::fabs(y));
  }
  if (a.kind() != b.kind()) return false;
  if (a.is_array()) {
    const auto &p = a.get_array(), &q = b.get_array();
    if (p.size() != q.size()) return false;
    for (size_t i = 0; i < p.size(); ++i) {
      if (!SameValue(p[i], q[i])) return false;
    }
    return true;
  }
  if (a.is_object()) {
    const auto &p = a.get_object(), &q = b.get_object();
    if (p.size() != q.size()) return false;
    for (const auto& kv : p) {
      const auto* other = q.if_contains(kv.key());
      if (!other || !SameValue(kv.value(), *other)) return false;
    }
    return true;
  }
  return a == b;
}

size_t Occurrences(std::string_view text, std::string_view what) {
  size_t n = 0;
  for (size_t p = text.find(what); p != std::string_view::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

void CheckScanner(std::string_view text) {
  json::error_code ec;
  const json::value v = json::parse(text, ec);
  auto len = eldr::server::JsonValueLength(text);
  if (!ec) {
    // The scanner is laxer on one point only: it does not validate UTF-8 inside strings.
    ELDR_FUZZ_CHECK(len.has_value());
    const size_t rest = text.find_first_not_of(" \t\r\n", *len);
    ELDR_FUZZ_CHECK(rest == std::string_view::npos);
  }
  if (ec || !v.is_object() || text.find('\\') != std::string_view::npos) return;
  for (std::string_view key : {"model", "prompt", "messages", "stream", "choices", "usage"}) {
    auto got = eldr::server::JsonMember(text, key);
    ELDR_FUZZ_CHECK(got.has_value());
    const auto* want = v.get_object().if_contains(key);
    if (Occurrences(text, "\"" + std::string(key) + "\"") != 1) continue;
    ELDR_FUZZ_CHECK(got->empty() == (want == nullptr));
    if (want) {
      json::error_code ec2;
      const json::value parsed = json::parse(*got, ec2);
      ELDR_FUZZ_CHECK(!ec2 && SameValue(parsed, *want));
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (auto ep : {eldr::server::Endpoint::kCompletions, eldr::server::Endpoint::kChat}) {
    if (auto r = eldr::server::ParseClientRequest(ep, text)) CheckLegs(*r);
  }
  CheckScanner(text);
  return 0;
}
