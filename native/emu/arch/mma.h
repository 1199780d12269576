// Emulator side of cuda/arch/mma.cuh. Each primitive is one warp rendezvous: every lane posts its
// fragment (or row address), the full matrices are gathered by the documented lane layouts
// (see cuda/arch/mma.cuh), and each lane takes back its own part of the result.
#pragma once

#include "emu/cuda_emu.h"

namespace seqk {
namespace arch {
namespace emu_detail {

inline float f16(uint16_t bits) { return __half2float(__half{bits}); }
inline float bf16(uint16_t bits) { return __bfloat162float(__nv_bfloat16{bits}); }

/** A lane's A, B and C fragments, exchanged together. */
struct MmaOperands {
    uint32_t a[4];
    uint32_t b[2];
    float c[4];
};

/** Every lane posts its fragments; each receives all 32 lanes' (one warp rendezvous). */
inline void exchange(const uint32_t a[4], const uint32_t b[2], const float c[4], MmaOperands all[32], ::seqk_emu::Site site) {
    MmaOperands mine;
    std::memcpy(mine.a, a, sizeof mine.a);
    std::memcpy(mine.b, b, sizeof mine.b);
    std::memcpy(mine.c, c, sizeof mine.c);
    ::seqk_emu::warp_exchange_wide(0xffffffffu, &mine, sizeof mine, all, site);
}

/**
 * This lane's part of D = A B + C, in the C/D fragment layout: rows g and g + 8 (Arows[0], [1]),
 * columns 2t and 2t + 1 (Bcols[.][0], [1]), each sum in k order from the lane's own C element.
 */
template <int K>
inline void take_result(float d[4], const float (&Arows)[2][K], const float (&Bcols)[K][2], const float c[4]) {
    for (unsigned i = 0; i < 4; i++) {
        float s = c[i];
        for (int k = 0; k < K; k++) {
            s += Arows[i / 2][k] * Bcols[k][i & 1];
        }
        d[i] = s;
    }
}

/**
 * A 16-bit m16n8k16: a lane converts only the rows and columns its four outputs read, from the
 * lanes that hold them (row r of A: lanes 4(r mod 8) .. +3; column n of B: lanes 4n .. +3).
 */
template <float (*Load)(uint16_t)>
inline void mma_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4], ::seqk_emu::Site site) {
    MmaOperands all[32];
    exchange(a, b, c, all, site);
    unsigned lane = ::seqk_emu::lane_id();
    unsigned g = lane / 4, t = lane % 4;
    float Arows[2][16], Bcols[16][2];
    for (unsigned q = 0; q < 4; q++) {
        const MmaOperands& holder = all[4 * g + q];
        for (unsigned i = 0; i < 8; i++) {
            uint16_t bits = static_cast<uint16_t>(holder.a[i / 2] >> (16 * (i & 1)));
            unsigned half = (i < 2 || (i >= 4 && i < 6)) ? 0 : 1;  // row g or g + 8
            Arows[half][2 * q + (i & 1) + (i >= 4 ? 8 : 0)] = Load(bits);
        }
    }
    for (unsigned j = 0; j < 2; j++) {
        for (unsigned q = 0; q < 4; q++) {
            const MmaOperands& holder = all[4 * (2 * t + j) + q];
            for (unsigned i = 0; i < 4; i++) {
                uint16_t bits = static_cast<uint16_t>(holder.b[i / 2] >> (16 * (i & 1)));
                Bcols[2 * q + (i & 1) + (i >= 2 ? 8 : 0)][j] = Load(bits);
            }
        }
    }
    take_result(d, Arows, Bcols, all[lane].c);  // the exchanged copy: d may be c
}

/** fp32 bits rounded to tf32 (10 mantissa bits), to nearest with ties away from zero; NaN and inf kept. */
inline uint32_t tf32_round(uint32_t bits) {
    if ((bits & 0x7f800000u) == 0x7f800000u) {
        return bits;
    }
    return (bits + 0x1000u) & 0xffffe000u;
}

/** The value the tensor core multiplies: the low 13 mantissa bits are ignored. */
inline float tf32_value(uint32_t bits) {
    uint32_t kept = bits & 0xffffe000u;
    float f;
    std::memcpy(&f, &kept, sizeof f);
    return f;
}

inline void mma_m16n8k8_tf32(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4], ::seqk_emu::Site site) {
    MmaOperands all[32];
    exchange(a, b, c, all, site);
    unsigned lane = ::seqk_emu::lane_id();
    unsigned g = lane / 4, t = lane % 4;
    float Arows[2][8], Bcols[8][2];
    for (unsigned q = 0; q < 4; q++) {
        const MmaOperands& holder = all[4 * g + q];
        for (unsigned i = 0; i < 4; i++) {
            Arows[i % 2][i < 2 ? q : q + 4] = tf32_value(holder.a[i]);  // a[1], a[3]: row g + 8
        }
        for (unsigned j = 0; j < 2; j++) {
            const MmaOperands& column = all[4 * (2 * t + j) + q];
            Bcols[q][j] = tf32_value(column.b[0]);
            Bcols[q + 4][j] = tf32_value(column.b[1]);
        }
    }
    take_result(d, Arows, Bcols, all[lane].c);  // the exchanged copy: d may be c
}

/** Loads `count` 8x8 b16 matrices from the row addresses posted by lanes 0..8*count-1. */
inline void ldmatrix(uint32_t* r, unsigned count, bool trans, const void* shared_row, ::seqk_emu::Site site) {
    if (reinterpret_cast<uintptr_t>(shared_row) % 16 != 0) {
        ::seqk_emu::kernel_error("ldmatrix row addresses must be 16-byte aligned");
    }
    const void* rows[32];
    ::seqk_emu::warp_exchange_wide(0xffffffffu, &shared_row, sizeof shared_row, rows, site);
    unsigned lane = ::seqk_emu::lane_id();
    if (lane == 0) {
        ::seqk_emu::count_ldmatrix(rows, count);
    }
    for (unsigned j = 0; j < count; j++) {
        uint16_t e[2];
        for (unsigned h = 0; h < 2; h++) {
            unsigned row = trans ? 2 * (lane % 4) + h : lane / 4;
            unsigned col = trans ? lane / 4 : 2 * (lane % 4) + h;
            e[h] = static_cast<const uint16_t*>(rows[8 * j + row])[col];
        }
        r[j] = static_cast<uint32_t>(e[0]) | static_cast<uint32_t>(e[1]) << 16;
    }
}

}  // namespace emu_detail

__device__ inline void mma_m16n8k16_f16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4], SEQK_EMU_SITE) {
    emu_detail::mma_m16n8k16<emu_detail::f16>(d, a, b, c, SEQK_EMU_SITE_VALUE);
}

__device__ inline void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4], SEQK_EMU_SITE) {
    emu_detail::mma_m16n8k16<emu_detail::bf16>(d, a, b, c, SEQK_EMU_SITE_VALUE);
}

__device__ inline uint32_t to_tf32(float x) {
    uint32_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    return emu_detail::tf32_round(bits);
}

__device__ inline void mma_m16n8k8_tf32(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4], SEQK_EMU_SITE) {
    emu_detail::mma_m16n8k8_tf32(d, a, b, c, SEQK_EMU_SITE_VALUE);
}

/** The emulator's SharedAddr (cuda/arch/mma.cuh): the pointer itself, advanced in bytes. */
using SharedAddr = const unsigned char*;

__device__ inline SharedAddr shared_addr(const void* p) { return static_cast<SharedAddr>(p); }

template <int OFFSET>
__device__ inline void ldmatrix_x4(uint32_t r[4], SharedAddr row, SEQK_EMU_SITE) {
    emu_detail::ldmatrix(r, 4, false, row + OFFSET, SEQK_EMU_SITE_VALUE);
}

template <int OFFSET>
__device__ inline void ldmatrix_x4_trans(uint32_t r[4], SharedAddr row, SEQK_EMU_SITE) {
    emu_detail::ldmatrix(r, 4, true, row + OFFSET, SEQK_EMU_SITE_VALUE);
}

__device__ inline void ldmatrix_x4(uint32_t r[4], const void* shared_row, SEQK_EMU_SITE) {
    emu_detail::ldmatrix(r, 4, false, shared_row, SEQK_EMU_SITE_VALUE);
}

__device__ inline void ldmatrix_x2_trans(uint32_t r[2], const void* shared_row, SEQK_EMU_SITE) {
    emu_detail::ldmatrix(r, 2, true, shared_row, SEQK_EMU_SITE_VALUE);
}

__device__ inline void ldmatrix_x4_trans(uint32_t r[4], const void* shared_row, SEQK_EMU_SITE) {
    emu_detail::ldmatrix(r, 4, true, shared_row, SEQK_EMU_SITE_VALUE);
}

}  // namespace arch
}  // namespace seqk
