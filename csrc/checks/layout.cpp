#include "tskd_fast/layout.h"

#include "cpu/output_pool.h"

namespace tskd_fast {

bool kernel_channels_last(const at::Tensor& map) {
  return !map.is_contiguous() && map.is_contiguous(at::MemoryFormat::ChannelsLast);
}

at::MemoryFormat kernel_memory_format(bool channels_last) {
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

at::Tensor in_kernel_layout(const at::Tensor& t, bool channels_last) {
  return t.contiguous(kernel_memory_format(channels_last));
}

at::Tensor empty_in_layout(at::IntArrayRef sizes, const at::TensorOptions& options,
                           bool channels_last) {
  return cpu::empty_output(sizes, options, kernel_memory_format(channels_last));
}

}  // namespace tskd_fast
