// Op schemas and their CPU / CUDA implementations, registered with torch's dispatcher so that
// torch.ops.vlmreward.* dispatch on the tensors' device and work under torch.compile (fake kernels for
// shape propagation are registered in vlmreward/ops.py).
#include <torch/library.h>

#include "ops/preprocess.h"
#include "ops/reward_head.h"

TORCH_LIBRARY(vlmreward, m) {
  m.def("preprocess(Tensor frames, int image_size, float[] mean, float[] std, str resize_mode, str interpolation, "
        "ScalarType dtype) -> Tensor");
  // The CUDA kernel's per-pixel arithmetic run on the CPU (tests compare it with the fast CPU path and PIL).
  m.def("_preprocess_pointwise(Tensor frames, int image_size, float[] mean, float[] std, str resize_mode, "
        "str interpolation, ScalarType dtype) -> Tensor");
  m.def("reward_head(Tensor image_embeddings, Tensor text_embeddings, Tensor goal_sets, float logit_scale, "
        "float threshold, Tensor? goal_ids, str mode, bool bank_checked=False) -> (Tensor probs, Tensor rewards)");
}

TORCH_LIBRARY_IMPL(vlmreward, CPU, m) {
  m.impl("preprocess", &vlmreward::preprocess_cpu);
  m.impl("_preprocess_pointwise", &vlmreward::preprocess_pointwise_cpu);
  m.impl("reward_head", &vlmreward::reward_head_cpu);
}

#ifdef VLMREWARD_WITH_CUDA
TORCH_LIBRARY_IMPL(vlmreward, CUDA, m) {
  m.impl("preprocess", &vlmreward::preprocess_cuda);
  m.impl("reward_head", &vlmreward::reward_head_cuda);
}
#endif
