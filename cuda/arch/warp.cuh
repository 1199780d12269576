// Warp-level primitives: shuffles, votes, __syncwarp. Kernels call these, never the intrinsics:
// the emulator implements the same functions in native/emu/arch/warp.h.
// All take the participating-lane mask first; width is always the whole warp (32).
#pragma once

#include "../seqk.cuh"

#ifdef SEQK_EMU
#include "emu/arch/warp.h"
#else
namespace seqk {
namespace arch {

template <typename T>
__device__ __forceinline__ T shfl(unsigned mask, T v, int src_lane) { return __shfl_sync(mask, v, src_lane); }
template <typename T>
__device__ __forceinline__ T shfl_xor(unsigned mask, T v, int lane_mask) { return __shfl_xor_sync(mask, v, lane_mask); }
template <typename T>
__device__ __forceinline__ T shfl_down(unsigned mask, T v, unsigned delta) { return __shfl_down_sync(mask, v, delta); }
template <typename T>
__device__ __forceinline__ T shfl_up(unsigned mask, T v, unsigned delta) { return __shfl_up_sync(mask, v, delta); }
__device__ __forceinline__ unsigned ballot(unsigned mask, bool p) { return __ballot_sync(mask, p); }
__device__ __forceinline__ bool any(unsigned mask, bool p) { return __any_sync(mask, p); }
__device__ __forceinline__ bool all(unsigned mask, bool p) { return __all_sync(mask, p); }
__device__ __forceinline__ void syncwarp(unsigned mask) { __syncwarp(mask); }
__device__ __forceinline__ unsigned lane_id() {
    unsigned lane;
    asm volatile("mov.u32 %0, %%laneid;" : "=r"(lane));
    return lane;
}

}  // namespace arch
}  // namespace seqk
#endif
