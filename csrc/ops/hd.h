// VLM_HD marks arithmetic that both the CPU build and nvcc compile (the *_math.h headers).
//
// Bit-exact parity between the two builds rests on the rounded-operation helpers below: on the device they
// are the explicitly rounded intrinsics (__fmul_rn, __fadd_rn, ...), which nvcc never contracts into FMA;
// on the host they are plain IEEE operations, and the host build passes -ffp-contract=off (CMakeLists.txt)
// so that gcc/clang do not contract them either. Every float/double operation of the shared arithmetic goes
// through them.
#pragma once

#if defined(__CUDACC__)
#define VLM_HD __host__ __device__ __forceinline__
#else
#define VLM_HD inline
#endif

namespace vlmreward {

#if defined(__CUDA_ARCH__)
VLM_HD float mul_rn(float a, float b) { return __fmul_rn(a, b); }
VLM_HD float add_rn(float a, float b) { return __fadd_rn(a, b); }
VLM_HD double mul_rn(double a, double b) { return __dmul_rn(a, b); }
VLM_HD double add_rn(double a, double b) { return __dadd_rn(a, b); }
VLM_HD double div_rn(double a, double b) { return __ddiv_rn(a, b); }
#else
VLM_HD float mul_rn(float a, float b) { return a * b; }
VLM_HD float add_rn(float a, float b) { return a + b; }
VLM_HD double mul_rn(double a, double b) { return a * b; }
VLM_HD double add_rn(double a, double b) { return a + b; }
VLM_HD double div_rn(double a, double b) { return a / b; }
#endif

}  // namespace vlmreward
