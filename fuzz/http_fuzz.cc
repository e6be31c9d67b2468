// libFuzzer target: HTTP/1.1 parsing as the proxy does it (src/server/proxy.cc Session, src/server/
// upstream.cc ReadPiece): Beast's request parser with the proxy's header and body limits on what
// a client sends, Beast's response parser reading an upstream body (chunked or not) piece by
// piece into a fixed buffer, and the output-token counter fed the relayed bytes.
// The first byte picks the mode; the next bytes the piece sizes the input arrives in.
// Invariants:
//   * a message parsed from one buffer and from the same bytes split anywhere (as TCP may deliver
//     them) yields the same verdict, request line or status, headers and body (two Beast
//     segmentation effects excepted, see mode 0 below);
//   * a response body read through the relay's fixed buffer equals the body read whole;
//   * a parsed body never exceeds the body limit;
//   * OutputTokenCounter counts the same however the body is split.
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "eldr/net/wire.h"
#include "eldr/server/capture.h"
#include "eldr/server/config.h"
#include "fuzz_util.h"

namespace {

namespace beast = boost::beast;
namespace http = beast::http;

struct Outcome {
  beast::error_code ec;
  std::string head;  // start line and fields, or empty
  std::string body;
  friend bool operator==(const Outcome&, const Outcome&) = default;
};

// The same verdict, and the same message when accepted (the error code of a refusal may depend
// on segmentation; see mode 0 below).
bool SameVerdict(const Outcome& a, const Outcome& b) {
  if (a.ec || b.ec) return static_cast<bool>(a.ec) == static_cast<bool>(b.ec);
  return a == b;
}

// Feeds `in` in the given piece sizes (the rest in one piece) as a socket would deliver them:
// bytes a put() left unconsumed stay in front of the next piece. `before`/`after` bracket each
// put() (a buffer body's window). End of input is reported with put_eof().
template <class Parser, class Before, class After>
beast::error_code Feed(Parser& p, std::string_view in, const std::vector<size_t>& pieces,
                       Before before, After after) {
  std::string pending;
  size_t pos = 0, piece = 0;
  beast::error_code ec;
  auto more = [&]() {
    if (pos >= in.size()) return false;
    size_t n = piece < pieces.size() ? pieces[piece++] : in.size() - pos;
    n = std::min(std::max<size_t>(n, 1), in.size() - pos);
    pending.append(in.substr(pos, n));
    pos += n;
    return true;
  };
  more();
  for (int guard = 0; !p.is_done() && guard < 1 << 20; ++guard) {
    if (pending.empty() && !more()) {
      p.put_eof(ec);
      return ec;
    }
    before();
    const size_t n = p.put(boost::asio::buffer(pending), ec);
    after();
    pending.erase(0, n);
    if (ec == http::error::need_more) {
      ec = {};
      if (!more()) {
        p.put_eof(ec);
        return ec;
      }
      continue;
    }
    if (ec == http::error::need_buffer) {
      ec = {};
      continue;
    }
    if (ec) return ec;
  }
  return ec;
}

template <class Fields>
std::string Head(const Fields& f) {
  std::string h;
  for (const auto& field : f) {
    h.append(field.name_string());
    h += ": ";
    h.append(field.value());
    h += '\n';
  }
  return h;
}

// The proxy's request read: header limit, body limit, string body.
Outcome ParseRequest(std::string_view in, const std::vector<size_t>& pieces, uint64_t body_limit,
                     uint32_t header_limit) {
  http::request_parser<http::string_body> p;
  p.body_limit(body_limit);
  p.header_limit(header_limit);
  Outcome o;
  o.ec = Feed(
      p, in, pieces, [] {}, [] {});
  if (!o.ec) {
    const auto& m = p.get();
    o.head = std::string(m.method_string()) + ' ' + std::string(m.target()) + ' ' +
             std::to_string(m.version()) + (m.keep_alive() ? " keep\n" : " close\n") + Head(m);
    o.body = m.body();
    ELDR_FUZZ_CHECK(o.body.size() <= body_limit);
    // What Session and Handle then read off the request: none of it may fail on any bytes.
    (void)eldr::net::BearerToken(std::string_view(m[http::field::authorization].data(),
                                                  m[http::field::authorization].size()));
    (void)eldr::net::BearerMatches(std::string_view(m[http::field::authorization].data(),
                                                    m[http::field::authorization].size()),
                                   "secret");
  }
  return o;
}

// The relay's upstream read: a buffer body drained `window` bytes at a time.
Outcome ParseResponseRelay(std::string_view in, const std::vector<size_t>& pieces, size_t window,
                           eldr::server::OutputTokenCounter* tokens) {
  http::response_parser<http::buffer_body> p;
  p.body_limit(boost::none);
  std::vector<char> chunk(window);
  Outcome o;
  o.ec = Feed(
      p, in, pieces,
      [&] {
        p.get().body().data = chunk.data();
        p.get().body().size = chunk.size();
      },
      [&] {
        const size_t got = chunk.size() - p.get().body().size;
        o.body.append(chunk.data(), got);
        tokens->Feed(std::string_view(chunk.data(), got));
      });
  if (o.ec) {
    o.body.clear();  // compared only for complete messages
  } else {
    o.head = std::to_string(p.get().result_int()) +
             (p.get().keep_alive() ? " keep\n" : " close\n") + Head(p.get());
  }
  return o;
}

// The non-streaming upstream read (prefill responses): the whole body as a string, bounded by
// max_payload_bytes as upstream.cc bounds it. (Unbounded, a string body reserves whatever
// Content-Length claims: this target's first harness did, and asked ASan for 8 EiB.)
Outcome ParseResponseWhole(std::string_view in, const std::vector<size_t>& pieces) {
  http::response_parser<http::string_body> p;
  p.body_limit(eldr::server::ServeOptions{}.max_payload_bytes);
  Outcome o;
  o.ec = Feed(
      p, in, pieces, [] {}, [] {});
  if (!o.ec) {
    o.head = std::to_string(p.get().result_int()) +
             (p.get().keep_alive() ? " keep\n" : " close\n") + Head(p.get());
    o.body = p.get().body();
  }
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  const int mode = data[0] % 3;
  // Piece sizes: up to 3 (1..64 bytes each) from data[1..3]; a zero ends the list.
  std::vector<size_t> pieces;
  for (int i = 1; i <= 3 && data[i] != 0; ++i) pieces.push_back(data[i] % 64 + 1);
  const std::string_view in(reinterpret_cast<const char*>(data + 4), size - 4);
  const std::vector<size_t> whole;
  if (mode == 0) {
    // Default limits (ServeOptions: 8 MiB body, 60 KiB head) and small ones that inputs can hit.
    for (auto [body, head] : {std::pair<uint64_t, uint32_t>{8u << 20, 60u << 10}, {64, 128}}) {
      const Outcome a = ParseRequest(in, whole, body, head);
      const Outcome b = ParseRequest(in, pieces, body, head);
      if (a == b) continue;
      // Both refused: the code may differ. Beast parses the request line of the first piece at
      // once, but once it has waited it waits for the end of the head, so a malformed line in a
      // head cut short reads as bad_version whole and partial_message in pieces. The proxy
      // answers 400 or closes; neither accepts.
      if (a.ec && b.ec) continue;
      // Beast (345) gives the request line and the fields each up to header_limit bytes, but
      // how much of that it allows depends on how the head arrives: in one read the fields alone
      // are limited, in pieces its skip arithmetic counts part of what came before. A head of
      // limit < n <= 2 x limit bytes may pass or get 431 depending on segmentation (the request
      // line and the fields are each parsed within header_limit). Found by this target;
      // docs/reliability.md. Any other difference is a failure.
      const bool limit_side =
          a.ec == http::error::header_limit || b.ec == http::error::header_limit;
      const size_t end = in.find("\r\n\r\n");
      const bool in_slack =
          end != std::string_view::npos && end + 4 > head && end + 4 <= 2 * size_t{head};
      if (!(limit_side && in_slack)) {
        std::fprintf(stderr, "whole: %s [%s]\nsplit: %s [%s]\n", a.ec.message().c_str(),
                     a.head.c_str(), b.ec.message().c_str(), b.head.c_str());
        ELDR_FUZZ_CHECK(a == b);
      }
    }
  } else if (mode == 1) {
    const size_t window = pieces.empty() ? 16384 : pieces.back();
    eldr::server::OutputTokenCounter t1, t2;
    const Outcome a = ParseResponseWhole(in, whole);
    const Outcome b = ParseResponseRelay(in, whole, 16384, &t1);
    const Outcome c = ParseResponseRelay(in, pieces, window, &t2);
    ELDR_FUZZ_CHECK(SameVerdict(a, b));
    ELDR_FUZZ_CHECK(SameVerdict(b, c));
    if (!b.ec) ELDR_FUZZ_CHECK(t1.count() == t2.count() && t1.exact() == t2.exact());
  } else {
    // The counter alone on raw body bytes (SSE events, JSON with usage), whole vs split.
    eldr::server::OutputTokenCounter whole_count, split_count;
    whole_count.Feed(in);
    size_t pos = 0;
    for (size_t i = 0; pos < in.size(); ++i) {
      const size_t n = std::min(in.size() - pos, i < pieces.size() ? pieces[i] : in.size());
      split_count.Feed(in.substr(pos, n));
      pos += n;
    }
    ELDR_FUZZ_CHECK(whole_count.count() == split_count.count());
    ELDR_FUZZ_CHECK(whole_count.exact() == split_count.exact());
    ELDR_FUZZ_CHECK(whole_count.count() >= 0);
  }
  return 0;
}
