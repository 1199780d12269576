// Grid-wide synchronization for cooperative launches (Driver.launchCooperative): every thread of
// every block arrives before any continues. The emulator's side is native/emu/arch/grid.h.
#pragma once

#include "../seqk.cuh"

#ifdef SEQK_EMU
#include "emu/arch/grid.h"
#else
#include <cooperative_groups.h>
namespace seqk {
namespace arch {

__device__ __forceinline__ void grid_sync() { cooperative_groups::this_grid().sync(); }

}  // namespace arch
}  // namespace seqk
#endif
