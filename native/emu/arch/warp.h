// Emulator side of cuda/arch/warp.cuh: every primitive is one warp rendezvous
// (seqk_emu::warp_exchange) in which each lane in the mask posts a value and reads all 32.
// Reading a lane outside the mask is a kernel error, as it is undefined on a GPU.
#pragma once

#include "emu/cuda_emu.h"

namespace seqk {
namespace arch {

__device__ inline unsigned lane_id() { return ::seqk_emu::lane_id(); }

template <typename T>
__device__ T read_lane(unsigned mask, const uint64_t* all, unsigned src, T own) {
    if (src >= 32) {
        return own;
    }
    if (!(mask >> src & 1u)) {
        ::seqk_emu::kernel_error("a shuffle reads a lane that is not in its mask");
    }
    return ::seqk_emu::from_bits<T>(all[src]);
}

template <typename T>
__device__ T shfl(unsigned mask, T v, int src_lane, SEQK_EMU_SITE) {
    uint64_t all[32];
    ::seqk_emu::warp_exchange(mask, ::seqk_emu::to_bits(v), all, SEQK_EMU_SITE_VALUE);
    return read_lane(mask, all, static_cast<unsigned>(src_lane) & 31u, v);
}

template <typename T>
__device__ T shfl_xor(unsigned mask, T v, int lane_mask, SEQK_EMU_SITE) {
    uint64_t all[32];
    ::seqk_emu::warp_exchange(mask, ::seqk_emu::to_bits(v), all, SEQK_EMU_SITE_VALUE);
    return read_lane(mask, all, lane_id() ^ static_cast<unsigned>(lane_mask), v);
}

template <typename T>
__device__ T shfl_down(unsigned mask, T v, unsigned delta, SEQK_EMU_SITE) {
    uint64_t all[32];
    ::seqk_emu::warp_exchange(mask, ::seqk_emu::to_bits(v), all, SEQK_EMU_SITE_VALUE);
    unsigned src = lane_id() + delta;
    return src < 32 ? read_lane(mask, all, src, v) : v;
}

template <typename T>
__device__ T shfl_up(unsigned mask, T v, unsigned delta, SEQK_EMU_SITE) {
    uint64_t all[32];
    ::seqk_emu::warp_exchange(mask, ::seqk_emu::to_bits(v), all, SEQK_EMU_SITE_VALUE);
    return lane_id() >= delta ? read_lane(mask, all, lane_id() - delta, v) : v;
}

__device__ inline unsigned ballot(unsigned mask, bool p, SEQK_EMU_SITE) {
    uint64_t all[32];
    ::seqk_emu::warp_exchange(mask, p ? 1 : 0, all, SEQK_EMU_SITE_VALUE);
    unsigned bits = 0;
    for (unsigned l = 0; l < 32; l++) {
        bits |= (mask >> l & 1u) && all[l] ? 1u << l : 0u;
    }
    return bits;
}

__device__ inline bool any(unsigned mask, bool p, SEQK_EMU_SITE) { return ballot(mask, p, site_file, site_line) != 0; }
__device__ inline bool all(unsigned mask, bool p, SEQK_EMU_SITE) { return ballot(mask, p, site_file, site_line) == mask; }
__device__ inline void syncwarp(unsigned mask, SEQK_EMU_SITE) { ::seqk_emu::syncwarp(mask, SEQK_EMU_SITE_VALUE); }

}  // namespace arch
}  // namespace seqk
