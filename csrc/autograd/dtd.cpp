// tskd_fast::dtd_weight and tskd_fast::dtd_temperature have no gradient (their outputs are
// weights and temperatures, used as constants): autograd falls through to the device kernel.
#include <torch/library.h>

TORCH_LIBRARY_IMPL(tskd_fast, Autograd, m) {
  m.impl("dtd_weight", torch::CppFunction::makeFallthrough());
  m.impl("dtd_temperature", torch::CppFunction::makeFallthrough());
}
