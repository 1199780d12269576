// The one device header every kernel file includes. It makes the same source build with nvcc
// (GPU) and with g++ -DSEQK_EMU (the SIMT emulator in native/), and holds the storage-type
// conversions: kernels load T (float, __half, __nv_bfloat16), compute in float, store T.
#pragma once

#ifdef SEQK_EMU
#include "emu/cuda_emu.h"
// Registers an extern "C" kernel with the emulator under its name.
#define SEQK_KERNEL(name) SEQK_EMU_REGISTER(name)
// A pointer to the launch's dynamic shared memory, typed.
#define SEQK_DYNAMIC_SHARED(type, name) type* name = static_cast<type*>(::seqk_emu::dynamic_shared())
// A static shared array `type name[count]`: the block's own copy, in the arena the emulator watches.
#define SEQK_SHARED_ARRAY(type, name, count)                                                                   \
    static const char seqk_shared_site_##name = 0;                                                             \
    type* const name = static_cast<type*>(::seqk_emu::static_shared(&seqk_shared_site_##name,                 \
                                                                    static_cast<unsigned>(sizeof(type) * (count)), \
                                                                    alignof(type) < 16 ? 16 : alignof(type)))
// Loops over register arrays must be unrolled on the GPU (or the arrays go to local memory); g++ needs no hint.
#define SEQK_UNROLL
// A loop kept rolled on the GPU (a rare path whose unrolled copies would cost registers); g++ needs no hint.
#define SEQK_NO_UNROLL
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define SEQK_KERNEL(name) static_assert(true, "")
#define SEQK_DYNAMIC_SHARED(type, name)             \
    extern __shared__ unsigned char seqk_dynamic_smem_[]; \
    type* name = reinterpret_cast<type*>(seqk_dynamic_smem_)
#define SEQK_SHARED_ARRAY(type, name, count) alignas(16) __shared__ type name[count]
#define SEQK_UNROLL _Pragma("unroll")
#define SEQK_NO_UNROLL _Pragma("unroll 1")
#endif

#include <cstdint>
#include <type_traits>
#include <utility>

namespace seqk {

/** Sixteen bytes, moved as one access (both addresses 16-byte aligned). */
struct alignas(16) Chunk16 {
    uint32_t word[4];
};

template <typename F, int... I>
__device__ __forceinline__ void static_for_each(F& f, std::integer_sequence<int, I...>) {
    (f(std::integral_constant<int, I>{}), ...);
}

/**
 * f(std::integral_constant<int, 0>{}) ... f(std::integral_constant<int, N - 1>{}): an unrolled
 * loop whose index is a constant expression in the body (decltype(i)::value), so it can be a
 * template argument, such as an instruction's immediate offset.
 */
template <int N, typename F>
__device__ __forceinline__ void static_for(F&& f) {
    static_for_each(f, std::make_integer_sequence<int, N>{});
}

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

}  // namespace seqk
