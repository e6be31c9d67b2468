#include "eldr/emu/model.h"

#include <xxhash.h>

#include <algorithm>
#include <bit>

#include "eldr/rng.h"

namespace eldr::emu {

Status EngineModelOptions::Validate() const {
  if (archetypes < 1) return InvalidArgument("archetypes must be >= 1");
  if (vocab < 2) return InvalidArgument("vocab must be >= 2");
  if (block_size < 1) return InvalidArgument("block_size must be >= 1");
  return Status::Ok();
}

Result<std::shared_ptr<const EngineModel>> EngineModel::Create(sim::Workload workload,
                                                               sim::CostParams cost,
                                                               EngineModelOptions options) {
  ELDR_RETURN_IF_ERROR(options.Validate());
  ELDR_RETURN_IF_ERROR(cost.Validate());
  if (workload.requests.empty()) return InvalidArgument("emulator workload has no requests");
  std::shared_ptr<EngineModel> m(new EngineModel());
  if (static_cast<int>(workload.requests.size()) > options.archetypes) {
    workload.requests.resize(options.archetypes);
  }
  workload.calibration.clear();
  m->w_ = std::move(workload);
  m->cost_ = cost;
  m->o_ = options;
  const int L = m->w_.geometry.moe_layers, E = m->w_.geometry.experts;
  // Inverse-CDF tables: a draw is one table lookup (prefill emulation runs at thousands of
  // requests per second in the proxy benchmarks).
  m->table_.resize(m->w_.requests.size() * L * kTable);
  std::vector<double> cum(E);
  for (size_t a = 0; a < m->w_.requests.size(); ++a) {
    const ExpertCounts& c = m->w_.requests[a].prefill;
    for (int l = 0; l < L; ++l) {
      double acc = 0;
      // Smoothing keeps every expert possible, as a real router's softmax does.
      for (int e = 0; e < E; ++e) cum[e] = acc += 4.0 * c.at(l, e) + 1;
      uint16_t* out = m->table_.data() + (a * L + l) * kTable;
      int e = 0;
      for (int i = 0; i < kTable; ++i) {
        const double u = (i + 0.5) / kTable * acc;
        while (e < E - 1 && cum[e] <= u) ++e;
        out[i] = static_cast<uint16_t>(e);
      }
    }
  }
  return std::shared_ptr<const EngineModel>(std::move(m));
}

std::vector<int32_t> EngineModel::Tokenize(std::string_view text) const {
  std::vector<int32_t> out;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    size_t j = i;
    while (j < text.size() && !std::isspace(static_cast<unsigned char>(text[j]))) ++j;
    if (j > i) {
      out.push_back(static_cast<int32_t>(XXH3_64bits(text.data() + i, j - i) % o_.vocab));
    }
    i = j;
  }
  return out;
}

int EngineModel::Archetype(std::span<const int32_t> tokens) const {
  const size_t n = std::min<size_t>(tokens.size(), o_.block_size);
  const uint64_t h = XXH3_64bits(tokens.data(), n * sizeof(int32_t));
  return static_cast<int>(h % w_.requests.size());
}

const std::string& EngineModel::Label(int archetype) const {
  return w_.labels[w_.requests[archetype].label];
}

std::vector<int32_t> EngineModel::PromptPicks(std::span<const int32_t> tokens,
                                              int64_t start) const {
  const int L = w_.geometry.moe_layers, E = w_.geometry.experts, K = w_.geometry.top_k;
  const int64_t T = static_cast<int64_t>(tokens.size());
  start = std::clamp<int64_t>(start, 0, T);
  std::vector<int32_t> out(static_cast<size_t>(T - start) * L * K);
  if (T == 0) return out;
  const int a = Archetype(tokens);
  uint64_t h = 0x9E3779B97F4A7C15ull;
  std::vector<uint8_t> seen(E);
  for (int64_t t = 0; t < T; ++t) {
    // Rolling hash of the whole prefix: the picks of token t depend on tokens [0, t] only.
    h = XXH3_64bits_withSeed(&tokens[t], sizeof(int32_t), h);
    if (t < start) continue;
    Rng rng(h);
    int32_t* row = out.data() + static_cast<size_t>(t - start) * L * K;
    uint64_t bits = 0;
    int left = 0;
    for (int l = 0; l < L; ++l) {
      const uint16_t* table = table_.data() + (static_cast<size_t>(a) * L + l) * kTable;
      for (int j = 0, tries = 0; j < K; ++tries) {
        int e;
        if (tries < 32 * K) {
          if (left == 0) {
            bits = rng.Next();
            left = 64 / kTableBits;
          }
          e = table[bits & (kTable - 1)];
          bits >>= kTableBits;
          --left;
        } else {
          e = static_cast<int>(rng.Uniform(E));
        }
        if (seen[e]) continue;
        seen[e] = 1;
        row[l * K + j++] = e;
      }
      for (int j = 0; j < K; ++j) seen[row[l * K + j]] = 0;
    }
  }
  return out;
}

std::vector<int32_t> EngineModel::DecodePicks(int archetype, int64_t rows) const {
  const int L = w_.geometry.moe_layers, K = w_.geometry.top_k, W = w_.words;
  std::vector<int32_t> out(static_cast<size_t>(std::max<int64_t>(rows, 0)) * L * K);
  for (int64_t t = 0; t < rows; ++t) {
    for (int l = 0; l < L; ++l) {
      const uint64_t* b =
          w_.Bits(w_.requests[archetype], static_cast<int>(t % w_.token_patterns), l);
      int32_t* row = out.data() + (static_cast<size_t>(t) * L + l) * K;
      int j = 0;
      for (int i = 0; i < W && j < K; ++i) {
        for (uint64_t x = b[i]; x && j < K; x &= x - 1) row[j++] = i * 64 + std::countr_zero(x);
      }
    }
  }
  return out;
}

void EngineModel::StepDistinct(std::span<const DecodeSeq> batch, std::span<int> distinct) const {
  const int L = w_.geometry.moe_layers, W = w_.words;
  std::vector<uint64_t> u(W);
  for (int l = 0; l < L; ++l) {
    std::fill(u.begin(), u.end(), 0);
    for (const DecodeSeq& s : batch) {
      const uint64_t* b =
          w_.Bits(w_.requests[s.archetype], static_cast<int>(s.generated % w_.token_patterns), l);
      for (int i = 0; i < W; ++i) u[i] |= b[i];
    }
    int d = 0;
    for (uint64_t x : u) d += std::popcount(x);
    distinct[l] = d;
  }
}

double EngineModel::StepUs(std::span<const DecodeSeq> batch) const {
  if (batch.empty()) return 0;
  std::vector<int> distinct(w_.geometry.moe_layers);
  StepDistinct(batch, distinct);
  int64_t ctx = 0;
  for (const auto& s : batch) ctx += s.context;
  return cost_.StepUs(static_cast<int>(batch.size()), ctx, distinct);
}

}  // namespace eldr::emu
