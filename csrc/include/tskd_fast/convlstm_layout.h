#pragma once

#include <cstdint>

namespace tskd_fast {

// How the ConvLSTM gate kernels walk one sample. The states (c_prev, h, c and their gradients)
// are read as (batch, rows, cols) contiguous and the peepholes as (rows, cols) contiguous; gate g
// (0..3 for i, f, g, o) of row q, col k of sample b is at
//   gates + b * gate_batch_stride + q * gate_row_stride + g * gate_block + k.
//   NCHW:          rows = 1,     cols = C_h H W, gate_row_stride = 0,       gate_block = C_h H W
//   channels_last: rows = H W,   cols = C_h,     gate_row_stride = 4 C_h,   gate_block = C_h
struct ConvLstmLayout {
  int64_t batch;
  int64_t rows;
  int64_t cols;
  int64_t gate_batch_stride;
  int64_t gate_row_stride;
  int64_t gate_block;
};

}  // namespace tskd_fast
