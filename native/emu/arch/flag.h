// Emulator side of cuda/arch/flag.cuh: releases and waits go to the cooperative launch's board
// (runtime.cpp's GridBoard), which sleeps the waiting block until a release reaches its target and
// records what each acquire orders for the hazard checker (hazards.cpp).
#pragma once

#include "emu/cuda_emu.h"

namespace seqk {
namespace arch {

__device__ inline void flag_release_add(unsigned* word, unsigned value) { ::seqk_emu::flag_release_add(word, value); }

__device__ inline void flag_wait_geq(const unsigned* word, unsigned target, SEQK_EMU_SITE) {
    ::seqk_emu::flag_wait_geq(word, target, SEQK_EMU_SITE_VALUE);
}

}  // namespace arch
}  // namespace seqk
