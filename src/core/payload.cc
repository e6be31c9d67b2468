#include "eldr/payload.h"

#include <array>
#include <charconv>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "simd.h"

namespace eldr {

namespace {

constexpr char kB64Alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

constexpr std::array<uint8_t, 256> MakeB64Table() {
  std::array<uint8_t, 256> t{};
  for (auto& v : t) v = 0xFF;
  for (int i = 0; i < 64; ++i) t[static_cast<uint8_t>(kB64Alphabet[i])] = static_cast<uint8_t>(i);
  return t;
}
constexpr std::array<uint8_t, 256> kB64 = MakeB64Table();

Status BadB64At(size_t i, char c) {
  return InvalidArgument("base64: invalid character 0x{:02x} at offset {}", static_cast<uint8_t>(c),
                         i)
      .error();
}

template <class T>
T LoadLE(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));  // x86-64 and aarch64 builds are little-endian
  return v;
}

#if ELDR_X86_DISPATCH
// AVX2 base64 decoding, 32 characters to 24 bytes per step, after W. Mula and D. Lemire, "Faster
// Base64 Encoding and Decoding using AVX2 Instructions" (2018). Characters are classified by
// their high and low nibbles: lut_lo[l] holds the classes for which low nibble l is invalid,
// lut_hi[h] the class of high nibble h, and a non-zero AND flags an invalid character. The value
// is the character plus an offset chosen by its high nibble ('/' shares '+'s nibble and is
// told apart by a compare). Returns how many input characters were decoded; it stops before the
// first 32-character block holding an invalid character (the scalar path then reports it) and
// leaves at least 8 bytes of room, as each step stores 32 bytes.
ELDR_TARGET_AVX2 size_t Base64DecodeAvx2(const uint8_t* s, size_t n, uint8_t* d, size_t out_cap) {
  const __m256i lut_lo =
      _mm256_setr_epi8(0x15, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x13, 0x1A, 0x1B,
                       0x1B, 0x1B, 0x1A, 0x15, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
                       0x13, 0x1A, 0x1B, 0x1B, 0x1B, 0x1A);
  const __m256i lut_hi =
      _mm256_setr_epi8(0x10, 0x10, 0x01, 0x02, 0x04, 0x08, 0x04, 0x08, 0x10, 0x10, 0x10, 0x10, 0x10,
                       0x10, 0x10, 0x10, 0x10, 0x10, 0x01, 0x02, 0x04, 0x08, 0x04, 0x08, 0x10, 0x10,
                       0x10, 0x10, 0x10, 0x10, 0x10, 0x10);
  const __m256i lut_roll =
      _mm256_setr_epi8(0, 16, 19, 4, -65, -65, -71, -71, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 19, 4, -65,
                       -65, -71, -71, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m256i nibble = _mm256_set1_epi8(0x0F);
  const __m256i slash = _mm256_set1_epi8('/');
  const __m256i pack_ab = _mm256_set1_epi32(0x01400140);
  const __m256i pack_abc = _mm256_set1_epi32(0x00011000);
  const __m256i gather = _mm256_setr_epi8(2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1, 2,
                                          1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1);
  const __m256i compact = _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 7, 7);
  size_t i = 0, o = 0;
  for (; i + 32 <= n && o + 32 <= out_cap; i += 32, o += 24) {
    const __m256i in = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i));
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi32(in, 4), nibble);
    const __m256i lo = _mm256_and_si256(in, nibble);
    const __m256i cls =
        _mm256_and_si256(_mm256_shuffle_epi8(lut_lo, lo), _mm256_shuffle_epi8(lut_hi, hi));
    if (!_mm256_testz_si256(cls, cls)) break;
    const __m256i roll =
        _mm256_shuffle_epi8(lut_roll, _mm256_add_epi8(_mm256_cmpeq_epi8(in, slash), hi));
    const __m256i v = _mm256_add_epi8(in, roll);
    const __m256i ab = _mm256_maddubs_epi16(v, pack_ab);
    const __m256i abc = _mm256_madd_epi16(ab, pack_abc);
    const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(abc, gather), compact);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + o), bytes);
  }
  return i;
}
#endif

}  // namespace

Status Base64Decode(std::string_view in, std::vector<uint8_t>* out) {
  if (in.size() % 4 != 0) {
    return InvalidArgument("base64: length {} is not a multiple of 4 (truncated?)", in.size())
        .error();
  }
  size_t pad = 0;
  if (!in.empty() && in.back() == '=') pad = (in.size() >= 2 && in[in.size() - 2] == '=') ? 2 : 1;
  out->resize(in.size() / 4 * 3 - pad);
  if (in.empty()) return Status::Ok();
  const auto* s = reinterpret_cast<const uint8_t*>(in.data());
  uint8_t* d = out->data();
  const size_t full = in.size() / 4 - 1;  // the last quad may carry padding
  size_t done = 0;
#if ELDR_X86_DISPATCH
  if (internal::CpuIsa() != internal::Isa::kBase) {
    done = Base64DecodeAvx2(s, full * 4, d, out->size()) / 4;  // whole quads, never the last
  }
#endif
  s += done * 4;
  d += done * 3;
  // Hot loop: four table lookups per quad; any invalid character sets a high bit in `bad`, which
  // is checked once per quad so the loop stays branch-light.
  for (size_t q = done; q < full; ++q, s += 4, d += 3) {
    const uint32_t a = kB64[s[0]], b = kB64[s[1]], c = kB64[s[2]], e = kB64[s[3]];
    if ((a | b | c | e) & 0x80) {
      for (int j = 0; j < 4; ++j)
        if (kB64[s[j]] & 0x80) return BadB64At(q * 4 + j, static_cast<char>(s[j]));
    }
    const uint32_t v = (a << 18) | (b << 12) | (c << 6) | e;
    d[0] = static_cast<uint8_t>(v >> 16);
    d[1] = static_cast<uint8_t>(v >> 8);
    d[2] = static_cast<uint8_t>(v);
  }
  const size_t base = full * 4;
  uint32_t v = 0;
  for (int j = 0; j < 4; ++j) {
    const uint8_t ch = s[j];
    uint32_t x;
    if (j >= 4 - static_cast<int>(pad)) {
      x = 0;  // '=' (already known to be padding)
    } else {
      x = kB64[ch];
      if (x & 0x80) return BadB64At(base + j, static_cast<char>(ch));
    }
    v = (v << 6) | x;
  }
  const int keep = 3 - static_cast<int>(pad);
  for (int j = 0; j < keep; ++j) d[j] = static_cast<uint8_t>(v >> (16 - 8 * j));
  return Status::Ok();
}

std::string Base64Encode(std::span<const uint8_t> in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    const uint32_t v = (uint32_t{in[i]} << 16) | (uint32_t{in[i + 1]} << 8) | in[i + 2];
    out.push_back(kB64Alphabet[v >> 18]);
    out.push_back(kB64Alphabet[(v >> 12) & 63]);
    out.push_back(kB64Alphabet[(v >> 6) & 63]);
    out.push_back(kB64Alphabet[v & 63]);
  }
  const size_t rest = in.size() - i;
  if (rest > 0) {
    uint32_t v = uint32_t{in[i]} << 16;
    if (rest == 2) v |= uint32_t{in[i + 1]} << 8;
    out.push_back(kB64Alphabet[v >> 18]);
    out.push_back(kB64Alphabet[(v >> 12) & 63]);
    out.push_back(rest == 2 ? kB64Alphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

// ---- .npy -------------------------------------------------------------------------------------

namespace {

// Finds `'key':` in a Python dict literal and returns the text after the colon.
std::string_view AfterKey(std::string_view header, std::string_view key) {
  for (char q : {'\'', '"'}) {
    std::string pat;
    pat += q;
    pat += key;
    pat += q;
    size_t p = header.find(pat);
    if (p == std::string_view::npos) continue;
    p = header.find(':', p + pat.size());
    if (p == std::string_view::npos) return {};
    std::string_view rest = header.substr(p + 1);
    while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    return rest;
  }
  return {};
}

}  // namespace

Result<NpyView> ParseNpy(std::span<const uint8_t> bytes) {
  static constexpr uint8_t kMagic[] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (bytes.size() < 10 || std::memcmp(bytes.data(), kMagic, 6) != 0) {
    return InvalidArgument("npy: missing \\x93NUMPY magic (payload is not a .npy file)");
  }
  const int major = bytes[6];
  size_t header_len, header_start;
  if (major == 1) {
    header_len = LoadLE<uint16_t>(bytes.data() + 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return InvalidArgument("npy: truncated v{} preamble", major);
    header_len = LoadLE<uint32_t>(bytes.data() + 8);
    header_start = 12;
  } else {
    return InvalidArgument("npy: unsupported format version {}", major);
  }
  if (header_len > bytes.size() - header_start) {
    return InvalidArgument("npy: header length {} exceeds the {} bytes present", header_len,
                           bytes.size() - header_start);
  }
  const std::string_view header(reinterpret_cast<const char*>(bytes.data() + header_start),
                                header_len);
  NpyView v;
  // descr, e.g. '<u2', '|u1', '<i4'.
  std::string_view d = AfterKey(header, "descr");
  if (d.size() < 5 || (d[0] != '\'' && d[0] != '"')) return InvalidArgument("npy: no 'descr'");
  const char order = d[1], kind = d[2];
  const int size = d[3] - '0';
  if (d[4] != d[0] || (kind != 'u' && kind != 'i') ||
      (size != 1 && size != 2 && size != 4 && size != 8)) {
    return InvalidArgument("npy: unsupported dtype {} (need an integer dtype)",
                           d.substr(0, std::min<size_t>(d.size(), 8)));
  }
  if (order == '>' && size > 1) return InvalidArgument("npy: big-endian dtype is not supported");
  if (order != '<' && order != '|' && order != '=') return InvalidArgument("npy: bad byte order");
  v.kind = kind;
  v.item_size = size;
  std::string_view fo = AfterKey(header, "fortran_order");
  if (fo.substr(0, 5) != "False") {
    return InvalidArgument("npy: fortran_order arrays are not supported (need C order)");
  }
  std::string_view sh = AfterKey(header, "shape");
  if (sh.empty() || sh.front() != '(') return InvalidArgument("npy: no 'shape' tuple");
  size_t close = sh.find(')');
  if (close == std::string_view::npos) return InvalidArgument("npy: unterminated 'shape'");
  std::string_view dims = sh.substr(1, close - 1);
  int64_t n = 1;
  while (!dims.empty()) {
    while (!dims.empty() && (dims.front() == ' ' || dims.front() == ',')) dims.remove_prefix(1);
    if (dims.empty()) break;
    int64_t x = 0;
    auto [p, ec] = std::from_chars(dims.data(), dims.data() + dims.size(), x);
    if (ec != std::errc() || x < 0) return InvalidArgument("npy: bad dimension in 'shape'");
    dims.remove_prefix(p - dims.data());
    if (dims.size() > 0 && dims.front() == 'L') dims.remove_prefix(1);
    if (v.shape.size() >= 8) return InvalidArgument("npy: too many dimensions");
    if (x != 0 && n > (int64_t{1} << 40) / x) return InvalidArgument("npy: shape too large");
    n *= x;
    v.shape.push_back(x);
  }
  const size_t data_start = header_start + header_len;
  const size_t need = static_cast<size_t>(n) * size;
  if (bytes.size() - data_start != need) {
    return InvalidArgument("npy: shape needs {} data bytes but {} are present", need,
                           bytes.size() - data_start);
  }
  v.data = bytes.subspan(data_start, need);
  return v;
}

std::vector<uint8_t> MakeNpy(char kind, int item_size, std::span<const int64_t> shape,
                             std::span<const uint8_t> data) {
  std::string header = fmt::format("{{'descr': '{}{}{}', 'fortran_order': False, 'shape': (",
                                   item_size == 1 ? '|' : '<', kind, item_size);
  for (size_t i = 0; i < shape.size(); ++i) header += fmt::format("{},", shape[i]);
  if (shape.size() > 1) header.pop_back();
  header += "), }";
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::vector<uint8_t> out = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
  out.push_back(static_cast<uint8_t>(header.size() & 0xFF));
  out.push_back(static_cast<uint8_t>(header.size() >> 8));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

// ---- PickTable --------------------------------------------------------------------------------

class PickTableBuilder {
 public:
  // Takes ownership of `bytes`; the item array starts at `offset`, holds `tokens` rows of
  // `payload_layers * top_k` items of `item_size` bytes. Validates every MoE-layer pick while
  // counting them.
  static Result<PickTable> Build(std::vector<uint8_t> bytes, size_t offset, int item_size,
                                 bool is_signed, int64_t tokens, int payload_layers,
                                 const ModelGeometry& g);

 private:
  template <class T>
  static Status Scan(PickTable& t);
  template <class T, int kTopK>
  static Status ScanK(PickTable& t);
};

// Dispatches to a loop with the top-k known at compile time (fully unrolled inner loop) for the
// presets' top-k values; 0 = generic. This took uint8 payloads from 0.85 to 0.99 GiB/s.
template <class T>
Status PickTableBuilder::Scan(PickTable& t) {
  switch (t.top_k_) {
    case 2:
      return ScanK<T, 2>(t);
    case 4:
      return ScanK<T, 4>(t);
    case 8:
      return ScanK<T, 8>(t);
    default:
      return ScanK<T, 0>(t);
  }
}

template <class T, int kTopK>
Status PickTableBuilder::ScanK(PickTable& t) {
  const T* base = reinterpret_cast<const T*>(t.bytes_.data() + t.data_offset_);
  const int L = t.layers_, K = kTopK > 0 ? kTopK : t.top_k_, E = t.experts_;
  uint32_t* counts = t.counts_.mutable_data().data();
  // Duplicate detection with a per-(token, layer) bitmask kept in registers when E <= 256, which
  // covers every preset; a stamp table otherwise.
  const bool small = E <= 256;
  std::vector<int64_t> stamp(small ? 0 : static_cast<size_t>(L) * E, -1);
  for (int64_t tok = 0; tok < t.tokens_; ++tok) {
    const T* row = base + tok * t.row_stride_ + t.layer_offset_;
    for (int l = 0; l < L; ++l) {
      const T* p = row + static_cast<int64_t>(l) * K;
      uint32_t* cl = counts + static_cast<size_t>(l) * E;
      uint64_t m[4] = {0, 0, 0, 0};
      for (int j = 0; j < K; ++j) {
        const auto raw = p[j];
        // Signed negative ids become huge when converted, so one unsigned compare checks both.
        const uint64_t id = static_cast<uint64_t>(static_cast<int64_t>(raw));
        if (id >= static_cast<uint64_t>(E)) {
          return OutOfRange("expert id {} at token {}, layer {}, slot {} is outside [0, {})",
                            static_cast<int64_t>(raw), tok, l, j, E)
              .error();
        }
        if (small) {
          const uint64_t bit = uint64_t{1} << (id & 63);
          if (m[id >> 6] & bit) {
            return InvalidArgument("expert id {} repeated in the top-{} of token {}, layer {}", id,
                                   K, tok, l)
                .error();
          }
          m[id >> 6] |= bit;
        } else {
          int64_t& s = stamp[static_cast<size_t>(l) * E + id];
          if (s == tok) {
            return InvalidArgument("expert id {} repeated in the top-{} of token {}, layer {}", id,
                                   K, tok, l)
                .error();
          }
          s = tok;
        }
        ++cl[id];
      }
    }
  }
  return Status::Ok();
}

Result<PickTable> PickTableBuilder::Build(std::vector<uint8_t> bytes, size_t offset, int item_size,
                                          bool is_signed, int64_t tokens, int payload_layers,
                                          const ModelGeometry& g) {
  PickTable t;
  // The scans read items through a typed pointer: the item array must be aligned to its item size
  // (a .npy header of odd length leaves it unaligned; found by fuzz/npy_fuzz.cc). Malloc'd
  // storage is aligned, so dropping the header bytes aligns it; well-formed .npy files (64-byte
  // headers) never pay for the move.
  if (offset % static_cast<size_t>(item_size) != 0) {
    bytes.erase(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(offset));
    offset = 0;
  }
  if (payload_layers == g.moe_layers) {
    t.layer_offset_ = 0;
  } else if (payload_layers == g.total_layers && g.total_layers > g.moe_layers &&
             g.MoeLayersContiguous()) {
    t.layer_offset_ = static_cast<int64_t>(g.first_moe_layer) * g.top_k;  // leading dense only
  } else if (payload_layers == g.total_layers && g.total_layers > g.moe_layers) {
    // Dense layers interleaved with MoE ones: move each token's MoE-layer rows, in order, to the
    // front of the item array so that the table reads as an MoE-layers-only payload. Every row
    // moves to a lower or equal offset and rows are visited in ascending order, so no row is
    // overwritten before it is read.
    const size_t row = static_cast<size_t>(g.top_k) * item_size;
    uint8_t* items = bytes.data() + offset;
    for (int64_t tok = 0; tok < tokens; ++tok) {
      for (int l = 0; l < g.moe_layers; ++l) {
        const size_t from = (static_cast<size_t>(tok) * payload_layers + g.MoeLayerId(l)) * row;
        const size_t to = (static_cast<size_t>(tok) * g.moe_layers + l) * row;
        if (from != to) std::memmove(items + to, items + from, row);
      }
    }
    payload_layers = g.moe_layers;
    t.layer_offset_ = 0;
  } else {
    return InvalidArgument(
        "payload has {} layers but {} has {} MoE layers ({} layers in all): wrong model or "
        "signature for another geometry?",
        payload_layers, g.display_name, g.moe_layers, g.total_layers);
  }
  t.tokens_ = tokens;
  t.layers_ = g.moe_layers;
  t.top_k_ = g.top_k;
  t.experts_ = g.experts;
  t.item_size_ = item_size;
  t.row_stride_ = static_cast<int64_t>(payload_layers) * g.top_k;
  t.bytes_ = std::move(bytes);
  t.data_offset_ = offset;
  t.counts_ = ExpertCounts(g.moe_layers, g.experts);
  Status s;
  switch (item_size) {
    case 1:
      s = is_signed ? Scan<int8_t>(t) : Scan<uint8_t>(t);
      break;
    case 2:
      s = is_signed ? Scan<int16_t>(t) : Scan<uint16_t>(t);
      break;
    case 4:
      s = is_signed ? Scan<int32_t>(t) : Scan<uint32_t>(t);
      break;
    case 8:
      s = is_signed ? Scan<int64_t>(t) : Scan<uint64_t>(t);
      break;
    default:
      return InvalidArgument("unsupported item size {}", item_size);
  }
  if (!s.ok()) return tl::unexpected<Status>(std::move(s));
  // Pick() reads through a signed view; record signedness in the size sign.
  if (is_signed) t.item_size_ = -item_size;
  return t;
}

ExpertCounts PickTable::Counts() const { return counts_; }

int32_t PickTable::Pick(int64_t t, int l, int j) const {
  const int64_t idx = t * row_stride_ + layer_offset_ + static_cast<int64_t>(l) * top_k_ + j;
  const uint8_t* p = bytes_.data() + data_offset_;
  switch (item_size_) {
    case 1:
      return p[idx];
    case -1:
      return static_cast<int8_t>(p[idx]);
    case 2:
      return LoadLE<uint16_t>(p + idx * 2);
    case -2:
      return LoadLE<int16_t>(p + idx * 2);
    case 4:
      return static_cast<int32_t>(LoadLE<uint32_t>(p + idx * 4));
    case -4:
      return LoadLE<int32_t>(p + idx * 4);
    case 8:
      return static_cast<int32_t>(LoadLE<uint64_t>(p + idx * 8));
    default:
      return static_cast<int32_t>(LoadLE<int64_t>(p + idx * 8));
  }
}

Status PickTable::AccumulateRows(int64_t begin, int64_t end, ExpertCounts* counts) const {
  if (begin < 0 || end < begin || end > tokens_) {
    return OutOfRange("rows [{}, {}) outside a table of {} tokens", begin, end, tokens_).error();
  }
  if (counts->layers() != layers_ || counts->experts() != experts_) {
    return InvalidArgument("count table is {}x{}, picks are {}x{}", counts->layers(),
                           counts->experts(), layers_, experts_)
        .error();
  }
  uint32_t* c = counts->mutable_data().data();
  // One typed loop per item width; ids were validated when the table was built.
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T* base = reinterpret_cast<const T*>(bytes_.data() + data_offset_);
    for (int64_t t = begin; t < end; ++t) {
      const T* p = base + t * row_stride_ + layer_offset_;
      for (int l = 0; l < layers_; ++l, p += top_k_) {
        uint32_t* cl = c + static_cast<size_t>(l) * experts_;
        for (int j = 0; j < top_k_; ++j) ++cl[static_cast<size_t>(p[j])];
      }
    }
  };
  switch (item_size_) {
    case 1:
      run(uint8_t{});
      break;
    case -1:
      run(int8_t{});
      break;
    case 2:
      run(uint16_t{});
      break;
    case -2:
      run(int16_t{});
      break;
    case 4:
      run(uint32_t{});
      break;
    case -4:
      run(int32_t{});
      break;
    case 8:
      run(uint64_t{});
      break;
    default:
      run(int64_t{});
      break;
  }
  return Status::Ok();
}

// ---- wire formats -----------------------------------------------------------------------------

namespace {

Status CheckSize(std::string_view b64, const PayloadOptions& o) {
  if (b64.size() / 4 * 3 > o.max_decoded_bytes) {
    return ResourceExhausted("payload of {} base64 bytes exceeds the {} byte limit", b64.size(),
                             o.max_decoded_bytes)
        .error();
  }
  return Status::Ok();
}

}  // namespace

Result<PickTable> DecodeVllmRoutedExperts(std::string_view b64, const ModelGeometry& g,
                                          const PayloadOptions& opts) {
  if (Status s = CheckSize(b64, opts); !s.ok()) return tl::unexpected<Status>(s);
  std::vector<uint8_t> bytes;
  if (Status s = Base64Decode(b64, &bytes); !s.ok()) {
    return tl::unexpected<Status>(s.WithContext("vLLM routed_experts"));
  }
  auto npy = ParseNpy(bytes);
  if (!npy) return tl::unexpected<Status>(npy.error().WithContext("vLLM routed_experts"));
  if (npy->shape.size() != 3) {
    return InvalidArgument(
        "vLLM routed_experts: expected shape [tokens, layers, top_k], got {} "
        "dimensions",
        npy->shape.size());
  }
  if (npy->shape[2] != g.top_k) {
    return InvalidArgument("vLLM routed_experts: top_k is {} but {} uses top-{}", npy->shape[2],
                           g.display_name, g.top_k);
  }
  const size_t offset = static_cast<size_t>(npy->data.data() - bytes.data());
  auto r = PickTableBuilder::Build(std::move(bytes), offset, npy->item_size, npy->kind == 'i',
                                   npy->shape[0], static_cast<int>(npy->shape[1]), g);
  if (!r) return tl::unexpected<Status>(r.error().WithContext("vLLM routed_experts"));
  return r;
}

Result<PickTable> DecodeSglangRoutedExperts(std::string_view b64, const ModelGeometry& g,
                                            const PayloadOptions& opts) {
  if (Status s = CheckSize(b64, opts); !s.ok()) return tl::unexpected<Status>(s);
  std::vector<uint8_t> bytes;
  if (Status s = Base64Decode(b64, &bytes); !s.ok()) {
    return tl::unexpected<Status>(s.WithContext("SGLang routed_experts"));
  }
  const int layers = opts.payload_layers > 0 ? opts.payload_layers : g.moe_layers;
  const size_t row_bytes = static_cast<size_t>(layers) * g.top_k * 4;
  if (bytes.size() % row_bytes != 0) {
    return InvalidArgument(
        "SGLang routed_experts: {} bytes is not a whole number of int32 rows of {} layers x "
        "top-{} ({} bytes each)",
        bytes.size(), layers, g.top_k, row_bytes);
  }
  const int64_t rows = static_cast<int64_t>(bytes.size() / row_bytes);
  if (opts.skip_rows < 0 || opts.skip_rows > rows) {
    return InvalidArgument("SGLang routed_experts: {} rows, fewer than the {} to skip", rows,
                           opts.skip_rows);
  }
  auto r =
      PickTableBuilder::Build(std::move(bytes), static_cast<size_t>(opts.skip_rows) * row_bytes, 4,
                              true, rows - opts.skip_rows, layers, g);
  if (!r) return tl::unexpected<Status>(r.error().WithContext("SGLang routed_experts"));
  return r;
}

namespace {

// A table over a copy of in-memory int32 picks: `tokens` rows of `layers` x top_k.
Result<PickTable> FromInt32(std::span<const int32_t> picks, int64_t tokens, int layers,
                            const ModelGeometry& g) {
  std::vector<uint8_t> bytes(picks.size() * 4);
  if (!bytes.empty()) std::memcpy(bytes.data(), picks.data(), bytes.size());
  return PickTableBuilder::Build(std::move(bytes), 0, 4, true, tokens, layers, g);
}

}  // namespace

Result<PickTable> MakePickTable(std::span<const int32_t> picks, const ModelGeometry& g) {
  const size_t row = static_cast<size_t>(g.moe_layers) * g.top_k;
  if (row == 0 || picks.size() % row != 0) {
    return InvalidArgument("{} picks is not a whole number of tokens of {} layers x top-{}",
                           picks.size(), g.moe_layers, g.top_k);
  }
  return FromInt32(picks, static_cast<int64_t>(picks.size() / row), g.moe_layers, g);
}

namespace {

// A minimal scanner for nested integer lists [tokens][layers][top_k]. Values go straight into a
// flat int32 buffer while every row's shape is checked against the first one's.
class ListScanner {
 public:
  // With `allow_unknown`, -1 is accepted as a value (a position the engine has no routes for).
  ListScanner(std::string_view s, bool allow_unknown) : s_(s), allow_unknown_(allow_unknown) {}

  Status Parse(std::vector<int32_t>* out, int64_t* tokens, int* layers, int* k) {
    int64_t dims[3] = {0, -1, -1};
    Status s = List(0, dims, out);
    if (!s.ok()) return s;
    SkipWs();
    if (i_ != s_.size()) return Error("trailing characters");
    *tokens = dims[0];
    *layers = static_cast<int>(std::max<int64_t>(dims[1], 0));
    *k = static_cast<int>(std::max<int64_t>(dims[2], 0));
    return Status::Ok();
  }

 private:
  // Parses one list at nesting `depth` (0 = tokens, 1 = layers, 2 = picks).
  Status List(int depth, int64_t* dims, std::vector<int32_t>* out) {
    SkipWs();
    if (Peek() != '[') return Error("expected '['");
    ++i_;
    int64_t n = 0;
    SkipWs();
    if (Peek() == ']') {
      ++i_;
    } else {
      for (;;) {
        Status s = depth == 2 ? Value(out) : List(depth + 1, dims, out);
        if (!s.ok()) return s;
        ++n;
        SkipWs();
        if (Peek() == ',') {
          ++i_;
          continue;
        }
        if (Peek() == ']') {
          ++i_;
          break;
        }
        return Error("expected ',' or ']'");
      }
    }
    if (depth == 0) {
      dims[0] = n;
    } else if (dims[depth] < 0) {
      dims[depth] = n;
    } else if (dims[depth] != n) {
      return Error(depth == 1 ? "ragged layer lists" : "ragged top-k lists");
    }
    return Status::Ok();
  }

  Status Value(std::vector<int32_t>* out) {
    SkipWs();
    int64_t v = 0;
    auto [p, ec] = std::from_chars(s_.data() + i_, s_.data() + s_.size(), v);
    if (ec != std::errc()) return Error("expected an integer expert id");
    i_ = p - s_.data();
    if (Peek() == '.' || Peek() == 'e' || Peek() == 'E')
      return Error("expert ids must be integers");
    if ((v < 0 && !(allow_unknown_ && v == -1)) || v > INT32_MAX) {
      // OUT_OF_RANGE, as an id past the model's experts is refused later.
      return OutOfRange("pick list: expert id {} out of range at offset {}", v, i_).error();
    }
    out->push_back(static_cast<int32_t>(v));
    return Status::Ok();
  }

  void SkipWs() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\t' || s_[i_] == '\r'))
      ++i_;
  }
  char Peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  Status Error(std::string_view what) const {
    return InvalidArgument("pick list: {} at offset {}", what, i_).error();
  }

  std::string_view s_;
  size_t i_ = 0;
  bool allow_unknown_ = false;
};

}  // namespace

namespace {

// Nested lists scanned into flat int32 picks, their token count and layer count, with the size
// limit and the model's top-k checked.
struct ScannedList {
  std::vector<int32_t> flat;
  int64_t tokens = 0;
  int layers = 0;
};

Result<ScannedList> ScanPickList(std::string_view json, const ModelGeometry& g,
                                 const PayloadOptions& opts, bool allow_unknown) {
  if (json.size() > opts.max_decoded_bytes) {
    return ResourceExhausted("pick list of {} bytes exceeds the {} byte limit", json.size(),
                             opts.max_decoded_bytes);
  }
  ScannedList out;
  int k = 0;
  ListScanner sc(json, allow_unknown);
  ELDR_RETURN_IF_ERROR(sc.Parse(&out.flat, &out.tokens, &out.layers, &k));
  if (out.tokens > 0 && k != g.top_k) {
    return InvalidArgument("pick list: top_k is {} but {} uses top-{}", k, g.display_name, g.top_k);
  }
  if (out.tokens == 0) out.layers = g.moe_layers;
  return out;
}

}  // namespace

Result<PickTable> ParsePickListJson(std::string_view json, const ModelGeometry& g,
                                    const PayloadOptions& opts) {
  ELDR_ASSIGN_OR_RETURN(ScannedList l, ScanPickList(json, g, opts, /*allow_unknown=*/false));
  return FromInt32(l.flat, l.tokens, l.layers, g);
}

Result<PromptPickList> ParsePromptPickListJson(std::string_view json, const ModelGeometry& g,
                                               const PayloadOptions& opts) {
  ELDR_ASSIGN_OR_RETURN(ScannedList l, ScanPickList(json, g, opts, /*allow_unknown=*/true));
  std::vector<int32_t>& flat = l.flat;
  const int64_t tokens = l.tokens;
  const int layers = l.layers;
  const int k = g.top_k;
  PromptPickList out;
  out.rows = tokens;
  // Keep the known rows in order; a row is unknown only when all its entries are -1. Dense
  // layers may hold anything (they are skipped), so only MoE-layer entries decide; in a payload
  // over all hidden layers they sit where the geometry's layer map says.
  const size_t row = static_cast<size_t>(layers) * k;
  const bool all_layers = layers != g.moe_layers;
  const size_t moe = static_cast<size_t>(g.moe_layers) * k;
  size_t kept = 0;
  bool seen_known = false;
  for (int64_t t = 0; t < tokens; ++t) {
    const int32_t* r = flat.data() + static_cast<size_t>(t) * row;
    size_t neg = 0;
    for (int l = 0; l < g.moe_layers; ++l) {
      const size_t at = static_cast<size_t>(all_layers ? g.MoeLayerId(l) : l) * k;
      for (size_t i = at; i < at + k && i < row; ++i) neg += r[i] == -1;
    }
    if (neg == moe) {
      (seen_known ? out.other_unknown : out.leading_unknown) += 1;
      continue;
    }
    if (neg > 0) {
      return InvalidArgument("pick list: token {} mixes -1 (unknown) with expert ids", t);
    }
    seen_known = true;
    if (kept != static_cast<size_t>(t)) {
      std::memmove(flat.data() + kept * row, r, row * sizeof(int32_t));
    }
    ++kept;
  }
  ELDR_ASSIGN_OR_RETURN(out.picks, FromInt32(std::span(flat).first(kept * row),
                                             static_cast<int64_t>(kept), layers, g));
  return out;
}

Result<ExpertCounts> DecodeEldrSig(std::string_view b64, const ModelGeometry& g) {
  std::vector<uint8_t> bytes;
  if (Status s = Base64Decode(b64, &bytes); !s.ok()) {
    return tl::unexpected<Status>(s.WithContext("eldr_sig"));
  }
  std::span<const uint8_t> data = bytes;
  int item = 2;
  bool is_signed = true;
  if (bytes.size() >= 6 && bytes[0] == 0x93 && bytes[1] == 'N') {
    auto npy = ParseNpy(bytes);
    if (!npy) return tl::unexpected<Status>(npy.error().WithContext("eldr_sig"));
    if (npy->shape.size() != 2 ||
        (npy->shape[0] != g.moe_layers && npy->shape[0] != g.total_layers) ||
        npy->shape[1] != g.experts) {
      return InvalidArgument("eldr_sig: .npy shape is not [{}, {}] for {}", g.moe_layers, g.experts,
                             g.display_name);
    }
    data = npy->data;
    item = npy->item_size;
    is_signed = npy->kind == 'i';
  }
  const size_t n = static_cast<size_t>(g.moe_layers) * g.experts;
  // Counts for every hidden layer (dense ones zero) are accepted too: the dense rows are skipped,
  // the MoE layers' rows taken where the geometry's layer map says.
  const size_t all = static_cast<size_t>(g.total_layers) * g.experts;
  std::vector<uint8_t> moe_rows;
  if (g.total_layers > g.moe_layers && data.size() == all * item) {
    const size_t row = static_cast<size_t>(g.experts) * item;
    if (g.MoeLayersContiguous()) {
      data = data.subspan(static_cast<size_t>(g.first_moe_layer) * row, n * item);
    } else {
      moe_rows.resize(n * item);
      for (int l = 0; l < g.moe_layers; ++l) {
        std::memcpy(moe_rows.data() + l * row, data.data() + g.MoeLayerId(l) * row, row);
      }
      data = moe_rows;
    }
  }
  if (data.size() != n * item) {
    return InvalidArgument(
        "eldr_sig: {} bytes, but {} needs int16 [{}, {}] = {} bytes (signature for another "
        "model?)",
        data.size(), g.display_name, g.moe_layers, g.experts, n * 2);
  }
  ExpertCounts c(g.moe_layers, g.experts);
  auto out = c.mutable_data();
  for (size_t i = 0; i < n; ++i) {
    int64_t v;
    const uint8_t* p = data.data() + i * item;
    switch (item) {
      case 1:
        v = is_signed ? int64_t{static_cast<int8_t>(*p)} : int64_t{*p};
        break;
      case 2:
        v = is_signed ? int64_t{LoadLE<int16_t>(p)} : int64_t{LoadLE<uint16_t>(p)};
        break;
      case 4:
        v = is_signed ? int64_t{LoadLE<int32_t>(p)} : int64_t{LoadLE<uint32_t>(p)};
        break;
      default:
        v = LoadLE<int64_t>(p);
        break;
    }
    if (v < 0 || v > UINT32_MAX) {
      return OutOfRange("eldr_sig: count {} at layer {}, expert {} is negative or too large", v,
                        i / g.experts, i % g.experts);
    }
    out[i] = static_cast<uint32_t>(v);
  }
  return c;
}

}  // namespace eldr
