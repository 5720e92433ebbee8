// CUDA kernel of the preprocess op: one thread per output pixel, all arithmetic in preprocess_math.h
// (the same functions the CPU build runs in `_preprocess_pointwise`). Resampling plans are built on the host.
#include "../preprocess.h"

#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace vlmreward {
namespace {

struct DeviceAxis {
  const int32_t* start;
  const int32_t* count;
  const float* weights;
  int taps;
};

struct Affine {
  float scale[3], shift[3], fill[3];
};

template <typename out_t>
__global__ void preprocess_kernel(const uint8_t* __restrict__ frames, int64_t height, int64_t width, int64_t size,
                                  DeviceAxis rows, DeviceAxis cols, Affine affine, out_t* __restrict__ out) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t i = blockIdx.y;
  const int64_t b = blockIdx.z;
  if (j >= size) return;
  const bool inside = rows.count[i] > 0 && cols.count[j] > 0;
  const uint8_t* frame = frames + b * height * width * 3;
  for (int c = 0; c < 3; ++c) {
    float v = affine.fill[c];
    if (inside) {
      const float acc = resample_pixel_2d(frame, width * 3, c, rows.start[i], rows.count[i],
                                          rows.weights + i * rows.taps, cols.start[j], cols.count[j],
                                          cols.weights + j * cols.taps);
      v = normalise_pixel(acc, affine.scale[c], affine.shift[c]);
    }
    out[((b * 3 + c) * size + i) * size + j] = static_cast<out_t>(v);
  }
}

// Host plan -> device tensors (kept alive by the caller until the launch is enqueued; the caching
// allocator orders their reuse on the stream).
struct UploadedAxis {
  at::Tensor ints, weights;
  DeviceAxis view;
};

UploadedAxis upload(const AxisPlan& a, const at::Device& device) {
  const int64_t n = static_cast<int64_t>(a.count.size());
  at::Tensor ints = at::empty({2 * n}, at::TensorOptions().dtype(at::kInt));
  std::copy(a.start.begin(), a.start.end(), ints.data_ptr<int32_t>());
  std::copy(a.count.begin(), a.count.end(), ints.data_ptr<int32_t>() + n);
  at::Tensor w = at::empty({int64_t(a.weights.size())}, at::TensorOptions().dtype(at::kFloat));
  std::copy(a.weights.begin(), a.weights.end(), w.data_ptr<float>());
  UploadedAxis u{ints.to(device), w.to(device), {}};
  u.view = DeviceAxis{u.ints.data_ptr<int32_t>(), u.ints.data_ptr<int32_t>() + n, u.weights.data_ptr<float>(), a.taps};
  return u;
}

}  // namespace

at::Tensor preprocess_cuda(const at::Tensor& frames_in, int64_t image_size, at::ArrayRef<double> mean,
                           at::ArrayRef<double> std, std::string_view resize_mode, std::string_view interpolation,
                           at::ScalarType dtype) {
  TORCH_CHECK_VALUE(frames_in.device().is_cuda(), "preprocess: the CUDA kernel got frames on ", frames_in.device());
  const auto plan = make_preprocess_plan(frames_in, image_size, mean, std, std::string(resize_mode),
                                         std::string(interpolation), dtype);
  const c10::cuda::CUDAGuard guard(frames_in.device());
  const at::Tensor frames = frames_in.contiguous();
  at::Tensor out = at::empty({plan.batch, 3, plan.size, plan.size}, frames.options().dtype(dtype));
  const UploadedAxis rows = upload(plan.rows, frames.device());
  const UploadedAxis cols = upload(plan.cols, frames.device());
  Affine affine;
  for (int c = 0; c < 3; ++c) {
    affine.scale[c] = plan.scale[c];
    affine.shift[c] = plan.shift[c];
    affine.fill[c] = plan.fill[c];
  }
  TORCH_CHECK_VALUE(plan.batch <= 65535, "preprocess: CUDA batches are limited to 65535 frames, got ", plan.batch);
  constexpr int kThreads = 128;
  const dim3 grid((plan.size + kThreads - 1) / kThreads, plan.size, plan.batch);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "vlmreward_preprocess_cuda", [&] {
    preprocess_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(frames.data_ptr<uint8_t>(), plan.height, plan.width,
                                                               plan.size, rows.view, cols.view, affine,
                                                               out.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace vlmreward
