// -----------------------------------------------------------------------------
// File: signature_space.h
// -----------------------------------------------------------------------------
// SignatureSpace: the fitted, immutable state of ELDR for one model and one decoder pool — the
// layer mask S, the IDF weights of the masked layers, and K unit centroids, centroid k bound to
// decoder k (the ELDR paper, arXiv 2607.00466). It embeds a request's expert counts into a unit
// signature
//   s = normalize_L2( [ T(c(l, .)) (*) idf(l, .) ]  for l in S )
// and scores it against every centroid (cosine = dot product of unit vectors).
//
// Build-then-freeze: a SignatureSpaceSpec is the mutable builder; Build() validates it and
// yields a shared immutable SignatureSpace. Hot reload swaps the shared_ptr; requests holding the
// old one are unaffected.
//
// File format: versioned JSON keeping the ELDR artifact's field names (model, algo, k, L, e,
// n_fit, variant, layer_select, layer_mask, fit_peak_rho, seed, sig_dtype, centroids, sig_idf)
// plus "format": "eldr.signature_space", "version" and the provenance field "training_sha256";
// see docs/formats.md. Files without "format" (written by the artifact) are accepted when their
// fields are valid.
//
// The loader (FromJson) fails closed: a file that asks for a transform eldr does not implement
// is refused with InvalidArgument naming the field, rather than scored with a different one:
//   - `sig_mean` (or `_mean`) other than null: mean-centring of signatures;
//   - `sig_per_layer_norm` (or `_per_layer_norm`) other than false/null: per-layer normalisation;
//   - any other `sig_*` field eldr does not know (such fields describe the signature transform);
//   - `sig_dtype` other than "<i2": the signature is built from integer expert counts (the
//     engine hooks' little-endian int16); "<f4" belongs to gate-probability signatures;
//   - `variant` other than count_idf, count, binary (e.g. the artifact's `gate_prob_all`);
//     an absent variant means "count", the artifact's default;
//   - a non-empty `sig_idf` with count or binary (ambiguous: count_idf was probably meant), an
//     all-zero `sig_idf` with count_idf (no request would ever have a signature);
//   - centroid rows whose L2 norm is not 1 within 1e-3 (they are not renormalised silently);
//   - `m` (micro-centroids per file) other than the centroid count: eldr binds centroid j to
//     decoder j and has no micro-to-decoder map;
//   - `centroids` and `micro_centroids` both present and different;
//   - `layer_select: "all"` with a `layer_mask` that is not every layer;
//   - `training_sha256` that is not 64 lowercase hex digits.
// Accepted: a missing `layer_mask` means every layer for count and binary, or with
// `layer_select: "all"` (count_idf otherwise needs an explicit mask, as in the artifact);
// `micro_centroids` is read as `centroids`. Other fields (calibration_format,
// transform_sha256, ...) are provenance that changes nothing and are ignored.
// ToJson writes what the loader reads back: `layer_select` is "all" when the mask is every
// layer, else "forward_greedy"; `sig_idf` only for count_idf; `training_sha256` when known.
// Build() from a spec in memory still renormalises centroids; only the file loader refuses them.
//
// Thread-safety: SignatureSpace is immutable; every const method is safe from any thread.
//
// Example:
//   ELDR_ASSIGN_OR_RETURN(auto space, SignatureSpace::FromJson(text, &geometry));
//   std::vector<float> scores(space->k());
//   ELDR_RETURN_IF_ERROR(ToResult(space->Score(counts, scores)));
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "eldr/expert_counts.h"
#include "eldr/geometry.h"
#include "eldr/status.h"

namespace eldr {

// How counts become signature coordinates before IDF weighting and normalisation.
enum class SignatureTransform {
  kCountIdf,  // c * idf (ELDR's default, "count_idf")
  kCount,     // c ("count")
  kBinary,    // 1 if c > 0 ("binary")
};
std::string_view TransformName(SignatureTransform t);
// Exactly "count_idf", "count" or "binary"; InvalidArgument otherwise.
Result<SignatureTransform> ParseTransform(std::string_view name);

inline constexpr int kSignatureSpaceVersion = 1;
inline constexpr std::string_view kSignatureSpaceFormat = "eldr.signature_space";

struct SignatureSpaceSpec {
  std::string model;            // model id (a preset name or an HF id)
  int layers = 0;               // L of the model
  int experts = 0;              // E of the model
  std::vector<int> layer_mask;  // sorted, unique, in [0, L)
  SignatureTransform transform = SignatureTransform::kCountIdf;
  std::vector<float> idf;  // |mask|*E weights (kCountIdf); empty for other transforms
  std::vector<std::vector<float>> centroids;  // K rows of |mask|*E (renormalised by Build)
  std::string algo = "kmbal";                 // "kmbal" (balanced) or "km" (plain)
  int n_fit = 0;
  uint64_t seed = 1;
  double fit_peak_rho = std::numeric_limits<double>::quiet_NaN();
  // Provenance: SHA-256 (64 lowercase hex digits) of the calibration input's bytes; empty when
  // unknown. Written as "training_sha256"; changes nothing about scoring.
  std::string training_sha256;
};

class SignatureSpace {
 public:
  // Validates (shapes, ranges, finite non-negative weights, non-zero centroids, a well-formed
  // training_sha256) and freezes; centroids are renormalised to unit length.
  static Result<std::shared_ptr<const SignatureSpace>> Build(SignatureSpaceSpec spec);
  // Parses a signature-space file, refusing what eldr does not implement (see "fails closed"
  // above). With `expect`, also rejects a file for another geometry (FailedPrecondition).
  static Result<std::shared_ptr<const SignatureSpace>> FromJson(
      std::string_view json, const ModelGeometry* expect = nullptr);
  std::string ToJson() const;

  const SignatureSpaceSpec& spec() const { return spec_; }
  int k() const { return static_cast<int>(spec_.centroids.size()); }
  int dims() const { return dims_; }

  // FailedPrecondition unless the model id and L, E agree with `g`.
  Status CheckGeometry(const ModelGeometry& g) const;

  // Writes the unit signature of `counts` into `out` (size dims()). FailedPrecondition when the
  // counts have no pick on the masked layers ("no signature"); InvalidArgument on a shape
  // mismatch.
  Status Embed(const ExpertCounts& counts, std::span<float> out) const;
  // Cosine of the signature of `counts` with every centroid, into `scores` (size k()), without
  // materialising the signature. Same errors as Embed. Cost: O(dims * K); no allocation after a
  // thread's first call.
  Status Score(const ExpertCounts& counts, std::span<float> scores) const;
  // Cosines of an already-embedded unit signature (size dims()) with every centroid.
  void ScoreSignature(std::span<const float> signature, std::span<float> scores) const;

 private:
  explicit SignatureSpace(SignatureSpaceSpec spec);
  SignatureSpaceSpec spec_;
  int dims_ = 0;
  std::vector<float> weight_;  // per dim: idf (kCountIdf) or 1
  std::vector<float> cm_;      // centroids, contiguous [k][dims]
};

}  // namespace eldr
