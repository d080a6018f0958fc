#include <c10/util/Exception.h>

#include <cmath>
#include <string>

#include "tskd_fast/checks.h"
#include "tskd_fast/hcl_checks.h"
#include "tskd_fast/hcl_math.h"

namespace tskd_fast {

void check_hcl_inputs(at::TensorList student_feats, at::TensorList teacher_feats,
                      at::IntArrayRef levels, const c10::List<bool>& compute_grad,
                      double grad_scale) {
  TORCH_CHECK_VALUE(!student_feats.empty(),
                    "student_feats is empty: at least one stage pair is needed");
  TORCH_CHECK_VALUE(teacher_feats.size() == student_feats.size(), "student_feats has ",
                    student_feats.size(), " levels but teacher_feats has ", teacher_feats.size(),
                    ": one teacher feature per student feature is needed");
  TORCH_CHECK_VALUE(compute_grad.size() == student_feats.size(),
                    "compute_grad must have one flag per stage pair (", student_feats.size(),
                    "), got ", compute_grad.size());
  for (size_t i = 0; i < student_feats.size(); ++i) {
    const at::Tensor& fs = student_feats[i];
    const at::Tensor& ft = teacher_feats[i];
    const std::string s_name = "student_feats[" + std::to_string(i) + "]";
    const std::string t_name = "teacher_feats[" + std::to_string(i) + "]";
    check_feature_map(fs, s_name);
    check_feature_map(ft, t_name);
    check_dtype_and_device(fs, s_name, student_feats[0], "student_feats[0]",
                           student_feats[0].scalar_type());
    check_dtype_and_device(ft, t_name, fs, s_name, fs.scalar_type());
    TORCH_CHECK_VALUE(ft.size(0) == fs.size(0), t_name, " has batch size ", ft.size(0), " but ",
                      s_name, " has ", fs.size(0));
    TORCH_CHECK_VALUE(ft.size(1) == fs.size(1), t_name, " has ", ft.size(1), " channels but ",
                      s_name, " has ", fs.size(1));
    TORCH_CHECK_VALUE(ft.sizes() == fs.sizes(), t_name, " has spatial size ",
                      py_shape(ft.sizes().slice(2)), " but ", s_name, " has ",
                      py_shape(fs.sizes().slice(2)), ": HCL compares features of one size");
  }
  TORCH_CHECK_VALUE(static_cast<int64_t>(levels.size()) <= kHclMaxLevels, "at most ", kHclMaxLevels,
                    " levels, got ", levels.size());
  for (const int64_t level : levels) {
    TORCH_CHECK_VALUE(level >= 1, "levels must all be >= 1 (pooled sizes), got ", py_shape(levels));
  }
  TORCH_CHECK_VALUE(std::isfinite(grad_scale), "grad_scale must be finite, got ", grad_scale);
}

}  // namespace tskd_fast
