#pragma once

#include <Python.h>

// The ops' eager entry points in tskd_fast._C (tskd_fast._C.kd_loss, ...): the same call as
// torch.ops.tskd_fast.<op>, arguments parsed by torch's own argument parser instead of
// torch.ops's boxing of every argument into the op's schema, which costs a small call more host
// time than its kernel. tskd_fast.ops.library.call takes them for eager calls; traced ones
// (torch.compile, export) and arguments with __torch_function__ (for which they return None) go
// through torch.ops.
namespace tskd_fast::python {

PyMethodDef* eager_call_methods();

}  // namespace tskd_fast::python
