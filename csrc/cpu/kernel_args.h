#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

// Arguments of the CPU kernels, filled by the dispatchers in csrc/cpu/*.cpp after the inputs are
// checked; the kernels themselves are compiled once per vector ISA (csrc/cpu/isa/).
namespace tskd_fast::cpu {

struct KdLossArgs {
  const void* student;  // (rows, classes) of `dtype`, unit stride along classes
  const void* teacher;  // likewise
  int64_t student_row_stride;
  int64_t teacher_row_stride;
  const int64_t* target;    // (rows,) or nullptr
  const void* temperature;  // (rows,) of the opmath type (float, double for double logits)
  void* row_loss;           // (rows,) of the opmath type
  void* row_grad;           // (rows, classes) contiguous of `dtype`, or nullptr
  int64_t rows;
  int64_t classes;
  int64_t ka;
  double lsr_p;
  bool scale_tau2;
  double ce_weight;
  int64_t ignore_index;
  double grad_scale;  // factor of the written gradient (1/B for batchmean)
  c10::ScalarType dtype;
};

struct DtdWeightArgs {
  const void* student;
  const void* teacher;
  int64_t student_row_stride;
  int64_t teacher_row_stride;
  const int64_t* target;  // (rows,) or nullptr
  void* weight;           // (rows,) of the opmath type
  int64_t rows;
  int64_t classes;
  int64_t mode;  // 0 flsw, 1 cwsm
  double gamma;
  int64_t ka;
  int64_t ignore_index;
  c10::ScalarType dtype;
};

}  // namespace tskd_fast::cpu
