// AVX-512 kernels of the CPU preprocess op (preprocess_avx512.cpp, the only file compiled with -mavx512*).
//
// The interface is plain pointers and integers: that file includes no C++ library header, so no inline
// function or template instance compiled for AVX-512 can be merged by the linker into code that runs on a CPU
// without it. Call only when available() is true.
#pragma once

#include <cstddef>
#include <cstdint>

namespace vlmreward {
namespace avx512 {

// Compiled in (x86-64 with GCC or Clang) and supported by this CPU (AVX-512 F, BW, DQ, VL).
bool available();

// One frame, horizontal pass first, float32 output. The column tables group output columns by four: group g
// runs gcount[g] taps (the largest count of its columns) with weights gw[(g * gtaps + k) * 4 + l] of column
// 4g + l (zero past that column's own count) on input floats at T offset goff[4g + l] (48 floats per input
// pixel: 3 channels x 16 rows). Columns past S or with no taps have weight zero.
struct HorizontalFirst {
  const uint8_t* frame;  // (H, W, 3) of this frame
  int64_t width, size;   // W, S
  const int32_t* row_start;
  const int32_t* row_count;
  const float* row_weights;
  int row_taps;
  int64_t x_lo, nx;       // the input columns any output column reads
  int64_t j_lo, j_hi;     // the non-padded output columns
  const int32_t* gcount;  // groups = ceil(S / 4)
  const int32_t* goff;
  const float* gw;
  int gtaps;
  const float* scale;  // 3 each: value = clip_round(acc) * scale + shift; padding = shift
  const float* shift;
  float* out;  // (3, S, S) of this frame
  bool stream;  // a large output: non-temporal stores where rows are 64-byte aligned (it leaves the caches)
};

// Bytes of scratch one band needs (64-byte aligned), for a band whose rows read at most max_taps input rows.
size_t horizontal_first_scratch(const HorizontalFirst& a, int max_taps);
// Output rows [r0, r1).
void horizontal_first_band(const HorizontalFirst& a, int64_t r0, int64_t r1, int max_taps, void* scratch);

// Both axes unresampled (in_size == resized: one tap of weight 1): out = pixel * scale + shift, padding = shift.
// Rows [r0, r1) of one frame; x0 = the input column of output column j_lo; stream as HorizontalFirst's.
void identity_band(const uint8_t* frame, int64_t width, int64_t size, const int32_t* row_start,
                   const int32_t* row_count, int64_t x0, int64_t j_lo, int64_t j_hi, const float* scale,
                   const float* shift, float* out, int64_t r0, int64_t r1, bool stream);

}  // namespace avx512
}  // namespace vlmreward
