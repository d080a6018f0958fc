#pragma once

#include <ATen/core/Tensor.h>

// The memory layout the kernels of the map ops (convlstm_gates, abf_fuse, hcl_loss) read and
// write, the same rule as tskd_fast.ops.common.kernel_channels_last: NHWC (channels_last) for a
// map that is channels_last-contiguous and not NCHW-contiguous (an (N, C, 1, 1) map is both and
// goes NCHW), else NCHW. The other maps of a call are brought to the layout of its first.
namespace tskd_fast {

bool kernel_channels_last(const at::Tensor& map);
at::MemoryFormat kernel_memory_format(bool channels_last);
// `t` contiguous in that layout (no copy when it already is).
at::Tensor in_kernel_layout(const at::Tensor& t, bool channels_last);
// A new output in that layout (large CPU outputs from the output pool, cpu/output_pool.h).
at::Tensor empty_in_layout(at::IntArrayRef sizes, const at::TensorOptions& options,
                           bool channels_last);

}  // namespace tskd_fast
