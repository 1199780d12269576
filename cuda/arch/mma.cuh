// Tensor-core primitives for one warp: mma.sync m16n8k16 (f16/bf16 in, f32 accumulate) and
// ldmatrix. Kernels call these, never the instructions; the emulator implements the same
// functions in native/emu/arch/mma.h. Both need sm_80+; the sm_75 build traps if they are reached.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"),
// with g = lane / 4 and t = lane % 4; a 32-bit register holds two 16-bit elements, lower index
// in the low half:
//   A 16x16 row-major, a[0..3] = {a0a1, a2a3, a4a5, a6a7}:
//     a0,a1: (g,     2t..2t+1)   a2,a3: (g + 8, 2t..2t+1)
//     a4,a5: (g, 2t+8..2t+9)     a6,a7: (g + 8, 2t+8..2t+9)
//   B 16x8 (k x n), b[0..1] = {b0b1, b2b3}:  b0,b1: (2t..2t+1, g)   b2,b3: (2t+8..2t+9, g)
//   C, D 16x8 f32, c[0..3]:  c0,c1: (g, 2t..2t+1)   c2,c3: (g + 8, 2t..2t+1)
// mma.m16n8k8 .tf32 (fp32 values with 10 mantissa bits; to_tf32 rounds to nearest, ties away):
//   A 16x8 row-major, a[0..3]:  a0: (g, t)   a1: (g + 8, t)   a2: (g, t + 4)   a3: (g + 8, t + 4)
//   B 8x8 (k x n), b[0..1]:     b0: (t, g)   b1: (t + 4, g)
//   C, D as for m16n8k16.
// ldmatrix .m8n8 .b16: lanes 8j..8j+7 give the row addresses (16-byte aligned) of matrix j;
// register j of lane l receives row l/4, columns 2(l%4)..+1 of matrix j (.trans: the transposed
// matrix, i.e. rows 2(l%4)..+1 of column l/4).
#pragma once

#include <stdint.h>

#include "../seqk.cuh"

#ifdef SEQK_EMU
#include "emu/arch/mma.h"
#else
namespace seqk {
namespace arch {

__device__ __forceinline__ void mma_m16n8k16_f16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
#if __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
                   "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#else
    asm volatile("trap;");
#endif
}

__device__ __forceinline__ void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
#if __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
                   "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#else
    asm volatile("trap;");
#endif
}

__device__ __forceinline__ uint32_t to_tf32(float x) {
#if __CUDA_ARCH__ >= 800
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
#else
    asm volatile("trap;");
    return 0;
#endif
}

__device__ __forceinline__ void mma_m16n8k8_tf32(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
#if __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
                   "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#else
    asm volatile("trap;");
#endif
}

/**
 * A shared-memory address as ldmatrix takes it: the 32-bit shared-window address, converted from
 * a pointer once (shared_addr) and then advanced by byte offsets, so a tile's row addresses cost
 * one add each instead of a generic-to-shared conversion. The emulator keeps the pointer.
 */
using SharedAddr = uint32_t;

__device__ __forceinline__ SharedAddr shared_addr(const void* p) {
    return static_cast<SharedAddr>(__cvta_generic_to_shared(p));
}

/** ldmatrix_x4 with the row address as a SharedAddr plus OFFSET bytes (an immediate: no add). */
template <int OFFSET>
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], SharedAddr row) {
#if __CUDA_ARCH__ >= 800
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4+%5];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(row), "n"(OFFSET));
#else
    asm volatile("trap;");
#endif
}

/** ldmatrix_x4_trans with the row address as a SharedAddr plus OFFSET bytes. */
template <int OFFSET>
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], SharedAddr row) {
#if __CUDA_ARCH__ >= 800
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4+%5];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(row), "n"(OFFSET));
#else
    asm volatile("trap;");
#endif
}

/** Four 8x8 b16 matrices; lane l passes the address of row l%8 of matrix l/8. */
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void* shared_row) {
    ldmatrix_x4<0>(r, shared_addr(shared_row));
}

/** Two 8x8 b16 matrices, transposed; lanes 0..15 pass row addresses (lanes 16..31: any valid address). */
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t r[2], const void* shared_row) {
#if __CUDA_ARCH__ >= 800
    unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(shared_row));
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
#else
    asm volatile("trap;");
#endif
}

/**
 * Four 8x8 b16 matrices, transposed: lanes 8j..8j+7 pass matrix j's row addresses. Two k-steps'
 * worth of a 16x16 tile's B fragments (columns n and n + 8) in one instruction.
 */
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void* shared_row) {
    ldmatrix_x4_trans<0>(r, shared_addr(shared_row));
}

}  // namespace arch
}  // namespace seqk
#endif

namespace seqk {
namespace arch {

/** mma_m16n8k16 of the 16-bit type of the tag (d += a b): one call site for kernels templated on the storage type. */
__device__ __forceinline__ void mma_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2], __half) {
    mma_m16n8k16_f16(d, a, b, d);
}

__device__ __forceinline__ void mma_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2], __nv_bfloat16) {
    mma_m16n8k16_bf16(d, a, b, d);
}

}  // namespace arch
}  // namespace seqk
