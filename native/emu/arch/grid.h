// Emulator side of cuda/arch/grid.cuh: the cooperative launch's grid barrier (runtime.cpp).
#pragma once

#include "emu/cuda_emu.h"

namespace seqk {
namespace arch {

__device__ inline void grid_sync(SEQK_EMU_SITE) { ::seqk_emu::grid_sync(SEQK_EMU_SITE_VALUE); }

}  // namespace arch
}  // namespace seqk
