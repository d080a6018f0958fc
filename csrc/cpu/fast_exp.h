#pragma once

// exp2 for the softmax exponentials: the arguments are logits minus their row maximum (<= 0, or
// -inf for masked classes), already multiplied by log2(e), so range reduction is one rounding.
// 2^x = 2^n * 2^f with n = round(x), |f| <= 1/2, and 2^f from a degree-6 minimax polynomial
// (relative error 1.9e-9 in exact arithmetic, about 1 ulp in float32). Included by the per-ISA
// kernel files only.
#include <ATen/cpu/vec/vec.h>

#include <cmath>

namespace tskd_fast::cpu::CPU_CAPABILITY {

using at::vec::Vectorized;

namespace exp2_poly {
constexpr float c0 = 1.0f;
constexpr float c1 = 0.6931471824645996f;
constexpr float c2 = 0.24022646248340607f;
constexpr float c3 = 0.05550328642129898f;
constexpr float c4 = 0.009618489071726799f;
constexpr float c5 = 0.0013399929739534855f;
constexpr float c6 = 0.0001534579205326736f;
}  // namespace exp2_poly

// Portable form (and the double one): exp(x ln 2) with ATen's vectorised exp.
template <typename T>
inline Vectorized<T> exp2_nonpositive(const Vectorized<T>& x) {
  return (x * Vectorized<T>(T(M_LN2))).exp_u20();
}

// 2^t for t in [-125, 126] (or NaN): a degree-6 polynomial of the fraction times 2^round(t).
#if defined(CPU_CAPABILITY_AVX512)
inline __m512 exp2_in_range(__m512 t) {
  using namespace exp2_poly;
  const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(t, n);
  __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(c6), f, _mm512_set1_ps(c5));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c4));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c3));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c2));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c1));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c0));
  return _mm512_scalef_ps(p, n);
}
#elif defined(CPU_CAPABILITY_AVX2)
inline __m256 exp2_in_range(__m256 t) {
  using namespace exp2_poly;
  const __m256 n = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(t, n);
  __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(c6), f, _mm256_set1_ps(c5));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(c4));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(c3));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(c2));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(c1));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(c0));
  // 2^n built in the exponent bits (n in [-125, 126] keeps it a normal number).
  const __m256i bits =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}
#endif

// Results below 2^-125 are returned as exact zeros: denormal results cost a microcode assist of
// about a hundred cycles each, and the tail of every row (padded with -inf) would pay it. A NaN x
// stays NaN (max returns its second operand).
#if defined(CPU_CAPABILITY_AVX512)
template <>
inline Vectorized<float> exp2_nonpositive(const Vectorized<float>& x) {
  const __m512 lowest = _mm512_set1_ps(-125.0f);
  const __mmask16 keep = _mm512_cmp_ps_mask(x, lowest, _CMP_NLT_UQ);  // x >= -125 or NaN
  return _mm512_maskz_mov_ps(keep, exp2_in_range(_mm512_max_ps(lowest, x)));
}
#elif defined(CPU_CAPABILITY_AVX2)
template <>
inline Vectorized<float> exp2_nonpositive(const Vectorized<float>& x) {
  const __m256 lowest = _mm256_set1_ps(-125.0f);
  const __m256 r = exp2_in_range(_mm256_max_ps(lowest, x));
  return _mm256_blendv_ps(r, _mm256_setzero_ps(), _mm256_cmp_ps(x, lowest, _CMP_LT_OQ));
}
#endif

// 2^x for any float x, clamped to [2^-125, 2^126] (NaN stays NaN): for activations whose
// formula is safe at both clamps, e.g. 1 / (1 + 2^t) is 1 at 2^-125 and 1e-38 at 2^126.
#if defined(CPU_CAPABILITY_AVX512)
constexpr bool kHasExp2Clamped = true;
inline Vectorized<float> exp2_clamped(const Vectorized<float>& x) {
  const __m512 t = _mm512_max_ps(_mm512_set1_ps(-125.0f), x);
  return exp2_in_range(_mm512_min_ps(_mm512_set1_ps(126.0f), t));
}
#elif defined(CPU_CAPABILITY_AVX2)
constexpr bool kHasExp2Clamped = true;
inline Vectorized<float> exp2_clamped(const Vectorized<float>& x) {
  const __m256 t = _mm256_max_ps(_mm256_set1_ps(-125.0f), x);
  return exp2_in_range(_mm256_min_ps(_mm256_set1_ps(126.0f), t));
}
#else
constexpr bool kHasExp2Clamped = false;
// Not called: kHasExp2Clamped is false here.
inline Vectorized<float> exp2_clamped(const Vectorized<float>& x) { return x; }
#endif

}  // namespace tskd_fast::cpu::CPU_CAPABILITY
