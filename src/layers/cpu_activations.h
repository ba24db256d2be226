// The FFN activations on one vector of the CPU kernels (cpu_vectors.h), with their derivatives:
// what the plain (activation_cpu_kernels) and gated (gated_activation_cpu_kernels) kernels
// share. Each is written so that no term cancels where the activation is small.
#pragma once
#include "activation_cpu_kernels.h"
#include "cpu_vectors.h"

namespace exfusion::cpu {

namespace activation_constants {
constexpr float kSqrtTwoOverPi = 0.7978845608028654f;
constexpr float kOneOverSqrtTwo = 0.7071067811865476f;
constexpr float kOneOverSqrtTwoPi = 0.3989422804014327f;
constexpr float kGeluCubic = 0.044715f;
// Abramowitz & Stegun 7.1.26: erfc(z) = t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) e^{-z²} with
// t = 1 / (1 + p z), z ≥ 0, |error| ≤ 1.5e-7 (absolute, in erf).
constexpr float kErfcP = 0.3275911f;
constexpr float kErfcA1 = 0.254829592f;
constexpr float kErfcA2 = -0.284496736f;
constexpr float kErfcA3 = 1.421413741f;
constexpr float kErfcA4 = -1.453152027f;
constexpr float kErfcA5 = 1.061405429f;
}  // namespace activation_constants

// act(x) and, where `derivative` is given, act'(x).
template <ActivationFunction function>
EXFUSION_INLINE Vec activation(const Vec& x, Vec* derivative) {
  using namespace activation_constants;
  if constexpr (function == ActivationFunction::kGelu) {
    // x Φ(x) with Φ(x) = erfc(−x/√2) / 2, from erfc(|x|/√2): for x < 0 it is Φ itself, which
    // keeps its relative precision far out where Φ is tiny (1 + erf(x/√2) would cancel), and
    // its e^{−x²/2} is the density's too, so one exponential gives act and act'.
    const Vec z = (x < 0.f ? -x : x) * kOneOverSqrtTwo;
    const Vec t = 1.f / (1.f + kErfcP * z);
    Vec gauss = -(z * z);
    exp_nonpositive(gauss);
    const Vec half_erfc =
        0.5f * t * (kErfcA1 + t * (kErfcA2 + t * (kErfcA3 + t * (kErfcA4 + t * kErfcA5)))) * gauss;
    const Vec cdf = x < 0.f ? half_erfc : 1.f - half_erfc;
    if (derivative) *derivative = cdf + x * (kOneOverSqrtTwoPi * gauss);
    return x * cdf;
  } else if constexpr (function == ActivationFunction::kGeluTanh) {
    // u = √(2/π)(x + 0.044715 x³); 0.5 x (1 + tanh u) is x σ(2u), and 1 − tanh² u is
    // 4 σ(2u) σ(−2u), both through σ and 1 − σ (cpu_vectors.h), which do not cancel:
    // act' = σ(2u) + x σ(2u) σ(−2u) 2u'.
    Vec s, complement;
    const Vec x2 = x * x;
    sigmoid_pair(2.f * kSqrtTwoOverPi * (x + kGeluCubic * x2 * x), s, complement);
    if (derivative) {
      *derivative = s + x * s * complement * (2.f * kSqrtTwoOverPi) * (1.f + 3.f * kGeluCubic * x2);
    }
    return x * s;
  } else if constexpr (function == ActivationFunction::kSilu) {
    // x σ(x); its derivative σ(x)(1 + x σ(−x)).
    Vec s, complement;
    sigmoid_pair(x, s, complement);
    if (derivative) *derivative = s * (1.f + x * complement);
    return x * s;
  } else {
    // max(x, 0); its derivative 1 where x > 0 (0 at 0, as ATen's threshold_backward).
    const IntVec positive = x > 0.f;
    if (derivative) *derivative = positive ? (Vec{} + 1.f) : Vec{};
    return positive ? x : Vec{};
  }
}

}  // namespace exfusion::cpu
