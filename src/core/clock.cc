#include "eldr/clock.h"

#include <chrono>

namespace eldr {

int64_t SteadyClock::NowUs() const {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

const SteadyClock& SteadyClock::Get() {
  static const SteadyClock clock;
  return clock;
}

}  // namespace eldr
