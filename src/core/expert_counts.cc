#include "eldr/expert_counts.h"

#include <numeric>

namespace eldr {

Status ExpertCounts::AddToken(std::span<const int32_t> picks, int top_k) {
  if (top_k <= 0 || picks.size() != static_cast<size_t>(layers_) * top_k) {
    return InvalidArgument("token has {} picks, expected {} layers x top-{}", picks.size(), layers_,
                           top_k)
        .error();
  }
  // Validate the whole token first so that a bad token leaves the counts untouched.
  for (int l = 0; l < layers_; ++l) {
    const int32_t* p = picks.data() + static_cast<size_t>(l) * top_k;
    for (int j = 0; j < top_k; ++j) {
      if (p[j] < 0 || p[j] >= experts_) {
        return OutOfRange("expert id {} at layer {} is outside [0, {})", p[j], l, experts_).error();
      }
      for (int i = 0; i < j; ++i) {
        if (p[i] == p[j]) {
          return InvalidArgument("expert id {} repeated in the top-{} of layer {}", p[j], top_k, l)
              .error();
        }
      }
    }
  }
  for (int l = 0; l < layers_; ++l)
    for (int j = 0; j < top_k; ++j) ++at(l, picks[static_cast<size_t>(l) * top_k + j]);
  return Status::Ok();
}

Status ExpertCounts::Add(const ExpertCounts& o) {
  if (o.layers_ != layers_ || o.experts_ != experts_) {
    return InvalidArgument("cannot add {}x{} counts to {}x{}", o.layers_, o.experts_, layers_,
                           experts_)
        .error();
  }
  for (size_t i = 0; i < c_.size(); ++i) c_[i] += o.c_[i];
  return Status::Ok();
}

Status ExpertCounts::Subtract(const ExpertCounts& o) {
  if (o.layers_ != layers_ || o.experts_ != experts_) {
    return InvalidArgument("cannot subtract {}x{} counts from {}x{}", o.layers_, o.experts_,
                           layers_, experts_)
        .error();
  }
  for (size_t i = 0; i < c_.size(); ++i) {
    if (o.c_[i] > c_[i]) {
      return FailedPrecondition("subtraction would make entry {} negative", i).error();
    }
  }
  for (size_t i = 0; i < c_.size(); ++i) c_[i] -= o.c_[i];
  return Status::Ok();
}

uint64_t ExpertCounts::Total() const { return std::accumulate(c_.begin(), c_.end(), uint64_t{0}); }

}  // namespace eldr
