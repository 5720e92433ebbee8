// The Python extension module vlmreward._C. Importing it runs the op registrations in register.cpp.
#include <pybind11/pybind11.h>

PYBIND11_MODULE(_C, m) {
  m.doc() = "vlmreward kernels; the ops live in torch.ops.vlmreward";
#ifdef VLMREWARD_WITH_CUDA
  m.attr("cuda_built") = true;
  m.attr("cuda_architectures") = VLMREWARD_CUDA_ARCHS;  // CMAKE_CUDA_ARCHITECTURES, with commas
#else
  m.attr("cuda_built") = false;
  m.attr("cuda_architectures") = "";
#endif
}
