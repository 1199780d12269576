// The persistent forward's body (small batches: W_hh on chip for every step, one cooperative launch).
#pragma once

#include "../arch/cp_async.cuh"
#include "../arch/flag.cuh"
#include "../arch/mma.cuh"
#include "../arch/warp.cuh"
#include "cell.cuh"

namespace {

// Persistent forward for small batches, LSTM (no projection), GRU (either reset form) and Elman
// RNN: one cooperative launch runs every step of one (layer, direction), keeping W_hh on chip
// throughout. T is the state type: float (the F32 instance) or a 16-bit type (F16/BF16 ops).
//
// Block k owns hidden units [k*U, k*U + U) (U = units_per_block) and holds their G*U rows of W_hh
// (G = 4 gates for LSTM, 3 for GRU, 1 for RNN; gate-major: row g*U + u is W_hh row g*H + u) in shared memory,
// loaded once. Every step's gx entries of its units arrive as cp.async copies into shared memory
// (prefetch_gx: issued before the first step, and for each later step inside the step barrier
// before it, so their latency overlaps the wait and the projection). Per step a block stages h_{t-1} [B, H]
// from global memory into shared memory (through L2: other blocks wrote it) and projects it onto
// its rows (project_state: F32 by warp dot products, 16 bits by mma.sync), then each thread applies
// lstm_cell to (batch entry, unit) pairs exactly as the step kernels do (gru_cell and the RNN cell
// likewise), reading gx from shared memory, saves what backward
// needs (raw, c_new, GRU's h W_hn^T + b_hn; fp32, not in inference),
// writes h_t (rounded once to T) into the other half of h_buf [2, B, H] (double buffered: no block
// overwrites what another may still be reading) and the output. Between steps the blocks meet at a
// flag barrier (step_arrive, step_wait: a counter in global memory that each block's thread 0
// releases once per round and acquires until every block has), not cooperative_groups' grid sync;
// the next step's gx copies are issued between its two halves. The launch stays cooperative: that
// is what guarantees every block is resident, which a spin on another block needs. W_hh is read
// from shared memory, never from DRAM, after the first step.
//
// Shared memory, F32: W [G*U][H], h [B][H], gate [B][G*U] and gx [B][G*U] floats. 16 bits: W
// [M][S] and h [16][S] in T (M = G*U rounded up to 16 rows; S = H rounded up to 16, plus 8: rows
// 16-byte aligned and 16 bytes apart modulo 128, so ldmatrix is conflict-free; zeros past G*U rows,
// past B entries and past H columns), then the warps' partial sums [warps][M][16], gate [B][G*U]
// and gx [B][G*U] in fp32. Both end with the LSTM's cell state c [B][U] (fp32; none for G < 4):
// the block's units' c stays on chip for the whole sequence, read from c_state once before the
// first step and written back after the last, so no step waits on a global load of c.
// RecurrentGpu.persistentSharedBytes computes the same sizes.
namespace persistent {

__device__ __forceinline__ float load_through_l2(const float* p) {
#ifdef SEQK_EMU
    return *p;
#else
    return __ldcg(p);
#endif
}

template <typename T>
__device__ __forceinline__ float load_through_l2(const T* p) {
#ifdef SEQK_EMU
    return seqk::to_float(*p);
#else
    unsigned short bits = __ldcg(reinterpret_cast<const unsigned short*>(p));
    return seqk::to_float(*reinterpret_cast<const T*>(&bits));
#endif
}

/** Two adjacent floats, stored as one 8-byte access. */
struct alignas(8) FloatPair {
    float lo, hi;
};

/** The 16 bytes at p, through L2. */
__device__ __forceinline__ seqk::Chunk16 load16_through_l2(const void* p) {
#ifdef SEQK_EMU
    return *static_cast<const seqk::Chunk16*>(p);
#else
    uint4 v = __ldcg(static_cast<const uint4*>(p));
    return seqk::Chunk16{{v.x, v.y, v.z, v.w}};
#endif
}

/** A block's part: hidden units [u0, u0 + mine) and its shared memory (layout above). */
template <typename T>
struct Slice {
    T* w;
    T* hs;
    float* partial;  // 16 bits only: [warps][M][16]
    float* gate;
    float* gx;       // this step's gx entries of the block's units, laid out as gate (prefetch_gx)
    float* c;        // LSTM (G = 4): the cell state c [B][U] of the block's units; else nullptr
    int stride;      // of w's and hs's rows: H (F32) or S (16 bits)
    int padded_rows;  // M (16 bits)
    int u0;
    int mine;  // may be <= 0 for trailing blocks: they still take part in every step barrier
};

/** n rounded up to a multiple of m. */
__device__ __forceinline__ int round_up(int n, int m) { return (n + m - 1) / m * m; }

/** Loads this block's G*U rows of W_hh (row g*U + u is W_hh row g*H + u0 + u; zeros past H) into shared memory. */
template <int G>
__device__ Slice<float> load_slice(const float* w_hh, int batch, int hidden, int units) {
    SEQK_DYNAMIC_SHARED(float, smem);
    Slice<float> sl;
    sl.w = smem;
    sl.hs = smem + static_cast<long>(G) * units * hidden;
    sl.partial = nullptr;
    sl.gate = sl.hs + static_cast<long>(batch) * hidden;
    sl.gx = sl.gate + static_cast<long>(batch) * G * units;
    sl.c = G == 4 ? sl.gx + static_cast<long>(batch) * G * units : nullptr;
    sl.stride = hidden;
    sl.padded_rows = G * units;
    sl.u0 = blockIdx.x * units;
    sl.mine = hidden - sl.u0 < units ? hidden - sl.u0 : units;
    for (long idx = threadIdx.x; idx < static_cast<long>(G) * units * hidden; idx += blockDim.x) {
        int r = static_cast<int>(idx / hidden);
        int u = r % units;
        sl.w[idx] = u < sl.mine ? w_hh[(static_cast<long>(r / units) * hidden + sl.u0 + u) * hidden + idx % hidden] : 0.0f;
    }
    return sl;
}

/**
 * The 16-bit slice: W's rows as above in T, every padding element zero (h's 16 rows too: rows past
 * B and columns past H are never written again). Ends synchronized.
 */
template <int G, typename T>
__device__ Slice<T> load_slice(const T* w_hh, int batch, int hidden, int units) {
    SEQK_DYNAMIC_SHARED(T, smem);
    Slice<T> sl;
    sl.stride = round_up(hidden, 16) + 8;
    sl.padded_rows = round_up(G * units, 16);
    sl.w = smem;
    sl.hs = smem + static_cast<long>(sl.padded_rows) * sl.stride;
    sl.partial = reinterpret_cast<float*>(sl.hs + 16L * sl.stride);
    sl.gate = sl.partial + static_cast<long>(blockDim.x / 32) * sl.padded_rows * 16;
    sl.gx = sl.gate + static_cast<long>(batch) * G * units;
    sl.c = G == 4 ? sl.gx + static_cast<long>(batch) * G * units : nullptr;
    sl.u0 = blockIdx.x * units;
    sl.mine = hidden - sl.u0 < units ? hidden - sl.u0 : units;
    for (long idx = threadIdx.x; idx < static_cast<long>(sl.padded_rows) * sl.stride; idx += blockDim.x) {
        int r = static_cast<int>(idx / sl.stride);
        int e = static_cast<int>(idx % sl.stride);
        int u = r % units;
        bool real = r < G * units && u < sl.mine && e < hidden;
        sl.w[idx] = real ? w_hh[(static_cast<long>(r / units) * hidden + sl.u0 + u) * hidden + e] : seqk::from_float<T>(0.0f);
    }
    for (long idx = threadIdx.x; idx < 16L * sl.stride; idx += blockDim.x) {
        sl.hs[idx] = seqk::from_float<T>(0.0f);
    }
    __syncthreads();
    return sl;
}

/**
 * Issues step t's gx entries of this block's units (gx row t*B + b, column g*H + u0 + u) as 4-byte
 * cp.async copies into sl.gx[b][g*U + u], one group; project_state waits for them before its last
 * barrier. Entries past `mine` are not copied (never read).
 */
template <int G, typename T>
__device__ void prefetch_gx(const Slice<T>& sl, const float* gx, int t, int batch, int hidden, int units) {
    for (int idx = threadIdx.x; idx < batch * G * units; idx += blockDim.x) {
        int b = idx / (G * units);
        int r = idx % (G * units);
        int u = r % units;
        if (u < sl.mine) {
            seqk::arch::cp_async_4(sl.gx + idx, gx + (static_cast<long>(t) * batch + b) * G * hidden + (r / units) * hidden + sl.u0 + u);
        }
    }
    seqk::arch::cp_async_commit();
}

/**
 * One step's recurrent projections of this block's units (F32): stages a [B, H] vector (h_{t-1},
 * or the reset-first GRU's r*h) from global memory (through L2: other blocks wrote it; in 16-byte
 * loads when H % 4 == 0, which puts every row of the vector and of sl.hs on 16 bytes), then
 * gate[b][r] = W row r . vector_b for the rows [first_row, first_row + rows) of the slice's G*U,
 * one warp per (b, r) pair at a time, lanes striding over H and a butterfly
 * sum. Ends synchronized, with the calling thread's cp.async copies (prefetch_gx) landed first.
 */
template <int G>
__device__ void project_state(const Slice<float>& sl, const float* h_cur, int batch, int hidden, int units, int first_row,
                              int rows) {
    int lane = seqk::arch::lane_id();
    int warps = blockDim.x / 32;
    if (hidden % 4 == 0) {
        for (int idx = threadIdx.x; idx < batch * hidden / 4; idx += blockDim.x) {
            *reinterpret_cast<seqk::Chunk16*>(sl.hs + 4 * idx) = load16_through_l2(h_cur + 4 * idx);
        }
    } else {
        for (int idx = threadIdx.x; idx < batch * hidden; idx += blockDim.x) {
            sl.hs[idx] = load_through_l2(h_cur + idx);
        }
    }
    __syncthreads();
    for (int pair = threadIdx.x / 32; pair < batch * rows; pair += warps) {
        int b = pair / rows;
        int r = first_row + pair % rows;
        float dot = 0.0f;
        if (r % units < sl.mine) {
            for (int e = lane; e < hidden; e += 32) {
                dot += sl.w[static_cast<long>(r) * hidden + e] * sl.hs[static_cast<long>(b) * hidden + e];
            }
        }
        SEQK_UNROLL
        for (int off = 16; off > 0; off /= 2) {
            dot += seqk::arch::shfl_xor(0xffffffffu, dot, off);
        }
        if (lane == 0) {
            sl.gate[b * G * units + r] = dot;
        }
    }
    seqk::arch::cp_async_wait<0>();
    __syncthreads();
}

/**
 * The same projections in 16 bits on tensor cores (fp32 accumulation): stages the [B, H] vector
 * with 16-byte loads (H % 8 == 0), then the block's product W [M, S] x h^T [S, 16] as mma.m16n8k16
 * tiles: warp w takes the w-th of `warps` contiguous ranges of the 16-column k-steps, for every
 * 16-row tile that meets [first_row, first_row + rows) (A by ldmatrix.x4 from W's rows, B, both
 * 8-entry halves of the batch, by one ldmatrix.x4 from h's rows), and writes its tile sums to
 * partial[w]; then gate[b][r] is the sum of the warps' partials in warp order (deterministic).
 * Ends synchronized, with the calling thread's cp.async copies (prefetch_gx) landed first.
 */
template <int G, typename T>
__device__ void project_state(const Slice<T>& sl, const T* h_cur, int batch, int hidden, int units, int first_row, int rows) {
    int chunks = hidden / 8;
    for (int idx = threadIdx.x; idx < batch * chunks; idx += blockDim.x) {
        int b = idx / chunks;
        int c = idx % chunks;
        *reinterpret_cast<seqk::Chunk16*>(sl.hs + b * sl.stride + c * 8) = load16_through_l2(h_cur + static_cast<long>(b) * hidden + c * 8);
    }
    __syncthreads();
    int lane = seqk::arch::lane_id();
    int warp = threadIdx.x / 32;
    int warps = blockDim.x / 32;
    int ksteps = (sl.stride - 8) / 16;
    int k_begin = warp * ksteps / warps;
    int k_end = (warp + 1) * ksteps / warps;
    // ldmatrix row addresses: A's lane l gives row l % 16 at column (l / 16) * 8; B's gives batch
    // entry l % 8 + (l / 16) * 8 at column ((l / 8) % 2) * 8, so b[0..1] is the first 8 entries'
    // fragment and b[2..3] the next 8's.
    const T* b_row = sl.hs + ((lane % 8) + (lane / 16) * 8) * sl.stride + ((lane / 8) % 2) * 8;
    int g = lane / 4;
    int t = lane % 4;
    for (int tile = first_row / 16; tile < (first_row + rows + 15) / 16; tile++) {
        const T* a_row = sl.w + (tile * 16 + lane % 16) * sl.stride + (lane / 16) * 8;
        float acc[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
        for (int ks = k_begin; ks < k_end; ks++) {
            uint32_t a[4];
            uint32_t bf[4];
            seqk::arch::ldmatrix_x4(a, a_row + ks * 16);
            seqk::arch::ldmatrix_x4(bf, b_row + ks * 16);
            seqk::arch::mma_m16n8k16(acc[0], a, bf, T{});
            seqk::arch::mma_m16n8k16(acc[1], a, bf + 2, T{});
        }
        // Pairs of columns as 8-byte stores: a half-warp's 16 pairs fall on 16 bank pairs, two lanes
        // (rows g and g + 2) on each, where 4-byte stores put four lanes on each of 8 banks.
        float* p = sl.partial + (static_cast<long>(warp) * sl.padded_rows + tile * 16) * 16;
        SEQK_UNROLL
        for (int n = 0; n < 2; n++) {
            *reinterpret_cast<FloatPair*>(p + g * 16 + n * 8 + 2 * t) = FloatPair{acc[n][0], acc[n][1]};
            *reinterpret_cast<FloatPair*>(p + (g + 8) * 16 + n * 8 + 2 * t) = FloatPair{acc[n][2], acc[n][3]};
        }
    }
    __syncthreads();
    // The batch entry varies fastest across threads, so a warp reads the entries of about 32 / batch
    // consecutive 16-float rows of a partial: at most ceil(16 / batch) lanes on a bank (one at batch
    // 16), where with the row fastest 16 lanes shared each bank whatever the batch. gate is written
    // with the batch's stride, once per `warps` reads.
    for (int idx = threadIdx.x; idx < batch * rows; idx += blockDim.x) {
        int b = idx % batch;
        int r = first_row + idx / batch;
        float sum = 0.0f;
        for (int w = 0; w < warps; w++) {
            sum += sl.partial[(static_cast<long>(w) * sl.padded_rows + r) * 16 + b];
        }
        sl.gate[b * G * units + r] = sum;
    }
    seqk::arch::cp_async_wait<0>();
    __syncthreads();
}

/**
 * The first half of the step barrier: this block's writes of the round are done (the barrier),
 * then thread 0 releases them by adding 1 to `arrivals` (zero at the launch).
 */
__device__ __forceinline__ void step_arrive(unsigned* arrivals) {
    __syncthreads();
    if (threadIdx.x == 0) {
        seqk::arch::flag_release_add(arrivals, 1);
    }
}

/**
 * The second half: thread 0 waits until every block has arrived `round` times (1-based), and the
 * barrier then orders what it acquired before every thread's reads of the next round. Work that
 * needs no other block's writes may run between the halves.
 */
__device__ __forceinline__ void step_wait(const unsigned* arrivals, unsigned round) {
    if (threadIdx.x == 0) {
        seqk::arch::flag_wait_geq(arrivals, round * gridDim.x);
    }
    __syncthreads();
}

/**
 * f(b, u) for each of this block's (batch entry, unit) pairs that this thread owns: pair p = b *
 * mine + u goes to thread p mod blockDim.x, the same every step, so a value one thread keeps for a
 * pair (the LSTM's c) needs no barrier between steps. Trailing blocks (mine <= 0) own none. Part is
 * the forward's Slice or the backward's GradSlice (persistent_bwd.cuh): only its mine is read.
 */
template <typename Part, typename F>
__device__ __forceinline__ void for_my_pairs(const Part& sl, int batch, F f) {
    int pairs = batch * (sl.mine > 0 ? sl.mine : 0);
    for (int pair = threadIdx.x; pair < pairs; pair += blockDim.x) {
        f(pair / sl.mine, pair % sl.mine);
    }
}

/** The time index of step s (0-based) of a sequence run forward or reversed. */
__device__ __forceinline__ int time_of(int s, int steps, int reversed) { return reversed ? steps - 1 - s : s; }

/**
 * The step barrier after step s (s + 1 < steps), round `round`, with step s + 1's gx copies issued
 * between its halves: every thread is then past step s's cells, the last readers of sl.gx.
 */
template <int G, typename T>
__device__ __forceinline__ void next_step(const Slice<T>& sl, const float* gx, unsigned* arrivals, unsigned round, int s,
                                          int steps, int reversed, int batch, int hidden, int units) {
    step_arrive(arrivals);
    prefetch_gx<G>(sl, gx, time_of(s + 1, steps, reversed), batch, hidden, units);
    step_wait(arrivals, round);
}

/**
 * The step loop the LSTM, GRU (linear_before_reset) and RNN kernels share: per step, the state
 * projection, then for each of this block's (batch entry, unit) pairs either the carried state and
 * a zero output (t past the entry's length) or cell(b, u, j, row, h_{t-1}), which returns the new h
 * and saves its cell's trace; the new h (rounded once to T) goes to the other h_buf half and to the
 * output. A step barrier between steps (round s + 1 after step s), the next gx copies inside it.
 */
template <int G, typename T, typename Cell>
__device__ void run_steps(const Slice<T>& sl, const float* gx, T* h_buf, T* out, const int* lengths, unsigned* arrivals,
                          int steps, int reversed, int batch, int hidden, int units, int out_stride, int out_offset,
                          Cell cell) {
    if (steps > 0) {
        prefetch_gx<G>(sl, gx, time_of(0, steps, reversed), batch, hidden, units);
    }
    for (int s = 0; s < steps; s++) {
        int t = time_of(s, steps, reversed);
        T* h_next = h_buf + static_cast<long>((s + 1) % 2) * batch * hidden;
        project_state<G>(sl, h_buf + static_cast<long>(s % 2) * batch * hidden, batch, hidden, units, 0, G * units);
        for_my_pairs(sl, batch, [&](int b, int u) {
            int j = sl.u0 + u;
            long row = static_cast<long>(t) * batch + b;
            T hp = sl.hs[static_cast<long>(b) * sl.stride + j];
            T* o = out + row * out_stride + out_offset + j;
            if (t >= lengths[b]) {
                h_next[static_cast<long>(b) * hidden + j] = hp;
                *o = seqk::from_float<T>(0.0f);
                return;
            }
            T h = seqk::from_float<T>(cell(b, u, j, row, seqk::to_float(hp)));
            h_next[static_cast<long>(b) * hidden + j] = h;
            *o = h;
        });
        if (s + 1 < steps) {
            next_step<G>(sl, gx, arrivals, static_cast<unsigned>(s + 1), s, steps, reversed, batch, hidden, units);
        }
    }
}

template <typename T>
__device__ void lstm_fwd(const float* gx, const T* w_hh, const float* bih, const float* bhh, const float* peephole,
                         T* h_buf, float* c_state, float* c_new_save, float* raw, T* out, const int* lengths,
                         unsigned* arrivals, int steps, int reversed, int batch, int hidden, int units, int out_stride,
                         int out_offset, int input_forget, float clip, int f_kind, float f_alpha, float f_beta,
                         int g_kind, float g_alpha, float g_beta,
                         int h_kind, float h_alpha, float h_beta) {
    Slice<T> sl = load_slice<4>(w_hh, batch, hidden, units);
    long gh4 = 4L * hidden;
    // c moves between c_state and shared memory by run_steps' pairs (for_my_pairs), so each thread
    // reads back only what it wrote: no barrier beyond run_steps' own.
    for_my_pairs(sl, batch, [&](int b, int u) { sl.c[b * units + u] = c_state[static_cast<long>(b) * hidden + sl.u0 + u]; });
    run_steps<4>(sl, gx, h_buf, out, lengths, arrivals, steps, reversed, batch, hidden, units, out_stride, out_offset,
                 [&](int b, int u, int j, long row, float) {
                     float pre[4];
                     for (int g = 0; g < 4; g++) {
                         int col = g * hidden + j;
                         int at = b * 4 * units + g * units + u;
                         pre[g] = sl.gx[at] + sl.gate[at] + load_or_zero(bih, col) + load_or_zero(bhh, col);
                     }
                     float cp = sl.c[b * units + u];
                     float c;
                     float h = lstm_cell(pre, cp, peephole, j, hidden, input_forget, clip, f_kind, f_alpha, f_beta, g_kind,
                                         g_alpha, g_beta, h_kind, h_alpha, h_beta, c);
                     for (int k = 0; k < 4; k++) {
                         save(raw, row * gh4 + k * hidden + j, pre[k]);
                     }
                     save(c_new_save, row * hidden + j, c);
                     sl.c[b * units + u] = c;
                     return h;
                 });
    for_my_pairs(sl, batch, [&](int b, int u) { c_state[static_cast<long>(b) * hidden + sl.u0 + u] = sl.c[b * units + u]; });
}

// GRU with linear_before_reset (PyTorch's and cuDNN's form): the same step structure with 3 gate
// rows per unit; the cell is gru_cell, as in gru_step_v1, saving raw and h W_hn^T + b_hn.
template <typename T>
__device__ void gru_fwd(const float* gx, const T* w_hh, const float* bih, const float* bhh, T* h_buf, float* raw,
                        float* hn_lin_save, T* out, const int* lengths, unsigned* arrivals, int steps, int reversed,
                        int batch, int hidden, int units, int out_stride, int out_offset, float clip, int f_kind,
                        float f_alpha, float f_beta, int g_kind, float g_alpha, float g_beta) {
    Slice<T> sl = load_slice<3>(w_hh, batch, hidden, units);
    long gh3 = 3L * hidden;
    run_steps<3>(sl, gx, h_buf, out, lengths, arrivals, steps, reversed, batch, hidden, units, out_stride, out_offset,
                 [&](int b, int u, int j, long row, float hp) {
                     const float* g = sl.gate + b * 3 * units;
                     const float* x = sl.gx + b * 3 * units;
                     float pre_r = x[u] + g[u] + load_or_zero(bih, j) + load_or_zero(bhh, j);
                     float pre_z = x[units + u] + g[units + u] + load_or_zero(bih, hidden + j) + load_or_zero(bhh, hidden + j);
                     float h_lin = g[2 * units + u] + load_or_zero(bhh, 2 * hidden + j);
                     float x_n = x[2 * units + u] + load_or_zero(bih, 2 * hidden + j);
                     float pre_n;
                     float h = gru_cell(pre_r, pre_z, x_n, h_lin, 1, hp, clip, f_kind, f_alpha, f_beta, g_kind, g_alpha,
                                        g_beta, pre_n);
                     save(raw, row * gh3 + j, pre_r);
                     save(raw, row * gh3 + hidden + j, pre_z);
                     save(raw, row * gh3 + 2 * hidden + j, pre_n);
                     save(hn_lin_save, row * hidden + j, h_lin);
                     return h;
                 });
}

// GRU with the reset gate first (ONNX's default form): n needs (r*h) W_hn^T, and r*h of every unit
// before any block can project it, so a step has two halves, two rounds of the step barrier (2s + 1
// inside step s, 2s + 2 after it, the next gx copies inside that one): the r
// and z rows against h_{t-1}, then r*h of the block's units written to reset_hidden [B, H] (0 for
// entries past their length); after the barrier the n rows against r*h, then gru_cell as
// gru_step_v1 runs it (h_{t-1} read again from h_buf, which the staging overwrote in shared
// memory), raw saved as gru_reset_v1 and gru_step_v1 save it. pre_r and pre_z stay in the gate
// rows they came from (the second half projects only the n rows).
template <typename T>
__device__ void gru_reset_first_fwd(const float* gx, const T* w_hh, const float* bih, const float* bhh, T* h_buf,
                                    T* reset_hidden, float* raw, T* out, const int* lengths, unsigned* arrivals,
                                    int steps, int reversed,
                                    int batch, int hidden, int units, int out_stride, int out_offset, float clip, int f_kind,
                                    float f_alpha, float f_beta, int g_kind, float g_alpha, float g_beta) {
    Slice<T> sl = load_slice<3>(w_hh, batch, hidden, units);
    long gh3 = 3L * hidden;
    if (steps > 0) {
        prefetch_gx<3>(sl, gx, time_of(0, steps, reversed), batch, hidden, units);
    }
    for (int s = 0; s < steps; s++) {
        int t = time_of(s, steps, reversed);
        const T* h_cur = h_buf + static_cast<long>(s % 2) * batch * hidden;
        T* h_next = h_buf + static_cast<long>((s + 1) % 2) * batch * hidden;
        project_state<3>(sl, h_cur, batch, hidden, units, 0, 2 * units);
        for_my_pairs(sl, batch, [&](int b, int u) {
            int j = sl.u0 + u;
            long row = static_cast<long>(t) * batch + b;
            float* g = sl.gate + b * 3 * units;
            const float* x = sl.gx + b * 3 * units;
            float rh = 0.0f;
            if (t < lengths[b]) {
                g[u] = x[u] + g[u] + load_or_zero(bih, j) + load_or_zero(bhh, j);
                g[units + u] = x[units + u] + g[units + u] + load_or_zero(bih, hidden + j) + load_or_zero(bhh, hidden + j);
                save(raw, row * gh3 + j, g[u]);
                save(raw, row * gh3 + hidden + j, g[units + u]);
                rh = activate(f_kind, f_alpha, f_beta, clip_to(g[u], clip)) * seqk::to_float(sl.hs[static_cast<long>(b) * sl.stride + j]);
            }
            reset_hidden[static_cast<long>(b) * hidden + j] = seqk::from_float<T>(rh);
        });
        step_arrive(arrivals);
        step_wait(arrivals, static_cast<unsigned>(2 * s + 1));
        project_state<3>(sl, reset_hidden, batch, hidden, units, 2 * units, units);
        for_my_pairs(sl, batch, [&](int b, int u) {
            int j = sl.u0 + u;
            long row = static_cast<long>(t) * batch + b;
            float hp = load_through_l2(h_cur + static_cast<long>(b) * hidden + j);
            T* o = out + row * out_stride + out_offset + j;
            if (t >= lengths[b]) {
                h_next[static_cast<long>(b) * hidden + j] = seqk::from_float<T>(hp);
                *o = seqk::from_float<T>(0.0f);
                return;
            }
            const float* g = sl.gate + b * 3 * units;
            float h_lin = g[2 * units + u] + load_or_zero(bhh, 2 * hidden + j);
            float x_n = sl.gx[b * 3 * units + 2 * units + u] + load_or_zero(bih, 2 * hidden + j);
            float pre_n;
            float h = gru_cell(g[u], g[units + u], x_n, h_lin, 0, hp, clip, f_kind, f_alpha, f_beta, g_kind, g_alpha, g_beta,
                               pre_n);
            save(raw, row * gh3 + 2 * hidden + j, pre_n);
            h_next[static_cast<long>(b) * hidden + j] = seqk::from_float<T>(h);
            *o = seqk::from_float<T>(h);
        });
        if (s + 1 < steps) {
            next_step<3>(sl, gx, arrivals, static_cast<unsigned>(2 * s + 2), s, steps, reversed, batch, hidden, units);
        }
    }
}

// Elman RNN: one gate row per unit; the cell is rnn_step_v1's, saving raw.
template <typename T>
__device__ void rnn_fwd(const float* gx, const T* w_hh, const float* bih, const float* bhh, T* h_buf, float* raw,
                        T* out, const int* lengths, unsigned* arrivals, int steps, int reversed, int batch, int hidden,
                        int units, int out_stride, int out_offset, float clip, int f_kind, float f_alpha, float f_beta) {
    Slice<T> sl = load_slice<1>(w_hh, batch, hidden, units);
    run_steps<1>(sl, gx, h_buf, out, lengths, arrivals, steps, reversed, batch, hidden, units, out_stride, out_offset,
                 [&](int b, int u, int j, long row, float) {
                     float pre = sl.gx[b * units + u] + sl.gate[b * units + u] + load_or_zero(bih, j) + load_or_zero(bhh, j);
                     save(raw, row * hidden + j, pre);
                     return activate(f_kind, f_alpha, f_beta, clip_to(pre, clip));
                 });
}

}  // namespace persistent

}  // namespace
