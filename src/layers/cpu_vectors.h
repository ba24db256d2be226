// The vectors of the CPU kernels: 16 floats in GCC's vector extension, so that every product,
// sum and exponential in a kernel is one vector operation whatever the compiler would prove about
// aliasing or trip counts, and the few functions on them the kernels share. The kernels' task
// functions are cloned for AVX-512 and for AVX2 + FMA (EXFUSION_SIMD_CLONES: chosen once, at load
// time, where the CPU has them; the build stays runnable on any x86-64, where each vector is
// four SSE registers), with these helpers inlined into each clone.
#pragma once
#include <cstdint>
#include <cstring>

#define EXFUSION_SIMD_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define EXFUSION_INLINE inline __attribute__((always_inline))

namespace exfusion::cpu {

constexpr int64_t kLanes = 16;
using Vec = float __attribute__((vector_size(kLanes * sizeof(float))));
using IntVec = int32_t __attribute__((vector_size(kLanes * sizeof(int32_t))));

// e^x for x ≤ 0 on every lane, as Cephes' expf: x = n ln2 + r with |r| ≤ ln2/2, e^r by its
// degree-6 polynomial, 2^n into the exponent bits. Relative error about 2 ulp; below -87 the
// result is 0 (true value under 2^-125).
EXFUSION_INLINE void exp_nonpositive(Vec& x) {
  const IntVec underflows = x < (Vec{} + -87.f);
  const Vec clamped = underflows ? (Vec{} + -87.f) : x;
  // n = floor(x log2 e + 1/2): truncation, one less where it rounded a negative value up.
  const Vec rounded = clamped * 1.44269504088896341f + 0.5f;
  const IntVec truncated = __builtin_convertvector(rounded, IntVec);
  const IntVec n = truncated + (__builtin_convertvector(truncated, Vec) > rounded);
  const Vec n_float = __builtin_convertvector(n, Vec);
  Vec r = clamped - n_float * 0.693359375f;
  r -= n_float * -2.12194440e-4f;
  Vec p = (Vec{} + 1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  const Vec scale = __builtin_bit_cast(Vec, (n + 127) << 23);
  x = underflows ? Vec{} : p * scale;
}

// The logistic function σ(x) and 1 − σ(x) = σ(−x) on every lane, both from e^-|x| (which
// cannot overflow) without a subtraction, so each keeps its relative precision where it is
// small: 1 − σ is not computed as a difference that cancels.
EXFUSION_INLINE void sigmoid_pair(const Vec& x, Vec& sigmoid, Vec& complement) {
  const IntVec negative = x < 0.f;
  Vec e = negative ? x : -x;
  exp_nonpositive(e);
  const Vec larger = (Vec{} + 1.f) / (1.f + e);
  const Vec smaller = e * larger;
  sigmoid = negative ? smaller : larger;
  complement = negative ? larger : smaller;
}

// The n < kLanes floats at `source` as a vector, zeros after them; and back.
EXFUSION_INLINE Vec load_partial(const float* source, int64_t n) {
  Vec v{};
  std::memcpy(&v, source, static_cast<size_t>(n) * sizeof(float));
  return v;
}
EXFUSION_INLINE void store_partial(const Vec& v, float* target, int64_t n) {
  std::memcpy(target, &v, static_cast<size_t>(n) * sizeof(float));
}
EXFUSION_INLINE Vec load(const float* source) {
  Vec v;
  std::memcpy(&v, source, sizeof(Vec));
  return v;
}
EXFUSION_INLINE void store(const Vec& v, float* target) { std::memcpy(target, &v, sizeof(Vec)); }

EXFUSION_INLINE float lane_sum(const Vec& v) {
  float sum = 0.f;
  for (int64_t l = 0; l < kLanes; ++l) sum += v[l];
  return sum;
}

}  // namespace exfusion::cpu
