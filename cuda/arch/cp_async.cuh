// Asynchronous global -> shared copies (cp.async, sm_80+): issue, commit a group, wait until at
// most N groups are in flight. The emulator (native/emu/arch/cp_async.h) performs a thread's
// copies only at the wait, so shared memory read too early is still poisoned. The sm_75 build
// copies synchronously, which the ordering rules allow.
#pragma once

#include "../seqk.cuh"

#ifdef SEQK_EMU
#include "emu/arch/cp_async.h"
#else
namespace seqk {
namespace arch {

/** Copies 16 bytes; both addresses 16-byte aligned. */
__device__ __forceinline__ void cp_async_16(void* shared_dst, const void* global_src) {
#if __CUDA_ARCH__ >= 800
    unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(shared_dst));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(global_src));
#else
    *reinterpret_cast<uint4*>(shared_dst) = *reinterpret_cast<const uint4*>(global_src);
#endif
}

/** Copies 4 bytes (cp.async.ca: the only form for fewer than 16); both addresses 4-byte aligned. */
__device__ __forceinline__ void cp_async_4(void* shared_dst, const void* global_src) {
#if __CUDA_ARCH__ >= 800
    unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(shared_dst));
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(dst), "l"(global_src));
#else
    *reinterpret_cast<unsigned*>(shared_dst) = *reinterpret_cast<const unsigned*>(global_src);
#endif
}

/**
 * Copies 16 bytes when `copy`, else writes 16 zeros (cp.async's src-size 0: nothing is read; the
 * source must still be a valid address, so callers pass a row that exists). One instruction
 * either way, no branch: a tile's rows past the tensor load as zeros.
 */
__device__ __forceinline__ void cp_async_16_or_zeros(void* shared_dst, const void* global_src, bool copy) {
#if __CUDA_ARCH__ >= 800
    unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(shared_dst));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(global_src), "r"(copy ? 16 : 0));
#else
    if (copy) {
        *reinterpret_cast<uint4*>(shared_dst) = *reinterpret_cast<const uint4*>(global_src);
    } else {
        *reinterpret_cast<uint4*>(shared_dst) = make_uint4(0, 0, 0, 0);
    }
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;");
#endif
}

template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;" ::"n"(N));
#endif
}

}  // namespace arch
}  // namespace seqk
#endif
