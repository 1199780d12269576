// Self-test kernels: one per emulated feature, checked from Java (EmulatorFeatureTest) against
// plain expectations, plus kernels with deliberate bugs that the emulator's checks must report.
// They build for the GPU too, so the same tests can run there.
//
// Every kernel: one block of blockDim.x threads unless its comment says otherwise.
#include "seqk.cuh"
#include "arch/warp.cuh"
#ifdef SEQK_EMU
#include <new>
#endif

// Barriers and dynamic shared memory: out[b*n + t] = in[b*n + (n-1-t)] for a block of n threads.
// Each thread writes one shared slot, waits at the barrier, reads its mirror's slot.
extern "C" __global__ void selftest_reverse_f32(const float* in, float* out) {
    SEQK_DYNAMIC_SHARED(float, buf);
    int n = blockDim.x;
    int t = threadIdx.x;
    buf[t] = in[blockIdx.x * n + t];
    __syncthreads();
    out[blockIdx.x * n + t] = buf[n - 1 - t];
}
SEQK_KERNEL(selftest_reverse_f32);

// The same without the barrier: a race. The emulator runs threads in order, so thread t reads
// slot n-1-t before its owner wrote it for t < n/2, and dynamic shared memory is poisoned with
// NaN: the race shows up as NaN in the output.
extern "C" __global__ void selftest_reverse_no_barrier_f32(const float* in, float* out) {
    SEQK_DYNAMIC_SHARED(float, buf);
    int n = blockDim.x;
    int t = threadIdx.x;
    buf[t] = in[blockIdx.x * n + t];
    out[blockIdx.x * n + t] = buf[n - 1 - t];
}
SEQK_KERNEL(selftest_reverse_no_barrier_f32);

// Static shared memory and a two-level block reduction: out[blockIdx.x] = sum of the block's inputs.
// Block of up to 1024 threads; one shared slot per warp.
extern "C" __global__ void selftest_block_sum_f32(const float* in, float* out) {
    SEQK_SHARED_ARRAY(float, warp_sums, 32);
    int t = threadIdx.x;
    float v = in[blockIdx.x * blockDim.x + t];
    for (int offset = 16; offset > 0; offset >>= 1) {
        v += seqk::arch::shfl_down(0xffffffffu, v, offset);
    }
    if (seqk::arch::lane_id() == 0) {
        warp_sums[t / 32] = v;
    }
    __syncthreads();
    if (t == 0) {
        float s = 0;
        for (int w = 0; w < (int)(blockDim.x + 31) / 32; w++) {
            s += warp_sums[w];
        }
        out[blockIdx.x] = s;
    }
}
SEQK_KERNEL(selftest_block_sum_f32);

// Shuffles and votes, one warp: for lane l with value v = values[l], writes 8 results per lane:
// shfl(v, 31-l), shfl_xor(v, 5), shfl_down(v, 3), shfl_up(v, 2), ballot(v odd), any(v > 90),
// all(v >= 0), and a shfl_xor over the 16-lane mask 0x0000ffff (lanes >= 16 write -1).
extern "C" __global__ void selftest_warp_ops_i32(const int* values, int* out) {
    unsigned l = seqk::arch::lane_id();
    int v = values[l];
    int* o = out + l * 8;
    o[0] = seqk::arch::shfl(0xffffffffu, v, 31 - (int)l);
    o[1] = seqk::arch::shfl_xor(0xffffffffu, v, 5);
    o[2] = seqk::arch::shfl_down(0xffffffffu, v, 3u);
    o[3] = seqk::arch::shfl_up(0xffffffffu, v, 2u);
    o[4] = (int)seqk::arch::ballot(0xffffffffu, v & 1);
    o[5] = seqk::arch::any(0xffffffffu, v > 90);
    o[6] = seqk::arch::all(0xffffffffu, v >= 0);
    o[7] = l < 16 ? seqk::arch::shfl_xor(0x0000ffffu, v, 1) : -1;
}
SEQK_KERNEL(selftest_warp_ops_i32);

// Atomics: every thread of every block adds 1 to *counter.
extern "C" __global__ void selftest_atomic_count(int* counter) {
    atomicAdd(counter, 1);
}
SEQK_KERNEL(selftest_atomic_count);

// Bug: threads below 16 leave before a barrier the others wait at. The emulator reports it.
extern "C" __global__ void selftest_divergent_barrier(float* out) {
    if (threadIdx.x < 16) {
        return;
    }
    __syncthreads();
    out[threadIdx.x] = 1.0f;
}
SEQK_KERNEL(selftest_divergent_barrier);

// Bug: thread `bad` of block `bad_block` writes one element past the end of out[n].
extern "C" __global__ void selftest_write_past_end(float* out, int n, int bad_block, int bad) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        out[i] = 1.0f;
    }
    if ((int)blockIdx.x == bad_block && (int)threadIdx.x == bad) {
        out[n] = 2.0f;
    }
}
SEQK_KERNEL(selftest_write_past_end);

// A store the emulator's access checks do not see, as they would not see one made by code built
// without their hooks: only the guard zones around each device allocation can show its damage.
#ifdef SEQK_EMU
__attribute__((noinline, no_sanitize("thread"))) static void store_unseen(float* p, float v) { *p = v; }
#else
__device__ __noinline__ static void store_unseen(float* p, float v) { *p = v; }
#endif

// Bug: thread 0 writes out[at] (at < 0 or at >= the allocation's length) where the checks do not see it.
extern "C" __global__ void selftest_unseen_write_outside(float* out, int at) {
    if (threadIdx.x == 0) {
        store_unseen(out + at, 3.0f);
    }
}
SEQK_KERNEL(selftest_unseen_write_outside);

// Not a kernel bug: the emulator's own failure inside a thread (thread 2 throws bad_alloc, as an
// allocation of the checks' bookkeeping would under memory pressure) must end the launch with an
// error that says so, not the process. On a GPU every thread just writes its 1.
extern "C" __global__ void selftest_exception_in_a_thread(float* out) {
#ifdef SEQK_EMU
    if (threadIdx.x == 2) {
        throw std::bad_alloc();
    }
#endif
    out[threadIdx.x] = 1.0f;
}
SEQK_KERNEL(selftest_exception_in_a_thread);

// Bug: thread 3 writes one float past the end of the dynamic shared memory (blockDim.x floats).
extern "C" __global__ void selftest_shared_overflow(float* out) {
    SEQK_DYNAMIC_SHARED(float, buf);
    buf[threadIdx.x] = 0.0f;
    if (threadIdx.x == 3) {
        buf[blockDim.x] = 1.0f;
    }
    out[threadIdx.x] = buf[threadIdx.x];  // each thread reads its own slot: no barrier is needed
}
SEQK_KERNEL(selftest_shared_overflow);

// Bug: lanes 8..31 exit while lanes 0..7 shuffle over the full warp.
extern "C" __global__ void selftest_shuffle_with_exited_lanes(float* out) {
    unsigned l = seqk::arch::lane_id();
    if (l >= 8) {
        return;
    }
    out[l] = seqk::arch::shfl_xor(0xffffffffu, 1.0f, 1);
}
SEQK_KERNEL(selftest_shuffle_with_exited_lanes);

// ---- tensor cores, cp.async, grid sync, flags

#include "arch/cp_async.cuh"
#include "arch/flag.cuh"
#include "arch/grid.cuh"
#include "arch/mma.cuh"

namespace {

__device__ __forceinline__ uint32_t pack2(const uint16_t* m, int i0, int i1) {
    return static_cast<uint32_t>(m[i0]) | static_cast<uint32_t>(m[i1]) << 16;
}

// One warp: D = A B + C with fragments gathered straight from global memory by the documented
// layouts (cuda/arch/mma.cuh). A [16][16], B [16][8] (k x n), C and D [16][8], all row-major;
// A and B hold 16-bit element bits.
template <bool Bf16>
__device__ void mma_by_layout(const uint16_t* A, const uint16_t* B, const float* C, float* D) {
    unsigned lane = seqk::arch::lane_id();
    int g = lane / 4, t = lane % 4;
    uint32_t a[4] = {pack2(A, g * 16 + 2 * t, g * 16 + 2 * t + 1), pack2(A, (g + 8) * 16 + 2 * t, (g + 8) * 16 + 2 * t + 1),
                     pack2(A, g * 16 + 2 * t + 8, g * 16 + 2 * t + 9),
                     pack2(A, (g + 8) * 16 + 2 * t + 8, (g + 8) * 16 + 2 * t + 9)};
    uint32_t b[2] = {pack2(B, (2 * t) * 8 + g, (2 * t + 1) * 8 + g), pack2(B, (2 * t + 8) * 8 + g, (2 * t + 9) * 8 + g)};
    float c[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t], C[(g + 8) * 8 + 2 * t + 1]};
    float d[4];
    if (Bf16) {
        seqk::arch::mma_m16n8k16_bf16(d, a, b, c);
    } else {
        seqk::arch::mma_m16n8k16_f16(d, a, b, c);
    }
    D[g * 8 + 2 * t] = d[0];
    D[g * 8 + 2 * t + 1] = d[1];
    D[(g + 8) * 8 + 2 * t] = d[2];
    D[(g + 8) * 8 + 2 * t + 1] = d[3];
}

}  // namespace

extern "C" __global__ void selftest_mma_f16(const uint16_t* A, const uint16_t* B, const float* C, float* D) {
    mma_by_layout<false>(A, B, C, D);
}
SEQK_KERNEL(selftest_mma_f16);

extern "C" __global__ void selftest_mma_bf16(const uint16_t* A, const uint16_t* B, const float* C, float* D) {
    mma_by_layout<true>(A, B, C, D);
}
SEQK_KERNEL(selftest_mma_bf16);

// One warp: D = A B + C with mma.m16n8k8.tf32, A 16x8 and B 8x8 row-major fp32 in global memory,
// each operand rounded with to_tf32 and placed by the documented tf32 fragment layout.
extern "C" __global__ void selftest_mma_tf32(const float* A, const float* B, const float* C, float* D) {
    unsigned lane = seqk::arch::lane_id();
    int g = lane / 4, t = lane % 4;
    uint32_t a[4] = {seqk::arch::to_tf32(A[g * 8 + t]), seqk::arch::to_tf32(A[(g + 8) * 8 + t]),
                     seqk::arch::to_tf32(A[g * 8 + t + 4]), seqk::arch::to_tf32(A[(g + 8) * 8 + t + 4])};
    uint32_t b[2] = {seqk::arch::to_tf32(B[t * 8 + g]), seqk::arch::to_tf32(B[(t + 4) * 8 + g])};
    float c[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t], C[(g + 8) * 8 + 2 * t + 1]};
    float d[4];
    seqk::arch::mma_m16n8k8_tf32(d, a, b, c);
    D[g * 8 + 2 * t] = d[0];
    D[g * 8 + 2 * t + 1] = d[1];
    D[(g + 8) * 8 + 2 * t] = d[2];
    D[(g + 8) * 8 + 2 * t + 1] = d[3];
}
SEQK_KERNEL(selftest_mma_tf32);

// One warp, the way a tensor-core kernel loads: A (512 bytes) and B (256 bytes) go to shared
// memory with cp.async (one 16-byte chunk per lane), then ldmatrix builds the fragments
// (x4 for A, x2.trans for B), then one mma. Same operands and result layout as above.
extern "C" __global__ void selftest_cp_async_ldmatrix_mma_f16(const uint16_t* A, const uint16_t* B, const float* C,
                                                              float* D) {
    SEQK_SHARED_ARRAY(uint16_t, sA, 16 * 16);
    SEQK_SHARED_ARRAY(uint16_t, sB, 16 * 8);
    unsigned lane = seqk::arch::lane_id();
    seqk::arch::cp_async_16(sA + lane * 8, A + lane * 8);
    if (lane < 16) {
        seqk::arch::cp_async_16(sB + lane * 8, B + lane * 8);
    }
    seqk::arch::cp_async_commit();
    seqk::arch::cp_async_wait<0>();
    seqk::arch::syncwarp(0xffffffffu);
    uint32_t a[4];
    int row = (lane % 8) + ((lane / 8) % 2) * 8;
    int col = (lane / 16) * 8;
    seqk::arch::ldmatrix_x4(a, sA + row * 16 + col);
    uint32_t b[2];
    seqk::arch::ldmatrix_x2_trans(b, sB + (lane < 16 ? lane : 0) * 8);
    int g = lane / 4, t = lane % 4;
    float c[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t], C[(g + 8) * 8 + 2 * t + 1]};
    float d[4];
    seqk::arch::mma_m16n8k16_f16(d, a, b, c);
    D[g * 8 + 2 * t] = d[0];
    D[g * 8 + 2 * t + 1] = d[1];
    D[(g + 8) * 8 + 2 * t] = d[2];
    D[(g + 8) * 8 + 2 * t + 1] = d[3];
}
SEQK_KERNEL(selftest_cp_async_ldmatrix_mma_f16);

// One warp: a 16x16 b16 matrix M (row-major, 512 bytes) into shared memory, then ldmatrix.x4.trans
// with lane l passing row l % 16 at column 8 (l / 16): matrices 0, 1 are M's left columns (rows
// 0-7, 8-15), 2, 3 its right ones. out[l * 4 + j] is lane l's register j.
extern "C" __global__ void selftest_ldmatrix_x4_trans(const uint16_t* M, uint32_t* out) {
    SEQK_SHARED_ARRAY(uint16_t, sM, 16 * 16);
    unsigned lane = seqk::arch::lane_id();
    for (int i = 0; i < 8; i++) {
        sM[lane * 8 + i] = M[lane * 8 + i];
    }
    seqk::arch::syncwarp(0xffffffffu);
    uint32_t r[4];
    seqk::arch::ldmatrix_x4_trans(r, sM + (lane % 16) * 16 + (lane / 16) * 8);
    for (int j = 0; j < 4; j++) {
        out[lane * 4 + j] = r[j];
    }
}
SEQK_KERNEL(selftest_ldmatrix_x4_trans);

// cp_async_16_or_zeros: one warp; lane l's 16 bytes of shared memory (4 floats, first set to -1)
// receive in[4l..4l+3] when l is even and zeros when odd (whose source, in's start, is not read);
// out[4l..4l+3] = what landed. Dynamic shared memory of 32 * 4 floats.
extern "C" __global__ void selftest_cp_async_or_zeros(const float* in, float* out) {
    SEQK_DYNAMIC_SHARED(float, buf);
    unsigned lane = seqk::arch::lane_id();
    for (int i = 0; i < 4; i++) {
        buf[lane * 4 + i] = -1.0f;
    }
    __syncthreads();  // the -1s are in place before any copy lands
    bool copy = lane % 2 == 0;
    seqk::arch::cp_async_16_or_zeros(buf + lane * 4, copy ? in + lane * 4 : in, copy);
    seqk::arch::cp_async_commit();
    seqk::arch::cp_async_wait<0>();
    for (int i = 0; i < 4; i++) {
        out[lane * 4 + i] = buf[lane * 4 + i];
    }
}
SEQK_KERNEL(selftest_cp_async_or_zeros);

// Bug: reads shared memory filled by cp.async without waiting for it. One warp; dynamic shared
// memory of 32 * 4 floats. The emulator reports the read (and, with the checks off, it reads poison).
extern "C" __global__ void selftest_cp_async_missing_wait(const float* in, float* out) {
    SEQK_DYNAMIC_SHARED(float, buf);
    unsigned lane = seqk::arch::lane_id();
    seqk::arch::cp_async_16(buf + lane * 4, in + lane * 4);
    seqk::arch::cp_async_commit();
    out[lane] = buf[lane * 4];  // never waited for: the thread's copies complete when it ends
}
SEQK_KERNEL(selftest_cp_async_missing_wait);

// Grid sync (cooperative launch): block b writes slot b, the grid synchronizes, then block b
// reads its neighbour's slot: out[b] = data[(b + 1) % gridDim.x] = (b + 1) % gridDim.x + 1; after
// a second grid sync block b overwrites its slot, which block b - 1 read: data[b] = -(b + 1).
extern "C" __global__ void selftest_grid_sync(float* data, float* out) {
    if (threadIdx.x == 0) {
        data[blockIdx.x] = static_cast<float>(blockIdx.x + 1);
    }
    seqk::arch::grid_sync();
    if (threadIdx.x == 0) {
        out[blockIdx.x] = data[(blockIdx.x + 1) % gridDim.x];
    }
    seqk::arch::grid_sync();
    if (threadIdx.x == 0) {
        data[blockIdx.x] = -static_cast<float>(blockIdx.x + 1);
    }
}
SEQK_KERNEL(selftest_grid_sync);

// Flags (cooperative launch): selftest_grid_sync's exchange with a flag barrier in its place, the
// persistent kernels' step barrier. The block's last thread writes and reads the slots, so both
// barriers are needed: each round thread 0 adds 1 to `arrivals` (zero at the launch) after a
// barrier and waits until it reaches round * gridDim.x - short_by, then a barrier. out[b] =
// data[(b + 1) % gridDim.x] = (b + 1) % gridDim.x + 1 after round 1, data[b] = -(b + 1) after
// round 2. Bugs on request: short_by = 1 lets a block go on before the last block's release (the
// emulator reports a race), release = 0 leaves every wait unmet (a deadlock).
extern "C" __global__ void selftest_flag_barrier(float* data, float* out, unsigned* arrivals, unsigned short_by, int release) {
    bool last = threadIdx.x == blockDim.x - 1;
    if (last) {
        data[blockIdx.x] = static_cast<float>(blockIdx.x + 1);
    }
    for (unsigned round = 1; round <= 2; round++) {
        __syncthreads();
        if (threadIdx.x == 0) {
            if (release) {
                seqk::arch::flag_release_add(arrivals, 1);
            }
            seqk::arch::flag_wait_geq(arrivals, round * gridDim.x - short_by);
        }
        __syncthreads();
        if (round == 1 && last) {
            out[blockIdx.x] = data[(blockIdx.x + 1) % gridDim.x];
        }
    }
    if (last) {
        data[blockIdx.x] = -static_cast<float>(blockIdx.x + 1);
    }
}
SEQK_KERNEL(selftest_flag_barrier);

// Bug: a flag's word stored to plainly between two releases (flags change only by releases during
// a launch). One block: the emulator reports the second release.
extern "C" __global__ void selftest_flag_word_stored(unsigned* arrivals) {
    if (threadIdx.x == 0) {
        seqk::arch::flag_release_add(arrivals, 1);
        *arrivals = 7;
        seqk::arch::flag_release_add(arrivals, 1);
    }
}
SEQK_KERNEL(selftest_flag_word_stored);

// Bug: block 0 leaves before the grid sync the other blocks wait at.
extern "C" __global__ void selftest_grid_sync_divergent(float* out) {
    if (blockIdx.x == 0) {
        return;
    }
    seqk::arch::grid_sync();
    out[blockIdx.x] = 1.0f;
}
SEQK_KERNEL(selftest_grid_sync_divergent);

// ---- hazards the emulator's checker must report (each with a clean twin above or in the kernels)

// Bug: one warp; lane l writes slot l and reads slot l + 1 with no __syncwarp between: a race
// within a warp (its lanes are not in lockstep since Volta). With `synced` the __syncwarp orders it.
extern "C" __global__ void selftest_warp_exchange_f32(const float* in, float* out, int synced) {
    SEQK_SHARED_ARRAY(float, slots, 32);
    unsigned l = seqk::arch::lane_id();
    slots[l] = in[l];
    if (synced) {
        seqk::arch::syncwarp(0xffffffffu);
    }
    out[l] = slots[(l + 1) % 32];
}
SEQK_KERNEL(selftest_warp_exchange_f32);

// Bug: every block writes out[0]: blocks of one launch race on a global word.
extern "C" __global__ void selftest_blocks_write_one_word(float* out) {
    if (threadIdx.x == 0) {
        out[0] = static_cast<float>(blockIdx.x);
    }
}
SEQK_KERNEL(selftest_blocks_write_one_word);

// Bug: a 16-byte load from in + 1, which is 4-byte aligned only (a GPU faults: misaligned address).
extern "C" __global__ void selftest_misaligned_vector_load(const float* in, float* out) {
    const float4 v = *reinterpret_cast<const float4*>(in + 1 + 4 * threadIdx.x);
    out[threadIdx.x] = v.x + v.y + v.z + v.w;
}
SEQK_KERNEL(selftest_misaligned_vector_load);

// Bug: lanes 0..15 shuffle with mask 0x0000ffff while lanes 16..31 name the whole warp.
extern "C" __global__ void selftest_collective_masks_disagree(float* out) {
    unsigned l = seqk::arch::lane_id();
    unsigned mask = l < 16 ? 0x0000ffffu : 0xffffffffu;
    out[l] = seqk::arch::shfl_xor(mask, static_cast<float>(l), 1);
}
SEQK_KERNEL(selftest_collective_masks_disagree);

// Bug: the two halves of the block meet at __syncthreads from two different lines.
extern "C" __global__ void selftest_barrier_from_two_sites(float* out) {
    if (threadIdx.x < 16) {
        out[threadIdx.x] = 1.0f;
        __syncthreads();
    } else {
        out[threadIdx.x] = 2.0f;
        __syncthreads();
    }
}
SEQK_KERNEL(selftest_barrier_from_two_sites);

// Bug (the one a missing end-of-tile barrier makes): warp 0 reads buf while warp 1 refills it
// with cp.async, no __syncthreads between. Two warps; dynamic shared memory of 32 * 4 floats.
extern "C" __global__ void selftest_cp_async_refills_a_buffer_being_read(const float* in, float* out) {
    SEQK_DYNAMIC_SHARED(float, buf);
    unsigned t = threadIdx.x;
    if (t < 32) {
        buf[t * 4] = in[t];
    }
    __syncthreads();
    if (t < 32) {
        out[t] = buf[t * 4];
    } else {
        seqk::arch::cp_async_16(buf + (t - 32) * 4, in + (t - 32) * 4);  // the race is at the issue
        seqk::arch::cp_async_commit();
    }
}
SEQK_KERNEL(selftest_cp_async_refills_a_buffer_being_read);

// Which warp syncs order lane 2's write of slot 2 before lane 0's read of it:
//   mode 0: lanes 2,3 and lanes 0,1 each __syncwarp among themselves: no sync names both, a race;
//   mode 1: lanes 0 and 2 __syncwarp(0x5): ordered;
//   mode 2: a whole-warp shuffle: it exchanges values but orders no memory (PTX), a race;
//   mode 3: a whole-warp __syncwarp: ordered;
//   mode 4: as mode 0, but lane 3 reads: the pair sync of lanes 2,3 orders it.
// out[0] = in[2] when ordered.
extern "C" __global__ void selftest_warp_orderings(const float* in, float* out, int mode) {
    SEQK_SHARED_ARRAY(float, slot, 32);
    unsigned l = seqk::arch::lane_id();
    if (l == 2) {
        slot[2] = in[2];
    }
    if (mode == 0 || mode == 4) {
        if (l == 2 || l == 3) {
            seqk::arch::syncwarp(0x0000000cu);
        } else if (l < 2) {
            seqk::arch::syncwarp(0x00000003u);
        }
    } else if (mode == 1) {
        if (l == 0 || l == 2) {
            seqk::arch::syncwarp(0x00000005u);
        }
    } else if (mode == 2) {
        out[l] = seqk::arch::shfl_xor(0xffffffffu, in[l], 1);
    } else {
        seqk::arch::syncwarp(0xffffffffu);
    }
    if (l == (mode == 4 ? 3u : 0u)) {
        out[0] = slot[2];
    }
}
SEQK_KERNEL(selftest_warp_orderings);

// Bug (unless `mode` is 1 or 2): lanes 1 and 2 read x, each after a whole-warp __syncwarp; lane 0
// then overwrites it. Lane 2's read has no __syncwarp after it: a write-after-read race, however
// well lane 1's earlier read is ordered. Mode 1 adds that __syncwarp; mode 2 drops lane 2's read,
// leaving lane 1's, which the second __syncwarp orders before the write (no race).
extern "C" __global__ void selftest_write_after_a_late_read(const float* in, float* out, int mode) {
    SEQK_SHARED_ARRAY(float, x, 1);
    unsigned l = seqk::arch::lane_id();
    if (l == 0) {
        x[0] = in[0];
    }
    seqk::arch::syncwarp(0xffffffffu);
    if (l == 1) {
        out[1] = x[0];
    }
    seqk::arch::syncwarp(0xffffffffu);
    if (l == 2 && mode != 2) {
        out[2] = x[0];
    }
    if (mode == 1) {
        seqk::arch::syncwarp(0xffffffffu);
    }
    if (l == 0) {
        x[0] = 7.0f;
    }
}
SEQK_KERNEL(selftest_write_after_a_late_read);

// Bug (unless `write_after_wait`): each lane overwrites its cp.async destination before waiting for
// the copy (which may land after the store on a GPU). Written after the wait, it is correct.
extern "C" __global__ void selftest_cp_async_destination_overwritten(const float* in, float* out, int write_after_wait) {
    SEQK_DYNAMIC_SHARED(float, buf);
    unsigned lane = seqk::arch::lane_id();
    seqk::arch::cp_async_16(buf + lane * 4, in + lane * 4);
    seqk::arch::cp_async_commit();
    if (!write_after_wait) {
        buf[lane * 4] = 0.0f;
    }
    seqk::arch::cp_async_wait<0>();
    if (write_after_wait) {
        buf[lane * 4] = 0.0f;
    }
    out[lane] = buf[lane * 4 + 1];
}
SEQK_KERNEL(selftest_cp_async_destination_overwritten);

// Bug: 64 bytes of dynamic shared memory (16 floats) and a static array; thread 0 writes buf[16],
// one past the dynamic part, where a static array could begin.
extern "C" __global__ void selftest_dynamic_overrun_next_to_a_static_array(float* out) {
    SEQK_SHARED_ARRAY(float, table, 16);
    SEQK_DYNAMIC_SHARED(float, buf);
    table[threadIdx.x] = 1.0f;
    buf[threadIdx.x] = 2.0f;
    if (threadIdx.x == 0) {
        buf[16] = 3.0f;
    }
    out[threadIdx.x] = table[threadIdx.x] + buf[threadIdx.x];
}
SEQK_KERNEL(selftest_dynamic_overrun_next_to_a_static_array);

// Clean: thread t writes byte t of a shared array (neighbouring threads share a 2-byte granule),
// then, after the barrier, out[t] = bytes[t ^ 1] = t ^ 1.
extern "C" __global__ void selftest_neighbouring_bytes(float* out) {
    SEQK_SHARED_ARRAY(unsigned char, bytes, 64);
    unsigned t = threadIdx.x;
    bytes[t] = static_cast<unsigned char>(t);
    __syncthreads();
    out[t] = static_cast<float>(bytes[t ^ 1u]);
}
SEQK_KERNEL(selftest_neighbouring_bytes);

// Clean: collectives over part of the warp. a = in[l]; b = a + a[l^2] within each half (one call
// site, two disjoint masks); the high half alone adds c = b + b[l^1] (its lanes are then one
// collective behind the low half, which already waits at the whole-warp shuffle); then the whole
// warp: out[l] = c + c[l^16].
extern "C" __global__ void selftest_partial_collectives(const float* in, float* out) {
    unsigned l = seqk::arch::lane_id();
    float v = in[l];
    unsigned half = l < 16 ? 0x0000ffffu : 0xffff0000u;
    v += seqk::arch::shfl_xor(half, v, 2);
    if (l >= 16) {
        v += seqk::arch::shfl_xor(0xffff0000u, v, 1);
    }
    v += seqk::arch::shfl_xor(0xffffffffu, v, 16);
    out[l] = v;
}
SEQK_KERNEL(selftest_partial_collectives);

// __launch_bounds__(64): a GPU refuses a block of more than 64 threads ("too many resources
// requested for launch"), and so must the emulator and the stand-in. out[i] = 1 for every thread.
extern "C" __global__ void __launch_bounds__(64) selftest_launch_bounds_64(float* out) {
    out[blockIdx.x * blockDim.x + threadIdx.x] = 1.0f;
}
SEQK_KERNEL(selftest_launch_bounds_64);

// Bug (unless `ordered`): thread 0 resets a shared counter that every thread then increments
// atomically, with no barrier between the reset and the others' increments. out[0] = blockDim.x
// when ordered.
extern "C" __global__ void selftest_counter_reset_unordered(int* out, int ordered) {
    SEQK_SHARED_ARRAY(int, count, 1);
    if (threadIdx.x == 0) {
        count[0] = 0;
    }
    if (ordered) {
        __syncthreads();
    }
    atomicAdd(&count[0], 1);
    __syncthreads();
    if (threadIdx.x == 0) {
        out[0] = count[0];
    }
}
SEQK_KERNEL(selftest_counter_reset_unordered);

// Bug: block 0 resets a global counter that every block increments atomically, no grid sync between.
extern "C" __global__ void selftest_global_counter_reset_unordered(int* counter) {
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        counter[0] = 0;
    }
    if (threadIdx.x == 0) {
        atomicAdd(&counter[0], 1);
    }
}
SEQK_KERNEL(selftest_global_counter_reset_unordered);

// Bug (mode 0): thread 0 issues a cp.async from src; after a barrier thread 1 overwrites src before
// thread 0 waits for the copy, which may still be reading it. Clean twins: mode 1, thread 0 waits
// before the first barrier, which then orders the copy's read before the write; mode 2, thread 1
// does not write, and the second barrier orders the copy's landing before every thread reads buf.
extern "C" __global__ void selftest_cp_async_source_overwritten(float* src, float* out, int mode) {
    SEQK_DYNAMIC_SHARED(float, buf);
    if (threadIdx.x == 0) {
        seqk::arch::cp_async_16(buf, src);
        seqk::arch::cp_async_commit();
        if (mode == 1) {
            seqk::arch::cp_async_wait<0>();
        }
    }
    __syncthreads();
    if (threadIdx.x == 1 && mode != 2) {
        src[0] = 42.0f;
    }
    if (threadIdx.x == 0 && mode != 1) {
        seqk::arch::cp_async_wait<0>();
    }
    __syncthreads();
    out[threadIdx.x] = buf[1];
}
SEQK_KERNEL(selftest_cp_async_source_overwritten);

// Clean: each lane writes, reads, then (after a shuffle, which orders nothing) rewrites its own byte
// flag, with no barrier at all; neighbouring lanes' flags share a shadow granule. out[l] = 1.
extern "C" __global__ void selftest_own_byte_flags(float* out) {
    SEQK_SHARED_ARRAY(unsigned char, flags, 32);
    unsigned l = threadIdx.x;
    flags[l] = 0;
    unsigned char v = flags[l];
    float partner = seqk::arch::shfl_xor(0xffffffffu, static_cast<float>(l), 1);
    flags[l] = static_cast<unsigned char>(v + (partner == static_cast<float>(l ^ 1u) ? 1 : 0));
    out[l] = flags[l];
}
SEQK_KERNEL(selftest_own_byte_flags);

// Clean: lanes 0, 1, 2 read x; a whole-warp __syncwarp; lane 3 reads x; lanes 3 and 5
// __syncwarp; lane 5 overwrites x. Every read is ordered before the write (the first three by
// the whole-warp sync, lane 3's by the pair). out[0..3] = in[0].
extern "C" __global__ void selftest_many_readers_then_a_write(const float* in, float* out) {
    SEQK_SHARED_ARRAY(float, x, 1);
    unsigned l = seqk::arch::lane_id();
    if (l == 0) {
        x[0] = in[0];
    }
    __syncthreads();
    if (l < 3) {
        out[l] = x[0];
    }
    seqk::arch::syncwarp(0xffffffffu);
    if (l == 3) {
        out[3] = x[0];
    }
    if (l == 3 || l == 5) {
        seqk::arch::syncwarp(0x00000028u);
    }
    if (l == 5) {
        x[0] = 2.0f;
    }
}
SEQK_KERNEL(selftest_many_readers_then_a_write);

/** A shuffle inside a helper: every call meets at the helper's line, whatever the mask. */
__device__ float exchange_with(unsigned mask, float v, int lane_mask) {
    return seqk::arch::shfl_xor(mask, v, lane_mask);
}

// Clean: one call site, two dynamic instances with overlapping masks in turn: lanes 1 and 2
// exchange (mask 0x6), then lanes 0 and 1 (mask 0x3). v = l; out = 3, 3, 3, 3, 4, 5, ..., 31.
extern "C" __global__ void selftest_helper_under_two_masks(float* out) {
    unsigned l = seqk::arch::lane_id();
    float v = static_cast<float>(l);
    if (l == 1 || l == 2) {
        v += exchange_with(0x00000006u, v, 3);
    }
    if (l == 0 || l == 1) {
        v += exchange_with(0x00000003u, v, 1);
    }
    out[l] = v;
}
SEQK_KERNEL(selftest_helper_under_two_masks);

// Bug (unless `write_after_wait`): thread 0 issues a cp.async from src, then itself overwrites src
// before waiting for the copy. Written after the wait, it is correct.
extern "C" __global__ void selftest_cp_async_source_written_by_its_thread(float* src, float* out, int write_after_wait) {
    SEQK_DYNAMIC_SHARED(float, buf);
    if (threadIdx.x == 0) {
        seqk::arch::cp_async_16(buf, src);
        seqk::arch::cp_async_commit();
        if (!write_after_wait) {
            src[0] = 42.0f;
        }
        seqk::arch::cp_async_wait<0>();
        if (write_after_wait) {
            src[0] = 42.0f;
        }
        out[0] = buf[0];
    }
}
SEQK_KERNEL(selftest_cp_async_source_written_by_its_thread);

// Bug (unless `from_global`): a cp.async whose source is shared memory (it must be global: a GPU
// faults). The clean twin copies from `in` and reads the staging array with a plain load (written
// by threads 0..7: the barrier orders it). out[0] = in[0], out[1] = 1.
extern "C" __global__ void selftest_cp_async_from_shared(const float* in, float* out, int from_global) {
    SEQK_SHARED_ARRAY(float, staging, 8);
    SEQK_DYNAMIC_SHARED(float, buf);
    if (threadIdx.x < 8) {
        staging[threadIdx.x] = 1.0f;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        seqk::arch::cp_async_16(buf, from_global ? in : staging);
        seqk::arch::cp_async_commit();
        seqk::arch::cp_async_wait<0>();
        out[0] = buf[0];
        out[1] = staging[7];
    }
}
SEQK_KERNEL(selftest_cp_async_from_shared);

// Bug: thread 0 writes one past the end of a 16-float static array, where the next one could begin.
extern "C" __global__ void selftest_static_array_overrun(float* out) {
    SEQK_SHARED_ARRAY(float, first, 16);
    SEQK_SHARED_ARRAY(float, second, 16);
    first[threadIdx.x] = 1.0f;
    second[threadIdx.x] = 2.0f;
    if (threadIdx.x == 0) {
        first[16] = 3.0f;
    }
    out[threadIdx.x] = first[threadIdx.x] + second[threadIdx.x];
}
SEQK_KERNEL(selftest_static_array_overrun);

// Bug (with more than one block): block 0's thread 1 reads g[0]; after a __syncthreads (which orders
// nothing between blocks) thread 0 of every block adds to g[0] atomically: block 0's read races with
// the other blocks' adds. With one block the barrier orders the read before the add: clean.
extern "C" __global__ void selftest_read_then_atomics_of_other_blocks(float* g, float* out) {
    if (blockIdx.x == 0 && threadIdx.x == 1) {
        out[0] = g[0];
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        atomicAdd(&g[0], 1.0f);
    }
}
SEQK_KERNEL(selftest_read_then_atomics_of_other_blocks);

// Clean (one warp): lane 0 zeroes and reads acc, a whole-warp __syncwarp, then lanes 1..3 add to it
// atomically (a float atomicAdd loads before its compare-and-swap). out[0] = 0, out[1] = 3.
extern "C" __global__ void selftest_atomics_after_an_ordered_read(float* out) {
    SEQK_SHARED_ARRAY(float, acc, 1);
    unsigned l = seqk::arch::lane_id();
    if (l == 0) {
        acc[0] = 0.0f;
    }
    if (l == 0) {
        out[0] = acc[0];
    }
    seqk::arch::syncwarp(0xffffffffu);
    if (l >= 1 && l <= 3) {
        atomicAdd(&acc[0], 1.0f);
    }
    __syncthreads();
    if (l == 0) {
        out[1] = acc[0];
    }
}
SEQK_KERNEL(selftest_atomics_after_an_ordered_read);
