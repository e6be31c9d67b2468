#include "eldr/signature_space.h"

#include <algorithm>
#include <boost/json.hpp>
#include <cmath>
#include <numeric>

#include "eldr/sha256.h"
#include "simd.h"

namespace eldr {

namespace json = boost::json;

std::string_view TransformName(SignatureTransform t) {
  switch (t) {
    case SignatureTransform::kCountIdf:
      return "count_idf";
    case SignatureTransform::kCount:
      return "count";
    case SignatureTransform::kBinary:
      return "binary";
  }
  return "count_idf";
}

Result<SignatureTransform> ParseTransform(std::string_view name) {
  if (name == "count_idf") return SignatureTransform::kCountIdf;
  if (name == "count") return SignatureTransform::kCount;
  if (name == "binary") return SignatureTransform::kBinary;
  return InvalidArgument("unknown signature transform '{}' (count_idf, count, binary)", name);
}

SignatureSpace::SignatureSpace(SignatureSpaceSpec spec) : spec_(std::move(spec)) {}

Result<std::shared_ptr<const SignatureSpace>> SignatureSpace::Build(SignatureSpaceSpec spec) {
  if (spec.layers <= 0 || spec.experts <= 0) {
    return InvalidArgument("signature space: L and e must be positive (got {}, {})", spec.layers,
                           spec.experts);
  }
  if (spec.layer_mask.empty()) return InvalidArgument("signature space: empty layer_mask");
  for (size_t i = 0; i < spec.layer_mask.size(); ++i) {
    const int l = spec.layer_mask[i];
    if (l < 0 || l >= spec.layers) {
      return OutOfRange("signature space: layer_mask entry {} outside [0, {})", l, spec.layers);
    }
    if (i > 0 && l <= spec.layer_mask[i - 1]) {
      return InvalidArgument("signature space: layer_mask must be sorted and unique");
    }
  }
  const size_t dims = spec.layer_mask.size() * spec.experts;
  if (spec.transform == SignatureTransform::kCountIdf) {
    if (spec.idf.size() != dims) {
      return InvalidArgument("signature space: sig_idf has {} weights, |mask|*e = {}",
                             spec.idf.size(), dims);
    }
    for (float w : spec.idf) {
      if (!std::isfinite(w) || w < 0) {
        return InvalidArgument("signature space: sig_idf weights must be finite and >= 0");
      }
    }
  } else if (!spec.idf.empty() && spec.idf.size() != dims) {
    return InvalidArgument("signature space: sig_idf has {} weights, |mask|*e = {}",
                           spec.idf.size(), dims);
  }
  if (!spec.training_sha256.empty() && !IsSha256Hex(spec.training_sha256)) {
    return InvalidArgument(
        "signature space: training_sha256 must be 64 lowercase hex digits (the SHA-256 of the "
        "calibration input), got '{}'",
        spec.training_sha256);
  }
  if (spec.centroids.empty()) return InvalidArgument("signature space: no centroids (k = 0)");
  for (size_t k = 0; k < spec.centroids.size(); ++k) {
    auto& c = spec.centroids[k];
    if (c.size() != dims) {
      return InvalidArgument("signature space: centroid {} has {} dims, expected {}", k, c.size(),
                             dims);
    }
    double n2 = 0;
    for (float v : c) {
      if (!std::isfinite(v)) return InvalidArgument("signature space: centroid {} not finite", k);
      n2 += double{v} * v;
    }
    if (n2 <= 0) return InvalidArgument("signature space: centroid {} is all zero", k);
    const float inv = static_cast<float>(1.0 / std::sqrt(n2));
    for (float& v : c) v *= inv;
  }
  std::shared_ptr<SignatureSpace> s(new SignatureSpace(std::move(spec)));
  s->dims_ = static_cast<int>(dims);
  const int k = s->k();
  s->weight_.assign(dims, 1.0f);
  if (s->spec_.transform == SignatureTransform::kCountIdf) s->weight_ = s->spec_.idf;
  s->cm_.reserve(dims * k);
  for (const auto& c : s->spec_.centroids) s->cm_.insert(s->cm_.end(), c.begin(), c.end());
  return std::shared_ptr<const SignatureSpace>(std::move(s));
}

Status SignatureSpace::CheckGeometry(const ModelGeometry& g) const {
  if (spec_.layers != g.moe_layers || spec_.experts != g.experts) {
    return FailedPrecondition(
               "signature space is for a model with L={} layers x e={} experts ('{}'), but the "
               "model is {} with {} x {}",
               spec_.layers, spec_.experts, spec_.model, g.display_name, g.moe_layers, g.experts)
        .error();
  }
  auto m = FindModel(spec_.model);
  if (m && m->name != g.name) {
    return FailedPrecondition("signature space was fitted for {}, not {}", m->display_name,
                              g.display_name)
        .error();
  }
  return Status::Ok();
}

namespace {

float Transform(SignatureTransform t, uint32_t c) {
  if (t == SignatureTransform::kBinary) return c > 0 ? 1.0f : 0.0f;
  return static_cast<float>(c);
}

// Densifies the masked counts into x = T(c) * w and returns |x|^2. Straight-line loops so that
// the AVX2 clone vectorises them; zeros cost the same as non-zeros, which beats branching.
ELDR_INLINE_BODY double DensifyBody(const uint32_t* counts, const int* mask, int mask_len,
                                    int experts, SignatureTransform t, const float* weight,
                                    float* x) {
  float acc[16] = {0};
  for (int m = 0; m < mask_len; ++m) {
    const uint32_t* cl = counts + static_cast<size_t>(mask[m]) * experts;
    const float* w = weight + static_cast<size_t>(m) * experts;
    float* xm = x + static_cast<size_t>(m) * experts;
    if (t == SignatureTransform::kBinary) {
      for (int e = 0; e < experts; ++e) xm[e] = cl[e] > 0 ? w[e] : 0.0f;
    } else {
      for (int e = 0; e < experts; ++e) xm[e] = static_cast<float>(cl[e]) * w[e];
    }
  }
  const int d = mask_len * experts;
  int i = 0;
  for (; i + 16 <= d; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += x[i + j] * x[i + j];
  double n2 = 0;
  for (int j = 0; j < 16; ++j) n2 += acc[j];
  for (; i < d; ++i) n2 += double{x[i]} * x[i];
  return n2;
}
ELDR_TARGET_AVX512 double DensifyAvx512(const uint32_t* c, const int* m, int ml, int e,
                                        SignatureTransform t, const float* w, float* x) {
  return DensifyBody(c, m, ml, e, t, w, x);
}
ELDR_TARGET_AVX2 double DensifyAvx2(const uint32_t* c, const int* m, int ml, int e,
                                    SignatureTransform t, const float* w, float* x) {
  return DensifyBody(c, m, ml, e, t, w, x);
}
double DensifyBase(const uint32_t* c, const int* m, int ml, int e, SignatureTransform t,
                   const float* w, float* x) {
  return DensifyBody(c, m, ml, e, t, w, x);
}
double Densify(const uint32_t* c, const int* m, int ml, int e, SignatureTransform t, const float* w,
               float* x) {
#if ELDR_X86_DISPATCH
  switch (internal::CpuIsa()) {
    case internal::Isa::kAvx512:
      return DensifyAvx512(c, m, ml, e, t, w, x);
    case internal::Isa::kAvx2:
      return DensifyAvx2(c, m, ml, e, t, w, x);
    case internal::Isa::kBase:
      break;
  }
#endif
  return DensifyBase(c, m, ml, e, t, w, x);
}

}  // namespace

Status SignatureSpace::Score(const ExpertCounts& counts, std::span<float> scores) const {
  if (counts.layers() != spec_.layers || counts.experts() != spec_.experts) {
    return InvalidArgument("counts are {}x{}, signature space expects {}x{}", counts.layers(),
                           counts.experts(), spec_.layers, spec_.experts)
        .error();
  }
  if (scores.size() != static_cast<size_t>(k())) {
    return InvalidArgument("scores span has {} slots for k = {}", scores.size(), k()).error();
  }
  // One scratch buffer per thread: no allocation on the request path after the first call.
  thread_local std::vector<float> x;
  x.resize(dims_);
  const double norm2 = Densify(counts.data().data(), spec_.layer_mask.data(),
                               static_cast<int>(spec_.layer_mask.size()), spec_.experts,
                               spec_.transform, weight_.data(), x.data());
  if (!(norm2 > 0)) {
    return FailedPrecondition(
               "no signature: the request has no expert picks on the {} masked "
               "layers (or only experts with zero weight)",
               spec_.layer_mask.size())
        .error();
  }
  const float inv = static_cast<float>(1.0 / std::sqrt(norm2));
  for (int j = 0; j < k(); ++j) {
    scores[j] = internal::Dot(x.data(), cm_.data() + static_cast<size_t>(j) * dims_, dims_) * inv;
  }
  return Status::Ok();
}

Status SignatureSpace::Embed(const ExpertCounts& counts, std::span<float> out) const {
  if (counts.layers() != spec_.layers || counts.experts() != spec_.experts) {
    return InvalidArgument("counts are {}x{}, signature space expects {}x{}", counts.layers(),
                           counts.experts(), spec_.layers, spec_.experts)
        .error();
  }
  if (out.size() != static_cast<size_t>(dims_)) {
    return InvalidArgument("output span has {} slots for {} dims", out.size(), dims_).error();
  }
  double norm2 = 0;
  for (size_t m = 0; m < spec_.layer_mask.size(); ++m) {
    auto cl = counts.layer(spec_.layer_mask[m]);
    for (int e = 0; e < spec_.experts; ++e) {
      const size_t d = m * spec_.experts + e;
      out[d] = Transform(spec_.transform, cl[e]) * weight_[d];
      norm2 += double{out[d]} * out[d];
    }
  }
  if (!(norm2 > 0)) {
    return FailedPrecondition(
               "no signature: the request has no expert picks on the masked "
               "layers")
        .error();
  }
  const float inv = static_cast<float>(1.0 / std::sqrt(norm2));
  for (float& v : out) v *= inv;
  return Status::Ok();
}

void SignatureSpace::ScoreSignature(std::span<const float> sig, std::span<float> scores) const {
  for (int j = 0; j < k(); ++j) {
    double dot = 0;
    const auto& c = spec_.centroids[j];
    for (int d = 0; d < dims_; ++d) dot += double{sig[d]} * c[d];
    scores[j] = static_cast<float>(dot);
  }
}

// ---- JSON ------------------------------------------------------------------------------------

namespace {

bool IsEveryLayer(const std::vector<int>& mask, int layers) {
  if (mask.size() != static_cast<size_t>(layers)) return false;
  for (int l = 0; l < layers; ++l)
    if (mask[l] != l) return false;
  return true;
}

}  // namespace

std::string SignatureSpace::ToJson() const {
  json::object o;
  o["format"] = kSignatureSpaceFormat;
  o["version"] = kSignatureSpaceVersion;
  o["model"] = spec_.model;
  o["algo"] = spec_.algo;
  o["k"] = k();
  o["L"] = spec_.layers;
  o["e"] = spec_.experts;
  o["n_fit"] = spec_.n_fit;
  o["variant"] = TransformName(spec_.transform);
  o["layer_select"] = IsEveryLayer(spec_.layer_mask, spec_.layers) ? "all" : "forward_greedy";
  json::array mask;
  for (int l : spec_.layer_mask) mask.push_back(l);
  o["layer_mask"] = std::move(mask);
  if (std::isfinite(spec_.fit_peak_rho)) {
    o["fit_peak_rho"] = spec_.fit_peak_rho;
  } else {
    o["fit_peak_rho"] = nullptr;
  }
  o["seed"] = spec_.seed;
  o["sig_dtype"] = "<i2";
  json::array cs;
  for (const auto& c : spec_.centroids) {
    json::array row;
    row.reserve(c.size());
    for (float v : c) row.push_back(static_cast<double>(v));
    cs.push_back(std::move(row));
  }
  o["centroids"] = std::move(cs);
  // The artifact refuses sig_idf on the count variant; eldr writes it for count_idf only.
  if (spec_.transform == SignatureTransform::kCountIdf) {
    json::array idf;
    for (float v : spec_.idf) idf.push_back(static_cast<double>(v));
    o["sig_idf"] = std::move(idf);
  }
  if (!spec_.training_sha256.empty()) o["training_sha256"] = spec_.training_sha256;
  return json::serialize(o);
}

namespace {

Result<int64_t> GetInt(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (!v) return InvalidArgument("signature space: missing field '{}'", key);
  if (v->is_int64()) return v->get_int64();
  if (v->is_uint64() && v->get_uint64() <= INT64_MAX) return static_cast<int64_t>(v->get_uint64());
  if (v->is_double() && std::floor(v->get_double()) == v->get_double() &&
      std::fabs(v->get_double()) < 1e15) {
    return static_cast<int64_t>(v->get_double());
  }
  return InvalidArgument("signature space: field '{}' must be an integer", key);
}

Result<double> AsNumber(const json::value& v, std::string_view what) {
  if (v.is_double()) return v.get_double();
  if (v.is_int64()) return static_cast<double>(v.get_int64());
  if (v.is_uint64()) return static_cast<double>(v.get_uint64());
  return InvalidArgument("signature space: {} must be numbers", what);
}

Result<std::vector<float>> GetFloats(const json::value& v, std::string_view what) {
  if (!v.is_array()) return InvalidArgument("signature space: '{}' must be an array", what);
  std::vector<float> out;
  out.reserve(v.get_array().size());
  for (const auto& x : v.get_array()) {
    ELDR_ASSIGN_OR_RETURN(double d, AsNumber(x, what));
    if (std::fabs(d) > std::numeric_limits<float>::max()) {
      return InvalidArgument("signature space: '{}' holds {} which is not a finite float", what, d);
    }
    out.push_back(static_cast<float>(d));
  }
  return out;
}

Result<std::vector<std::vector<float>>> GetRows(const json::value& v, std::string_view what) {
  if (!v.is_array()) {
    return InvalidArgument("signature space: '{}' must be an array of rows", what);
  }
  std::vector<std::vector<float>> rows;
  rows.reserve(v.get_array().size());
  for (const auto& row : v.get_array()) {
    ELDR_ASSIGN_OR_RETURN(auto r, GetFloats(row, what));
    rows.push_back(std::move(r));
  }
  return rows;
}

// How far a centroid row read from a file may be from unit L2 norm.
constexpr double kUnitNormTolerance = 1e-3;

// Refuses the fields that ask for a signature transform eldr does not implement (see the list in
// signature_space.h). Scoring such a file with eldr's transform would route by a different
// geometry than the one the centroids were fitted in, silently.
Status RefuseUnimplemented(const json::object& o) {
  for (std::string_view key : {"sig_mean", "_mean"}) {
    if (const auto* v = o.if_contains(key); v && !v->is_null()) {
      return InvalidArgument(
                 "signature space: field '{}' (mean-centring of signatures) is not implemented "
                 "by eldr; refusing the file rather than scoring it without centring",
                 key)
          .error();
    }
  }
  for (std::string_view key : {"sig_per_layer_norm", "_per_layer_norm"}) {
    if (const auto* v = o.if_contains(key);
        v && !v->is_null() && !(v->is_bool() && !v->get_bool())) {
      return InvalidArgument(
                 "signature space: field '{}' (per-layer normalisation) is not implemented by "
                 "eldr; refusing the file rather than scoring it without that normalisation",
                 key)
          .error();
    }
  }
  for (const auto& kv : o) {
    const std::string_view key(kv.key().data(), kv.key().size());
    if (key.starts_with("sig_") && key != "sig_idf" && key != "sig_dtype" && key != "sig_mean" &&
        key != "sig_per_layer_norm") {
      return InvalidArgument(
                 "signature space: field '{}' is not understood by eldr; sig_* fields describe "
                 "the signature transform, so the file is refused",
                 key)
          .error();
    }
  }
  if (const auto* v = o.if_contains("sig_dtype")) {
    if (!v->is_string() || v->get_string() != "<i2") {
      return InvalidArgument(
                 "signature space: sig_dtype {} is not supported: eldr builds signatures from "
                 "integer expert counts, sig_dtype \"<i2\" (\"<f4\" is the artifact's "
                 "gate-probability signature)",
                 json::serialize(*v))
          .error();
    }
  }
  return Status::Ok();
}

}  // namespace

Result<std::shared_ptr<const SignatureSpace>> SignatureSpace::FromJson(
    std::string_view text, const ModelGeometry* expect) {
  boost::system::error_code ec;
  json::value root = json::parse(json::string_view(text.data(), text.size()), ec);
  if (ec) return InvalidArgument("signature space: not valid JSON ({})", ec.message());
  if (!root.is_object()) return InvalidArgument("signature space: top level must be an object");
  const json::object& o = root.get_object();
  if (const auto* f = o.if_contains("format")) {
    if (!f->is_string() || f->get_string() != kSignatureSpaceFormat) {
      return FailedPrecondition("signature space: format is not '{}'", kSignatureSpaceFormat);
    }
  }
  if (o.contains("version")) {
    ELDR_ASSIGN_OR_RETURN(int64_t version, GetInt(o, "version"));
    if (version < 1 || version > kSignatureSpaceVersion) {
      return FailedPrecondition(
          "signature space: file version {} is not supported by this eldr (reads 1..{})", version,
          kSignatureSpaceVersion);
    }
  }
  if (Status s = RefuseUnimplemented(o); !s.ok()) return tl::unexpected<Status>(s);
  SignatureSpaceSpec spec;
  if (const auto* m = o.if_contains("model"); m && m->is_string()) {
    spec.model = std::string(m->get_string());
  } else {
    return InvalidArgument("signature space: missing string field 'model'");
  }
  ELDR_ASSIGN_OR_RETURN(int64_t L, GetInt(o, "L"));
  ELDR_ASSIGN_OR_RETURN(int64_t e, GetInt(o, "e"));
  if (L <= 0 || L > 4096 || e <= 0 || e > 65535) {
    return InvalidArgument("signature space: L={} e={} out of range", L, e);
  }
  spec.layers = static_cast<int>(L);
  spec.experts = static_cast<int>(e);
  if (const auto* a = o.if_contains("algo"); a && a->is_string()) {
    spec.algo = std::string(a->get_string());
  }
  if (o.contains("n_fit")) {
    ELDR_ASSIGN_OR_RETURN(int64_t n, GetInt(o, "n_fit"));
    if (n < 0 || n > std::numeric_limits<int>::max()) {
      return InvalidArgument("signature space: n_fit = {} out of range", n);
    }
    spec.n_fit = static_cast<int>(n);
  }
  if (const auto* s = o.if_contains("seed")) {
    // Seeds are uint64 (ToJson writes them as such), so the full unsigned range is read back.
    if (s->is_uint64()) {
      spec.seed = s->get_uint64();
    } else {
      ELDR_ASSIGN_OR_RETURN(int64_t v, GetInt(o, "seed"));
      if (v < 0) return InvalidArgument("signature space: seed must be >= 0, got {}", v);
      spec.seed = static_cast<uint64_t>(v);
    }
  }
  if (const auto* r = o.if_contains("fit_peak_rho"); r && !r->is_null()) {
    ELDR_ASSIGN_OR_RETURN(spec.fit_peak_rho, AsNumber(*r, "fit_peak_rho"));
  }
  if (const auto* h = o.if_contains("training_sha256"); h && !h->is_null()) {
    if (!h->is_string() || !IsSha256Hex(std::string_view(h->get_string()))) {
      return InvalidArgument(
          "signature space: 'training_sha256' must be 64 lowercase hex digits (the SHA-256 of "
          "the calibration input)");
    }
    spec.training_sha256 = std::string(h->get_string());
  }
  // The artifact's default variant is "count".
  std::string variant = "count";
  if (const auto* v = o.if_contains("variant")) {
    if (!v->is_string())
      return InvalidArgument("signature space: field 'variant' must be a string");
    variant = std::string(v->get_string());
  }
  if (variant == "gate_prob_all") {
    return InvalidArgument(
        "signature space: variant 'gate_prob_all' (gate-probability signatures) is not "
        "implemented by eldr (count_idf, count, binary)");
  }
  if (auto t = ParseTransform(variant); t) {
    spec.transform = *t;
  } else {
    return InvalidArgument("signature space: field 'variant': {}", t.error().message());
  }
  std::string layer_select;
  if (const auto* v = o.if_contains("layer_select")) {
    if (!v->is_string()) {
      return InvalidArgument("signature space: field 'layer_select' must be a string");
    }
    layer_select = std::string(v->get_string());
  }
  const bool all_layers = layer_select == "all";
  if (const auto* mask = o.if_contains("layer_mask")) {
    if (!mask->is_array()) {
      return InvalidArgument("signature space: 'layer_mask' must be an array of layer indices");
    }
    for (const auto& x : mask->get_array()) {
      if (!x.is_int64()) return InvalidArgument("signature space: layer_mask must hold integers");
      if (x.get_int64() < 0 || x.get_int64() >= L) {
        return OutOfRange("signature space: layer_mask entry {} outside [0, {})", x.get_int64(), L);
      }
      spec.layer_mask.push_back(static_cast<int>(x.get_int64()));
    }
    if (all_layers && !IsEveryLayer(spec.layer_mask, spec.layers)) {
      return InvalidArgument(
          "signature space: layer_select is 'all' but layer_mask is not every layer 0..{}", L - 1);
    }
  } else if (spec.transform != SignatureTransform::kCountIdf || all_layers) {
    // The artifact's count files may leave the mask out: every layer.
    spec.layer_mask.resize(spec.layers);
    std::iota(spec.layer_mask.begin(), spec.layer_mask.end(), 0);
  } else {
    return InvalidArgument(
        "signature space: missing 'layer_mask' (a count_idf space needs one unless layer_select "
        "is 'all')");
  }
  if (const auto* idf = o.if_contains("sig_idf"); idf && !idf->is_null()) {
    ELDR_ASSIGN_OR_RETURN(spec.idf, GetFloats(*idf, "sig_idf"));
  }
  if (spec.transform == SignatureTransform::kCountIdf) {
    if (!o.contains("sig_idf")) {
      return InvalidArgument("signature space: variant 'count_idf' needs 'sig_idf'");
    }
    if (!spec.idf.empty() &&
        std::all_of(spec.idf.begin(), spec.idf.end(), [](float w) { return w == 0.0f; })) {
      return InvalidArgument(
          "signature space: sig_idf is all zero, so no request would have a signature");
    }
  } else if (!spec.idf.empty()) {
    // Ambiguous: count_idf was probably meant. (An empty array, which eldr wrote before, is
    // accepted.)
    return InvalidArgument(
        "signature space: variant '{}' takes no 'sig_idf' (IDF weights belong to count_idf); "
        "refusing a file that has both",
        variant);
  }
  const auto* cs = o.if_contains("centroids");
  const auto* micro = o.if_contains("micro_centroids");
  if (!cs && !micro) {
    return InvalidArgument("signature space: missing 'centroids' (or 'micro_centroids')");
  }
  ELDR_ASSIGN_OR_RETURN(spec.centroids,
                        GetRows(cs ? *cs : *micro, cs ? "centroids" : "micro_centroids"));
  if (cs && micro) {
    ELDR_ASSIGN_OR_RETURN(auto other, GetRows(*micro, "micro_centroids"));
    if (other != spec.centroids) {
      return InvalidArgument(
          "signature space: 'centroids' and 'micro_centroids' are both present and differ");
    }
  }
  const size_t dims = spec.layer_mask.size() * spec.experts;
  for (size_t k = 0; k < spec.centroids.size(); ++k) {
    const auto& c = spec.centroids[k];
    if (c.size() != dims) {
      return InvalidArgument("signature space: centroid {} has {} dims, expected {}", k, c.size(),
                             dims);
    }
    double n2 = 0;
    for (float v : c) n2 += double{v} * v;
    const double norm = std::sqrt(n2);
    if (!(std::fabs(norm - 1.0) <= kUnitNormTolerance)) {
      return InvalidArgument(
          "signature space: centroid {} has L2 norm {:.6g}, not 1 (tolerance {}); centroids read "
          "from a file are not renormalised",
          k, norm, kUnitNormTolerance);
    }
  }
  if (o.contains("k")) {
    ELDR_ASSIGN_OR_RETURN(int64_t k, GetInt(o, "k"));
    if (k != static_cast<int64_t>(spec.centroids.size())) {
      return InvalidArgument("signature space: k = {} but {} centroids are present", k,
                             spec.centroids.size());
    }
  }
  if (o.contains("m")) {
    ELDR_ASSIGN_OR_RETURN(int64_t m, GetInt(o, "m"));
    if (m != static_cast<int64_t>(spec.centroids.size())) {
      return InvalidArgument(
          "signature space: m = {} but {} centroids are present; mapping micro-centroids onto "
          "decoders is not implemented by eldr (centroid j is decoder j)",
          m, spec.centroids.size());
    }
  }
  ELDR_ASSIGN_OR_RETURN(auto space, Build(std::move(spec)));
  if (expect) {
    if (Status s = space->CheckGeometry(*expect); !s.ok()) return tl::unexpected<Status>(s);
  }
  return space;
}

}  // namespace eldr
