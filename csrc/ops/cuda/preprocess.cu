// CUDA kernels of the preprocess op. All arithmetic is in preprocess_math.h (the functions the CPU build runs
// in `_preprocess_pointwise`), so the bytes equal that op's. No host synchronisation and no host-to-device
// copy: the resampling taps are computed on the device by plan_kernel (plan_entry, rounded as on the host),
// then preprocess_kernel runs one thread per output pixel; both launches are capturable in a CUDA graph.
#include "../preprocess.h"

#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

namespace vlmreward {
namespace {

struct DeviceAxis {
  const int32_t* start;
  const int32_t* count;
  const float* weights;
  int taps;
};

struct Geometry {
  int interpolation;
  AxisGeometry gy, gx;
  int64_t size;
};

// Thread t < size plans canvas row t, size <= t < 2 size canvas column t - size.
__global__ void plan_kernel(Geometry g, int32_t* __restrict__ ints, float* __restrict__ wy, float* __restrict__ wx) {
  const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t S = g.size;
  if (t >= 2 * S) return;
  const bool row = t < S;
  const int64_t j = row ? t : t - S;
  const AxisGeometry& a = row ? g.gy : g.gx;
  int32_t* start = ints + (row ? 0 : 2 * S);
  plan_entry(g.interpolation, a.in_size, a.resized, a.offset, a.taps, j, start + j, start + S + j,
             (row ? wy : wx) + j * a.taps);
}

struct Affine {
  float scale[3], shift[3], fill[3];
};

// grid: x covers the columns, y the rows (S <= 4096), z strides over the batch (any size).
template <typename out_t>
__global__ void preprocess_kernel(const uint8_t* __restrict__ frames, int64_t batch, int64_t height, int64_t width,
                                  int64_t size, DeviceAxis rows, DeviceAxis cols, bool vertical_first, Affine affine,
                                  out_t* __restrict__ out) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t i = blockIdx.y;
  if (j >= size) return;
  const bool inside = rows.count[i] > 0 && cols.count[j] > 0;
  for (int64_t b = blockIdx.z; b < batch; b += gridDim.z) {
    const uint8_t* frame = frames + b * height * width * 3;
    for (int c = 0; c < 3; ++c) {
      float v = affine.fill[c];
      if (inside) {
        const float acc = resample_pixel_2d(frame, width * 3, c, rows.start[i], rows.count[i],
                                            rows.weights + i * rows.taps, cols.start[j], cols.count[j],
                                            cols.weights + j * cols.taps, vertical_first);
        v = normalise_pixel(acc, affine.scale[c], affine.shift[c]);
      }
      out[((b * 3 + c) * size + i) * size + j] = static_cast<out_t>(v);
    }
  }
}

}  // namespace

at::Tensor preprocess_cuda(const at::Tensor& frames_in, int64_t image_size, at::ArrayRef<double> mean,
                           at::ArrayRef<double> std, std::string_view resize_mode, std::string_view interpolation,
                           at::ScalarType dtype) {
  TORCH_CHECK_VALUE(frames_in.device().is_cuda(), "preprocess: the CUDA kernel got frames on ", frames_in.device());
  // Every check first (metadata and host scalars only), then allocation and launches.
  const PreprocessGeometry g = check_preprocess(frames_in, image_size, mean, std, resize_mode, interpolation, dtype);
  const c10::cuda::CUDAGuard guard(frames_in.device());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t S = g.size;
  const auto on_device = frames_in.options();
  at::Tensor ints = at::empty({4 * S}, on_device.dtype(at::kInt));
  at::Tensor wy = at::empty({S * g.gy.taps}, on_device.dtype(at::kFloat));
  at::Tensor wx = at::empty({S * g.gx.taps}, on_device.dtype(at::kFloat));
  const Geometry geo{g.interpolation, g.gy, g.gx, S};
  constexpr int kPlanThreads = 128;
  plan_kernel<<<(2 * S + kPlanThreads - 1) / kPlanThreads, kPlanThreads, 0, stream>>>(
      geo, ints.data_ptr<int32_t>(), wy.data_ptr<float>(), wx.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  const at::Tensor frames = frames_in.contiguous();  // a device copy when strided, enqueued on the stream
  at::Tensor out = at::empty({g.batch, 3, S, S}, frames.options().dtype(dtype));
  const int32_t* p = ints.data_ptr<int32_t>();
  const DeviceAxis rows{p, p + S, wy.data_ptr<float>(), g.gy.taps};
  const DeviceAxis cols{p + 2 * S, p + 3 * S, wx.data_ptr<float>(), g.gx.taps};
  Affine affine;
  for (int c = 0; c < 3; ++c) {
    affine.scale[c] = g.scale[c];
    affine.shift[c] = g.shift[c];
    affine.fill[c] = g.fill[c];
  }
  constexpr int kThreads = 128;
  const dim3 grid((S + kThreads - 1) / kThreads, S, static_cast<unsigned>(std::min<int64_t>(g.batch, 65535)));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "vlmreward_preprocess_cuda", [&] {
    preprocess_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(frames.data_ptr<uint8_t>(), g.batch, g.height,
                                                               g.width, S, rows, cols, g.vertical_first, affine,
                                                               out.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace vlmreward
