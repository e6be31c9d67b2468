// -----------------------------------------------------------------------------
// File: payload.h
// -----------------------------------------------------------------------------
// Decoders that turn an engine's routed-experts payload straight into expert counts, without an
// intermediate JSON tree (docs/formats.md §"Engine payloads"):
//
//   vLLM    choices[i].routed_experts      base64 of a NumPy .npy, uint8/uint16/int32,
//                                          shape [tokens, layers, top_k]
//   SGLang  sglext.routed_experts          base64 of flattened little-endian int32,
//                                          logical shape [tokens, num_hidden_layers, top_k]
//   ELDR    kv_transfer_params.eldr_sig    base64 of little-endian int16 [L, E] counts
//                                          (raw, or wrapped in a .npy)
//   vLLM 0.21 prompt_routed_experts        nested JSON lists [[[id, ...], ...], ...], -1 rows
//   older vLLM builds                      nested JSON lists [[[id, ...], ...], ...]
// Where each engine puts these in its responses: server/pd.h and docs/serve.md.
//
// A payload may carry all transformer layers (dense ones included) or only the MoE layers: the
// layer dimension must equal geometry.moe_layers or geometry.total_layers; in the latter case the
// dense layers' rows are skipped, whatever they hold, and the MoE layers' rows are taken where
// the geometry's layer map puts them (ModelGeometry::MoeLayerId: the leading first_moe_layer rows
// skipped, or dense layers interleaved). Every malformed payload (bad base64, bad .npy
// header, wrong dtype or shape, expert ids out of range, a repeated id within one token's top-k,
// truncation) yields a Status naming the problem, never a crash and never partial counts.
//
// Thread-safety: free functions are reentrant; a PickTable is immutable after decoding.
//
// Example:
//   ELDR_ASSIGN_OR_RETURN(PickTable t, DecodeVllmRoutedExperts(field, geometry));
//   ExpertCounts counts = t.Counts();             // whole prompt
//   t.AccumulateRows(0, 256, &chunk_counts);      // one chunk, for the signature cache
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "eldr/expert_counts.h"
#include "eldr/geometry.h"
#include "eldr/status.h"

namespace eldr {

// Standard base64 (RFC 4648 alphabet, '=' padding, no whitespace). Decodes into *out (resized;
// its capacity is reused). InvalidArgument names the offset of the first bad character.
Status Base64Decode(std::string_view in, std::vector<uint8_t>* out);
std::string Base64Encode(std::span<const uint8_t> in);

// A view of a parsed .npy (format versions 1-3). Only C-order arrays of little-endian or
// single-byte integer dtypes are accepted.
struct NpyView {
  char kind = 0;      // 'u' or 'i'
  int item_size = 0;  // 1, 2, 4 or 8
  std::vector<int64_t> shape;
  std::span<const uint8_t> data;  // points into the buffer given to ParseNpy
};
Result<NpyView> ParseNpy(std::span<const uint8_t> bytes);
// Serialises a C-order little-endian integer array as .npy v1 (tests, emulator).
std::vector<uint8_t> MakeNpy(char kind, int item_size, std::span<const int64_t> shape,
                             std::span<const uint8_t> data);

// A validated table of per-token expert picks for the MoE layers, [tokens, moe_layers, top_k].
// Owns its decoded bytes. Every id is known to be in [0, E) and unique within its token's layer.
class PickTable {
 public:
  int64_t tokens() const { return tokens_; }
  int layers() const { return layers_; }
  int top_k() const { return top_k_; }
  int experts() const { return experts_; }

  // Counts of all rows. Cost: one pass over the picks.
  ExpertCounts Counts() const;
  // counts += picks of rows [begin, end). REQUIRES: 0 <= begin <= end <= tokens(), counts has
  // shape [layers(), experts()] (both checked; InvalidArgument otherwise, counts untouched).
  Status AccumulateRows(int64_t begin, int64_t end, ExpertCounts* counts) const;
  // Pick j of token t at MoE layer l. REQUIRES: indices in range (unchecked).
  int32_t Pick(int64_t t, int l, int j) const;

 private:
  friend class PickTableBuilder;
  int64_t tokens_ = 0;
  int layers_ = 0;
  int top_k_ = 0;
  int experts_ = 0;
  int item_size_ = 0;         // 1, 2, 4 (signed or unsigned: ids are validated non-negative)
  int64_t row_stride_ = 0;    // items per token in bytes_ (payload layers * top_k)
  int64_t layer_offset_ = 0;  // items skipped at the start of each row (dense layers)
  std::vector<uint8_t> bytes_;
  size_t data_offset_ = 0;  // start of the item array inside bytes_
  ExpertCounts counts_;     // computed while validating
};

struct PayloadOptions {
  // Layers present in a flat SGLang payload; 0 means geometry.moe_layers. (.npy payloads carry
  // their own shape.)
  int payload_layers = 0;
  // Upper bound on decoded bytes; larger payloads fail with ResourceExhausted before decoding.
  size_t max_decoded_bytes = size_t{256} << 20;
  // Leading rows of a flat SGLang payload that are neither validated nor counted: the prompt
  // rows a PD decode engine returns without having computed them. More rows than the payload
  // holds is InvalidArgument.
  int64_t skip_rows = 0;
};

Result<PickTable> DecodeVllmRoutedExperts(std::string_view base64_npy, const ModelGeometry& g,
                                          const PayloadOptions& opts = {});
Result<PickTable> DecodeSglangRoutedExperts(std::string_view base64_int32, const ModelGeometry& g,
                                            const PayloadOptions& opts = {});
// Nested JSON lists [tokens][layers][top_k] of non-negative integers (whitespace allowed).
Result<PickTable> ParsePickListJson(std::string_view json, const ModelGeometry& g,
                                    const PayloadOptions& opts = {});
// vLLM 0.21's response-level prompt_routed_experts: nested lists [prompt_tokens][layers][top_k]
// in which a row of -1 marks a position the engine has no routes for (a prefix-cache hit). The
// table holds the known rows only, in order; a row mixing -1 with ids is an error.
struct PromptPickList {
  PickTable picks;              // known rows
  int64_t rows = 0;             // rows in the payload, known or not
  int64_t leading_unknown = 0;  // unknown rows before the first known one (a cached prefix)
  int64_t other_unknown = 0;    // unknown rows after it (the counts then miss those tokens)
};
Result<PromptPickList> ParsePromptPickListJson(std::string_view json, const ModelGeometry& g,
                                               const PayloadOptions& opts = {});
// ELDR engine-hook counts: base64 int16 [L, E] (raw little-endian, or a .npy), L = moe_layers, or
// L = total_layers with the dense layers' rows skipped (by the geometry's layer map).
Result<ExpertCounts> DecodeEldrSig(std::string_view base64_int16, const ModelGeometry& g);

// Builds a PickTable from in-memory picks (tests, emulator, simulator). `picks` is
// [tokens, moe_layers, top_k] row-major.
Result<PickTable> MakePickTable(std::span<const int32_t> picks, const ModelGeometry& g);

}  // namespace eldr
