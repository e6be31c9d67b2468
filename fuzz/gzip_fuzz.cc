// libFuzzer target: gunzip (gzip.h) as the capture and trace readers use it (eldr fit / simulate
// read capture files with allow_truncated_tail; eldr trace import strictly).
// Invariants:
//   * on arbitrary bytes, a strict success is a lenient success with the same output and nothing
//     truncated, and a lenient success with nothing truncated is a strict success (empty input
//     aside);
//   * output never exceeds max_output;
//   * round trip: two members made from the input's two halves inflate to their concatenation;
//     cut anywhere inside the second member, the strict reader fails with DataLoss and the
//     lenient one returns the first half and the exact number of bytes dropped.
#include <string>
#include <string_view>

#include "eldr/gzip.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const std::string_view in(reinterpret_cast<const char*>(data + 2), size - 2);
  eldr::GunzipOptions strict{.max_output = 1 << 20};
  eldr::GunzipOptions lenient = strict;
  lenient.allow_truncated_tail = true;
  eldr::GunzipInfo si, li;
  auto s = eldr::Gunzip(in, strict, &si);
  auto l = eldr::Gunzip(in, lenient, &li);
  if (s) {
    ELDR_FUZZ_CHECK(s->size() <= strict.max_output);
    ELDR_FUZZ_CHECK(l && *l == *s && li.truncated_bytes == 0 && li.members == si.members);
  }
  // Empty input is the one exception: no member at all, which only the lenient reader accepts
  // (a capture file created by a writer that died before its first batch).
  if (l && li.truncated_bytes == 0 && !in.empty()) ELDR_FUZZ_CHECK(s && *s == *l);
  if (l) ELDR_FUZZ_CHECK(l->size() <= lenient.max_output && li.truncated_bytes <= in.size());

  // Round trip on the input itself.
  const size_t half = in.size() * data[0] / 256;
  const int level = data[1] % 9 + 1;
  auto m1 = eldr::GzipMember(in.substr(0, half), level);
  auto m2 = eldr::GzipMember(in.substr(half), level);
  ELDR_FUZZ_CHECK(m1 && m2);
  const std::string both = *m1 + *m2;
  eldr::GunzipInfo bi;
  auto b = eldr::Gunzip(both, {}, &bi);
  ELDR_FUZZ_CHECK(b && *b == in && bi.members == 2);
  const size_t cut = 1 + (data[0] * 7 + data[1]) % (m2->size() - 1);  // in [1, |m2|)
  const std::string torn = *m1 + m2->substr(0, cut);
  auto ts = eldr::Gunzip(torn);
  ELDR_FUZZ_CHECK(!ts && ts.error().code() == eldr::StatusCode::kDataLoss);
  eldr::GunzipInfo ti;
  eldr::GunzipOptions tail;
  tail.allow_truncated_tail = true;
  auto tl_ = eldr::Gunzip(torn, tail, &ti);
  ELDR_FUZZ_CHECK(tl_ && *tl_ == in.substr(0, half));
  ELDR_FUZZ_CHECK(ti.members == 1 && ti.truncated_bytes == cut);
  return 0;
}
