#include "eldr/server/json_scan.h"

#include <cstring>

namespace eldr::server {
namespace {

constexpr int kMaxDepth = 512;

// Index of the first byte < 0x20 in [p, p + n), or n. Eight bytes at a time: base64 payloads
// are long runs of printable characters.
size_t FindControl(const char* p, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v;
    std::memcpy(&v, p + i, 8);
    // High bit of each byte set where that byte < 0x20 (bytes >= 0x80 are excluded first).
    const uint64_t lt = (v - 0x2020202020202020ull) & ~v & 0x8080808080808080ull;
    if (lt) break;
  }
  for (; i < n; ++i) {
    if (static_cast<unsigned char>(p[i]) < 0x20) return i;
  }
  return n;
}

// Four hex digits already validated by the scanner.
unsigned Hex4(std::string_view h) {
  unsigned v = 0;
  for (char c : h.substr(0, 4)) {
    v = v * 16 + static_cast<unsigned>(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
  }
  return v;
}

bool IsWs(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

size_t SkipWs(std::string_view s, size_t i) {
  while (i < s.size() && IsWs(s[i])) ++i;
  return i;
}

// The scanner is a cursor over the text; Value() leaves pos after the value it validated.
struct Scanner {
  std::string_view s;
  size_t pos = 0;
  Status error;

  bool Fail(std::string_view what) {
    if (error.ok()) error = InvalidArgument("malformed JSON at offset {}: {}", pos, what);
    return false;
  }

  bool String() {
    // s[pos] == '"'
    ++pos;
    while (true) {
      // Fast path: jump to the next quote or backslash (base64 payloads are long and plain).
      const void* q = std::memchr(s.data() + pos, '"', s.size() - pos);
      const size_t quote = q ? static_cast<const char*>(q) - s.data() : s.size();
      const void* b = std::memchr(s.data() + pos, '\\', quote - pos);
      if (!b) {
        if (const size_t c = FindControl(s.data() + pos, quote - pos); c < quote - pos) {
          pos += c;
          return Fail("control character in string");
        }
        if (quote == s.size()) {
          pos = s.size();
          return Fail("unterminated string");
        }
        pos = quote + 1;
        return true;
      }
      const size_t bs = static_cast<const char*>(b) - s.data();
      if (const size_t c = FindControl(s.data() + pos, bs - pos); c < bs - pos) {
        pos += c;
        return Fail("control character in string");
      }
      pos = bs + 1;
      if (pos >= s.size()) return Fail("unterminated escape");
      const char e = s[pos];
      if (e == 'u') {
        if (pos + 4 >= s.size()) return Fail("short \\u escape");
        for (int k = 1; k <= 4; ++k) {
          if (!std::isxdigit(static_cast<unsigned char>(s[pos + k]))) return Fail("bad \\u escape");
        }
        pos += 5;
      } else if (std::strchr("\"\\/bfnrt", e) && e != 0) {
        ++pos;
      } else {
        return Fail("bad escape");
      }
    }
  }

  bool Number() {
    const size_t start = pos;
    if (pos < s.size() && s[pos] == '-') ++pos;
    if (pos >= s.size() || !std::isdigit(static_cast<unsigned char>(s[pos]))) {
      return Fail("bad number");
    }
    if (s[pos] == '0') {
      ++pos;
    } else {
      while (pos < s.size() && std::isdigit(static_cast<unsigned char>(s[pos]))) ++pos;
    }
    if (pos < s.size() && s[pos] == '.') {
      ++pos;
      if (pos >= s.size() || !std::isdigit(static_cast<unsigned char>(s[pos]))) {
        return Fail("bad fraction");
      }
      while (pos < s.size() && std::isdigit(static_cast<unsigned char>(s[pos]))) ++pos;
    }
    if (pos < s.size() && (s[pos] == 'e' || s[pos] == 'E')) {
      ++pos;
      if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) ++pos;
      if (pos >= s.size() || !std::isdigit(static_cast<unsigned char>(s[pos]))) {
        return Fail("bad exponent");
      }
      while (pos < s.size() && std::isdigit(static_cast<unsigned char>(s[pos]))) ++pos;
    }
    return pos > start;
  }

  bool Literal(std::string_view word) {
    if (s.substr(pos, word.size()) != word) return Fail("bad literal");
    pos += word.size();
    return true;
  }

  bool Value(int depth) {
    if (depth > kMaxDepth) return Fail("nesting too deep");
    pos = SkipWs(s, pos);
    if (pos >= s.size()) return Fail("unexpected end");
    switch (s[pos]) {
      case '"':
        return String();
      case '{': {
        ++pos;
        pos = SkipWs(s, pos);
        if (pos < s.size() && s[pos] == '}') {
          ++pos;
          return true;
        }
        while (true) {
          pos = SkipWs(s, pos);
          if (pos >= s.size() || s[pos] != '"') return Fail("expected a key");
          if (!String()) return false;
          pos = SkipWs(s, pos);
          if (pos >= s.size() || s[pos] != ':') return Fail("expected ':'");
          ++pos;
          if (!Value(depth + 1)) return false;
          pos = SkipWs(s, pos);
          if (pos < s.size() && s[pos] == ',') {
            ++pos;
            continue;
          }
          if (pos < s.size() && s[pos] == '}') {
            ++pos;
            return true;
          }
          return Fail("expected ',' or '}'");
        }
      }
      case '[': {
        ++pos;
        pos = SkipWs(s, pos);
        if (pos < s.size() && s[pos] == ']') {
          ++pos;
          return true;
        }
        while (true) {
          if (!Value(depth + 1)) return false;
          pos = SkipWs(s, pos);
          if (pos < s.size() && s[pos] == ',') {
            ++pos;
            continue;
          }
          if (pos < s.size() && s[pos] == ']') {
            ++pos;
            return true;
          }
          return Fail("expected ',' or ']'");
        }
      }
      case 't':
        return Literal("true");
      case 'f':
        return Literal("false");
      case 'n':
        return Literal("null");
      default:
        return Number();
    }
  }
};

}  // namespace

Result<size_t> JsonValueLength(std::string_view text) {
  Scanner sc{text};
  if (!sc.Value(0)) return tl::unexpected<Status>(sc.error);
  return sc.pos;
}

Result<std::string> JsonStringValue(std::string_view raw) {
  size_t i = SkipWs(raw, 0);
  if (i >= raw.size() || raw[i] != '"') return InvalidArgument("expected a JSON string");
  Scanner sc{raw, i};
  if (!sc.String()) return tl::unexpected<Status>(sc.error);
  // Base64 payloads have no escapes: one copy.
  const std::string_view body = raw.substr(i + 1, sc.pos - i - 2);
  if (body.find('\\') == std::string_view::npos) return std::string(body);
  std::string out;
  out.reserve(sc.pos - i);
  for (size_t p = i + 1; p + 1 < sc.pos; ++p) {
    char c = raw[p];
    if (c != '\\') {
      out.push_back(c);
      continue;
    }
    c = raw[++p];
    switch (c) {
      case 'b':
        out.push_back('\b');
        break;
      case 'f':
        out.push_back('\f');
        break;
      case 'n':
        out.push_back('\n');
        break;
      case 'r':
        out.push_back('\r');
        break;
      case 't':
        out.push_back('\t');
        break;
      case 'u': {
        unsigned cp = Hex4(raw.substr(p + 1, 4));
        p += 4;
        // Surrogate pairs are combined when both halves are present; a lone half becomes U+FFFD.
        if (cp >= 0xD800 && cp <= 0xDBFF && p + 6 < sc.pos && raw[p + 1] == '\\' &&
            raw[p + 2] == 'u') {
          unsigned lo = Hex4(raw.substr(p + 3, 4));
          if (lo >= 0xDC00 && lo <= 0xDFFF) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            p += 6;
          }
        }
        if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;
        if (cp < 0x80) {
          out.push_back(static_cast<char>(cp));
        } else if (cp < 0x800) {
          out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
          out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
        } else if (cp < 0x10000) {
          out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
          out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
          out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
        } else {
          out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
          out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
          out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
          out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
        }
        break;
      }
      default:
        out.push_back(c);  // " \ /
    }
  }
  return out;
}

Result<std::string_view> JsonMember(std::string_view object, std::string_view key) {
  std::string_view out;
  ELDR_RETURN_IF_ERROR(JsonMembers(object, {&key, 1}, {&out, 1}));
  return out;
}

Status JsonMembers(std::string_view object, std::span<const std::string_view> keys,
                   std::span<std::string_view> values) {
  for (auto& v : values) v = {};
  Scanner sc{object};
  sc.pos = SkipWs(object, 0);
  if (sc.pos >= object.size() || object[sc.pos] != '{')
    return InvalidArgument("expected an object");
  ++sc.pos;
  sc.pos = SkipWs(object, sc.pos);
  if (sc.pos < object.size() && object[sc.pos] == '}') return Status::Ok();
  while (true) {
    sc.pos = SkipWs(object, sc.pos);
    if (sc.pos >= object.size() || object[sc.pos] != '"') {
      sc.Fail("expected a key");
      return sc.error;
    }
    const size_t kstart = sc.pos;
    if (!sc.String()) return sc.error;
    std::string_view raw_key = object.substr(kstart + 1, sc.pos - kstart - 2);
    std::string unescaped;
    if (raw_key.find('\\') != std::string_view::npos) {
      ELDR_ASSIGN_OR_RETURN(unescaped, JsonStringValue(object.substr(kstart, sc.pos - kstart)));
      raw_key = unescaped;
    }
    sc.pos = SkipWs(object, sc.pos);
    if (sc.pos >= object.size() || object[sc.pos] != ':') {
      sc.Fail("expected ':'");
      return sc.error;
    }
    ++sc.pos;
    sc.pos = SkipWs(object, sc.pos);
    const size_t vstart = sc.pos;
    if (!sc.Value(1)) return sc.error;
    // The last duplicate wins, as in most JSON parsers (Python's json included).
    for (size_t k = 0; k < keys.size(); ++k) {
      if (raw_key == keys[k]) values[k] = object.substr(vstart, sc.pos - vstart);
    }
    sc.pos = SkipWs(object, sc.pos);
    if (sc.pos < object.size() && object[sc.pos] == ',') {
      ++sc.pos;
      continue;
    }
    if (sc.pos < object.size() && object[sc.pos] == '}') return Status::Ok();
    sc.Fail("expected ',' or '}'");
    return sc.error;
  }
}

Result<std::string> JsonWithoutMember(std::string_view object, std::string_view key) {
  // Member spans come from JsonMembers' own walk: the value of each occurrence of `key` points
  // into `object`, and its key starts at the quote before the ':' that precedes it.
  std::string_view v;
  ELDR_RETURN_IF_ERROR(JsonMembers(object, {&key, 1}, {&v, 1}));
  if (v.empty()) return std::string(object);
  Scanner sc{object};
  sc.pos = SkipWs(object, 0) + 1;
  std::string out = "{";
  bool first = true;
  while (true) {
    sc.pos = SkipWs(object, sc.pos);
    if (object[sc.pos] == '}') break;
    const size_t kstart = sc.pos;
    if (!sc.String()) return tl::unexpected<Status>(sc.error);
    const size_t kend = sc.pos;
    std::string name(object.substr(kstart + 1, kend - kstart - 2));
    if (name.find('\\') != std::string::npos) {
      ELDR_ASSIGN_OR_RETURN(name, JsonStringValue(object.substr(kstart, kend - kstart)));
    }
    sc.pos = SkipWs(object, sc.pos) + 1;  // ':'
    sc.pos = SkipWs(object, sc.pos);
    if (!sc.Value(1)) return tl::unexpected<Status>(sc.error);
    if (name != key) {
      if (!first) out += ',';
      out.append(object.substr(kstart, sc.pos - kstart));
      first = false;
    }
    sc.pos = SkipWs(object, sc.pos);
    if (object[sc.pos] == ',') ++sc.pos;
  }
  out += '}';
  return out;
}

Result<std::string_view> JsonElement(std::string_view array, size_t index) {
  Scanner sc{array};
  sc.pos = SkipWs(array, 0);
  if (sc.pos >= array.size() || array[sc.pos] != '[') return InvalidArgument("expected an array");
  ++sc.pos;
  sc.pos = SkipWs(array, sc.pos);
  if (sc.pos < array.size() && array[sc.pos] == ']') return std::string_view();
  for (size_t i = 0;; ++i) {
    sc.pos = SkipWs(array, sc.pos);
    const size_t vstart = sc.pos;
    if (!sc.Value(1)) return tl::unexpected<Status>(sc.error);
    if (i == index) return array.substr(vstart, sc.pos - vstart);
    sc.pos = SkipWs(array, sc.pos);
    if (sc.pos < array.size() && array[sc.pos] == ',') {
      ++sc.pos;
      continue;
    }
    if (sc.pos < array.size() && array[sc.pos] == ']') return std::string_view();
    sc.Fail("expected ',' or ']'");
    return tl::unexpected<Status>(sc.error);
  }
}

}  // namespace eldr::server
