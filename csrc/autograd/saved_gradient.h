#pragma once

#include <ATen/core/Tensor.h>

// The backward of the ops whose forward writes the gradient (kd_loss, hcl_loss): the saved
// gradient times the incoming one, or the saved gradient itself when that product would not
// change it. The Python twin of this formula, for the Triton ops, is
// tskd_fast.ops.common.scale_saved_gradient; both give identical gradients.
namespace tskd_fast::autograd {

// Whether `t` holds real values that may be read now on the host: a plain dense CPU tensor, with
// no tracing, faking or functionalisation going on (no Python dispatch mode, no Python or
// functorch key on the tensor or in the thread's included keys). Never true on CUDA, where a
// read would synchronise the stream.
bool values_readable(const at::Tensor& t);

// d loss / d input from saved = grad_scale * d out / d input (rows along the first dimension) and
// incoming = d loss / d out, 0-d or one per row: saved * incoming * weight / grad_scale, in a new
// tensor of saved's dtype (the product formed in the opmath type), with weight the factor of the
// op's reduction (1/B for a mean). On the CPU, when every incoming * weight equals grad_scale
// (loss.backward() of the op's own reduction) and the values can be read, `saved` itself: handing
// it on is safe, autograd clones it before accumulating while the graph (and so the saved tensor)
// is kept.
at::Tensor scale_saved_gradient(const at::Tensor& saved, const at::Tensor& incoming, double weight,
                                double grad_scale);

}  // namespace tskd_fast::autograd
