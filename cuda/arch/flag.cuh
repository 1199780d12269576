// Flags between the blocks of a cooperative launch: one thread of a block releases its block's
// writes by adding to a counter in global memory (after a __syncthreads), and one thread of
// another block waits, with acquire semantics, until the counter reaches a target (then a
// __syncthreads). That is a grid barrier when every block adds 1 per round and waits for the
// number of blocks times the round: one release and one acquiring spin per block, without the
// separate fences of cooperative_groups' grid sync (whether that is faster, a GPU has to show).
// GPU scope: the counter is read and written through L2. Comparisons are wrap-safe (a signed
// 32-bit difference), so a counter may pass 2^32 as long as it never runs 2^31 or more ahead of a
// target some thread still waits for. The emulator's side is native/emu/arch/flag.h (its board
// orders the blocks and tells the hazard checker what each acquire makes visible).
#pragma once

#include "../seqk.cuh"

#ifdef SEQK_EMU
#include "emu/arch/flag.h"
#else
namespace seqk {
namespace arch {

/** *word += value with release semantics at GPU scope: the calling thread's earlier writes (and what it has seen) first. */
__device__ __forceinline__ void flag_release_add(unsigned* word, unsigned value) {
    asm volatile("red.release.gpu.global.add.u32 [%0], %1;" ::"l"(word), "r"(value) : "memory");
}

namespace detail {  // flag_wait_geq's parts; the emulator's side has only the two calls above and below

/** *word with acquire semantics at GPU scope: the calling thread's later reads see what the releases it reads published. */
__device__ __forceinline__ unsigned load_acquire(const unsigned* word) {
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(word) : "memory");
    return v;
}

/** Whether a flag holding `value` has reached `target` (wrap-safe: the signed difference). */
__device__ __forceinline__ bool reached(unsigned value, unsigned target) { return static_cast<int>(value - target) >= 0; }

}  // namespace detail

/**
 * Spins until *word has reached target (detail::reached), backing off with __nanosleep (32 ns
 * doubling to 256 ns) so that the waiting threads of many blocks do not flood L2 with loads while
 * the last block finishes its step.
 */
__device__ __forceinline__ void flag_wait_geq(const unsigned* word, unsigned target) {
    unsigned pause = 32;
    while (!detail::reached(detail::load_acquire(word), target)) {
        __nanosleep(pause);
        pause = pause < 256 ? pause * 2 : 256;
    }
}

}  // namespace arch
}  // namespace seqk
#endif
