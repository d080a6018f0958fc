#pragma once

// A minimal check macro for the C++ tests: a failed check prints where and why and counts, and
// the test's main returns the count as its exit status, which ctest reports.
#include <cmath>
#include <cstdio>

namespace tskd_fast::testing {

inline int& failures() {
  static int count = 0;
  return count;
}

// |actual - expected| <= tol, treating equal infinities and NaN == NaN as equal.
inline bool close(double actual, double expected, double tol) {
  if (std::isnan(expected) || std::isnan(actual)) return std::isnan(expected) && std::isnan(actual);
  if (std::isinf(expected) || std::isinf(actual)) return actual == expected;
  return std::fabs(actual - expected) <= tol;
}

}  // namespace tskd_fast::testing

#define TSKD_CHECK(cond, ...)                                                       \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      ++::tskd_fast::testing::failures();                                           \
      std::fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                            \
      std::fprintf(stderr, "\n");                                                   \
    }                                                                               \
  } while (0)

#define TSKD_CHECK_CLOSE(actual, expected, tol, ...)                                          \
  do {                                                                                        \
    const double tskd_a_ = static_cast<double>(actual);                                       \
    const double tskd_e_ = static_cast<double>(expected);                                     \
    if (!::tskd_fast::testing::close(tskd_a_, tskd_e_, static_cast<double>(tol))) {           \
      ++::tskd_fast::testing::failures();                                                     \
      std::fprintf(stderr, "%s:%d: %s = %.10g, expected %s = %.10g (tol %.3g): ", __FILE__,   \
                   __LINE__, #actual, tskd_a_, #expected, tskd_e_, static_cast<double>(tol)); \
      std::fprintf(stderr, __VA_ARGS__);                                                      \
      std::fprintf(stderr, "\n");                                                             \
    }                                                                                         \
  } while (0)
