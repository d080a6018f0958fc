#pragma once

#include <cmath>

#include "tskd_fast/macros.h"

// log/exp/sqrt/pow by the precision of the argument: unqualified C calls on a float would run the
// double versions on the host (promotion), which the per-row math has no use for.
namespace tskd_fast {

TSKD_HD float math_log(float x) { return logf(x); }
TSKD_HD double math_log(double x) { return log(x); }
TSKD_HD float math_exp(float x) { return expf(x); }
TSKD_HD double math_exp(double x) { return exp(x); }
TSKD_HD float math_sqrt(float x) { return sqrtf(x); }
TSKD_HD double math_sqrt(double x) { return sqrt(x); }
TSKD_HD float math_pow(float x, float y) { return powf(x, y); }
TSKD_HD double math_pow(double x, double y) { return pow(x, y); }

}  // namespace tskd_fast
