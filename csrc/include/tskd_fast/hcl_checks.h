#pragma once

#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>

// Input checks of tskd_fast::hcl_loss, shared by the CPU and CUDA implementations (the Python
// twin: tskd_fast/ops/hcl.py).
namespace tskd_fast {

// One or more stage pairs: student_feats[i] and teacher_feats[i] (N, C, H, W) of one shape, every
// map of one kernel dtype (float64 on the CPU only) and device; compute_grad one flag per pair;
// levels >= 1, at most kHclMaxLevels of them; grad_scale finite.
void check_hcl_inputs(at::TensorList student_feats, at::TensorList teacher_feats,
                      at::IntArrayRef levels, const c10::List<bool>& compute_grad,
                      double grad_scale);

}  // namespace tskd_fast
