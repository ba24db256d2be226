// The random draws of per-sample augmentation: a small counter-free generator (xoshiro256**,
// seeded through splitmix64) with its own uniform and normal distributions, so the draws are
// the same on every machine and standard library, and a fresh stream per (seed, epoch, batch,
// sample) makes them independent of worker count and of where a run was resumed.
#pragma once
#include <cmath>
#include <cstdint>

namespace exfusion {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

class SampleRandom {
 public:
  explicit SampleRandom(uint64_t seed) {
    for (auto& word : state_) {
      seed = splitmix64(seed);
      word = seed;
    }
  }

  uint64_t next_u64() {
    const uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }
  // Uniform in [0, 1), 53 random bits.
  double uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }
  double uniform(double low, double high) { return low + (high - low) * uniform(); }
  // Uniform integer in [low, high] (both included); high >= low.
  int64_t integer(int64_t low, int64_t high) {
    const auto span = static_cast<uint64_t>(high - low) + 1;
    return low + static_cast<int64_t>(next_u64() % span);  // span ≪ 2^64: the bias is negligible
  }
  bool bernoulli(double p) { return uniform() < p; }
  // Normal(mean, std) by Box–Muller; one draw per call keeps the stream position simple.
  double normal(double mean, double std) {
    const double u1 = 1.0 - uniform(), u2 = uniform();  // u1 in (0, 1]
    return mean + std * std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t state_[4];
};

// The stream for one sample of one batch; sample == -1 is the batch's own draws (Mixup/CutMix).
inline SampleRandom sample_random(uint64_t seed, int64_t epoch, int64_t batch, int64_t sample) {
  uint64_t mixed = splitmix64(seed ^ 0x5eedULL);
  mixed = splitmix64(mixed ^ static_cast<uint64_t>(epoch));
  mixed = splitmix64(mixed ^ static_cast<uint64_t>(batch));
  return SampleRandom(splitmix64(mixed ^ static_cast<uint64_t>(sample + 1)));
}

}  // namespace exfusion
