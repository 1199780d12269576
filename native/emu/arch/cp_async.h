// Emulator side of cuda/arch/cp_async.cuh: copies are queued per thread and land at the wait,
// or at the issue under the schedule that says so (runtime.cpp); either way the destination is
// off limits from the issue to the wait (hazards.cpp).
#pragma once

#include "emu/cuda_emu.h"

namespace seqk {
namespace arch {

__device__ inline void cp_async_16(void* shared_dst, const void* global_src) {
    ::seqk_emu::cp_async(shared_dst, global_src, 16, 16);
}

__device__ inline void cp_async_4(void* shared_dst, const void* global_src) {
    ::seqk_emu::cp_async(shared_dst, global_src, 4, 4);
}

__device__ inline void cp_async_16_or_zeros(void* shared_dst, const void* global_src, bool copy) {
    ::seqk_emu::cp_async(shared_dst, global_src, 16, copy ? 16 : 0);
}

__device__ inline void cp_async_commit() { ::seqk_emu::cp_async_commit(); }

template <int N>
__device__ inline void cp_async_wait() {
    ::seqk_emu::cp_async_wait(N);
}

}  // namespace arch
}  // namespace seqk
