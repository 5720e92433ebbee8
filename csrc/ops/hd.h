// VLM_HD marks arithmetic that both the CPU build and nvcc compile (the *_math.h headers).
#pragma once

#if defined(__CUDACC__)
#define VLM_HD __host__ __device__ __forceinline__
#else
#define VLM_HD inline
#endif
