// The tiled tensor-core forward, fp16/bf16 (attn_fwd_tc64/128/256) and TF32 (attn_fwd_tf32x64/128).
#pragma once

#include "../arch/cp_async.cuh"
#include "../arch/mma.cuh"
#include "common.cuh"

namespace {

// ---------------------------------------------------------------------------------------------
// Tiled tensor-core forward (FlashAttention-2's loop order), fp16/bf16 storage, fp32 accumulation.
//
// Grid: one block per (b, h, tile of 64 query rows), 1-D: blockIdx.x = (b * Hq + h) * q_tiles + tile.
// Block: 4 warps; warp w owns query rows 16w..16w+15 of the tile and keeps, in registers, their q
// fragments (D padded to DMAX with zeros; at DMAX 256 they stay in shared memory, [64][DMAX + 8],
// one ldmatrix.x4 a k-step), the running max and sum per row, and the 16 x DMAX output
// accumulator. The block walks the key/value rows in tiles of BN: k and v tiles go to
// shared memory ([BN][DMAX + 8] 16-bit, the +8 keeps ldmatrix rows on distinct banks), double
// buffered so the cp.async of tile t+1 overlaps the math of tile t. Per tile a warp computes
// S = q k^T with mma.m16n8k16 (fp32; k through ldmatrix.x4), scales (and on masked tiles masks)
// in registers, updates the online softmax with exp2, rounds P to the storage
// type (as FlashAttention does) and accumulates P v with mma (v through ldmatrix.x4.trans, two
// 8-column blocks per instruction).
// A thread holds, per 8-column block, rows g = lane/4 and g + 8 and columns 2t, 2t+1 (t = lane%4),
// so a row's max and sum are reduced over the 4 lanes of a quad.
// Causal tiles wholly above the diagonal, and keys past the entry's key length, are never loaded.
// Masking only where needed (FlashAttention-2): the leading tiles that no mask touches for any row
// of the block (before the key length and the first row's causal diagonal; none with an explicit
// mask) run a loop without mask code; the rest run the masked loop, where on tiles a mask may
// block some of a warp's pairs P v goes through pv_tile_may_block so that a non-finite v at a
// blocked key (0 x NaN) never reaches the row. Rows past the query length are dead when written.
// NO_BIAS writes out through shared memory (write_rows_staged, FlashAttention-2's epilogue): each
// warp stages its rows in 16 bits, then the block writes whole rows, 16 bytes a store where out's
// rows allow (`vec` bit 1); GENERAL stores its fragments' elements (staging spilled it).
// Instances (TcInstance): GENERAL takes every option at run time; NO_BIAS has no explicit mask and
// only 16-byte loads, so its masked loop holds only the length and causal tests, and its unmasked
// loop no branch at all: every k-step and column block of DMAX (zeros past D and Dv), loads as
// unrolled cp.async of 16 bytes or zeros, and a tile whose scores reach +inf left to the masked
// step (LEAVE_HOT in attn_fwd_tc). ldmatrix addresses are SharedAddr plus immediate offsets.
// Loads: 16-byte cp.async when `vec` (the host checked, for k and v and at DMAX 256 for q: D and
// Dv multiples of 8, unit column stride, row strides multiples of 8 elements, 16-byte aligned
// bases), else element by element;
// columns and rows outside the tensor are written as zeros (never left as garbage: 0 * NaN).
// Flops: 4 * rows * keys * DMAX per (b, h) tile pair computed, of which D/DMAX is useful.
namespace tc {

constexpr int WARPS = 4;
constexpr int BLOCK_M = 16 * WARPS;

template <typename T>
__device__ __forceinline__ uint16_t bits(T v) {
    return *reinterpret_cast<const uint16_t*>(&v);
}

template <typename T>
__device__ __forceinline__ uint32_t pack(float lo, float hi) {
    return static_cast<uint32_t>(bits(seqk::from_float<T>(lo))) | (static_cast<uint32_t>(bits(seqk::from_float<T>(hi))) << 16);
}

/** The 16-bit value whose bits are x, as a float. */
template <typename T>
__device__ __forceinline__ float from_bits(uint16_t x) {
    T v;
    *reinterpret_cast<uint16_t*>(&v) = x;
    return seqk::to_float(v);
}

__device__ __forceinline__ void mma(float d[4], const uint32_t a[4], const uint32_t b[2], __half) {
    seqk::arch::mma_m16n8k16_f16(d, a, b, d);
}

__device__ __forceinline__ void mma(float d[4], const uint32_t a[4], const uint32_t b[2], __nv_bfloat16) {
    seqk::arch::mma_m16n8k16_bf16(d, a, b, d);
}

__device__ __forceinline__ uint16_t raw(__half v) { return bits(v); }
__device__ __forceinline__ uint16_t raw(__nv_bfloat16 v) { return bits(v); }
__device__ __forceinline__ float raw(float v) { return v; }

/**
 * A warp's 16 rows (rows[0]: the thread's row g, rows[1]: row g + 8) of a (b, h, row, column)
 * tensor as mma A fragments of KS k-steps: zeros at rows from row_limit on and columns from cols on.
 */
template <typename T, int KS>
__device__ __forceinline__ void row_fragments(uint32_t (&a)[KS][4], const T* src, const long long* st, long long b, long long h,
                                              const long long (&rows)[2], long long row_limit, int cols, int t) {
    SEQK_UNROLL
    for (int ks = 0; ks < KS; ks++) {
        SEQK_UNROLL
        for (int x = 0; x < 4; x++) {
            long long i = rows[x % 2];
            int col = ks * 16 + (x / 2) * 8 + 2 * t;
            uint32_t lo = 0, hi = 0;
            if (i < row_limit && col < cols) {
                lo = bits(src[at(st, b, h, i, col)]);
            }
            if (i < row_limit && col + 1 < cols) {
                hi = bits(src[at(st, b, h, i, col + 1)]);
            }
            a[ks][x] = lo | (hi << 16);
        }
    }
}

/**
 * acc += A tile^T over the first ksteps k-steps: A a warp's 16 x 16KS fragments, given k-step by
 * k-step by a_of(ks, fragment) (ks a compile-time index), tile NS x 8 rows of [LD] 16-bit values
 * in shared memory (k along a row), acc 16 x 8NS (block n: tile rows 8n..). Each ldmatrix's row
 * address is this lane's one plus an immediate offset.
 */
template <typename T, int KS, int NS, int LD, typename AFragment>
__device__ __forceinline__ void product_abt_of(float (&acc)[NS][4], const AFragment& a_of, seqk::arch::SharedAddr tile, int ksteps,
                                               int lane) {
    // Matrices: rows 8n.. at columns 16ks and 16ks+8, then rows 8(n+1).. at both.
    const seqk::arch::SharedAddr mine = tile + (((lane / 16) * 8 + lane % 8) * LD + ((lane / 8) % 2) * 8) * 2;
    seqk::static_for<KS>([&](auto ks_) {
        constexpr int ks = decltype(ks_)::value;
        if (ks < ksteps) {
            uint32_t a[4];
            a_of(ks_, a);
            seqk::static_for<NS / 2>([&](auto pair) {
                constexpr int n = 2 * decltype(pair)::value;
                uint32_t tb[4];
                seqk::arch::ldmatrix_x4<(n * 8 * LD + ks * 16) * 2>(tb, mine);
                mma(acc[n], a, tb, T{});
                mma(acc[n + 1], a, tb + 2, T{});
            });
        }
    });
}

/** product_abt_of with A in registers: a[ks] the fragment of k-step ks. */
template <typename T, int KS, int NS, int LD>
__device__ __forceinline__ void product_abt(float (&acc)[NS][4], const uint32_t (&a)[KS][4], seqk::arch::SharedAddr tile, int ksteps,
                                            int lane) {
    product_abt_of<T, KS, NS, LD>(
        acc,
        [&](auto ks_, uint32_t (&f)[4]) {
            constexpr int ks = decltype(ks_)::value;
            f[0] = a[ks][0];
            f[1] = a[ks][1];
            f[2] = a[ks][2];
            f[3] = a[ks][3];
        },
        tile, ksteps, lane);
}

/**
 * product_abt_of with A in shared memory: the warp's 16 rows of [LD] 16-bit values (k along a row)
 * at rows, one ldmatrix.x4 a k-step (matrix x: rows 8 (x % 2).., columns 16ks + 8 (x / 2)).
 */
template <typename T, int KS, int NS, int LD>
__device__ __forceinline__ void product_abt(float (&acc)[NS][4], seqk::arch::SharedAddr rows, seqk::arch::SharedAddr tile, int ksteps,
                                            int lane) {
    const seqk::arch::SharedAddr mine = rows + ((lane % 16) * LD + (lane / 16) * 8) * 2;
    product_abt_of<T, KS, NS, LD>(
        acc,
        [&](auto ks_, uint32_t (&f)[4]) {
            constexpr int ks = decltype(ks_)::value;
            seqk::arch::ldmatrix_x4<ks * 16 * 2>(f, mine);
        },
        tile, ksteps, lane);
}

/**
 * acc += A tile for the 8-column blocks n < blocks: A a warp's 16 x 16KK fragments, tile 16KK rows
 * of [LD] 16-bit values in shared memory (k down a column), acc 16 x 8NO.
 */
template <typename T, int KK, int NO, int LD>
__device__ __forceinline__ void product_ab(float (&acc)[NO][4], const uint32_t (&a)[KK][4], seqk::arch::SharedAddr tile, int blocks,
                                           int lane) {
    // Lanes 0-15: rows 16kk.. at columns 8n (block n); lanes 16-31: at columns 8(n+1).
    const seqk::arch::SharedAddr mine = tile + ((lane % 16) * LD + (lane / 16) * 8) * 2;
    seqk::static_for<KK>([&](auto kk_) {
        constexpr int kk = decltype(kk_)::value;
        seqk::static_for<NO / 2>([&](auto pair) {
            constexpr int n = 2 * decltype(pair)::value;
            // With an odd block count the last pair's second block lies in the zeros load_tile
            // writes up to a multiple of 16 columns, and is never written out.
            if (n < blocks) {
                uint32_t tb[4];
                seqk::arch::ldmatrix_x4_trans<(kk * 16 * LD + n * 8) * 2>(tb, mine);
                mma(acc[n], a[kk], tb, T{});
                mma(acc[n + 1], a[kk], tb + 2, T{});
            }
        });
    });
}

/** A warp's 16 x 8NS C fragments, rounded to T, as the A fragments of NS / 2 k-steps (FlashAttention's register reuse). */
template <typename T, int NS>
__device__ __forceinline__ void c_to_a(uint32_t (&a)[NS / 2][4], const float (&c)[NS][4]) {
    SEQK_UNROLL
    for (int kk = 0; kk < NS / 2; kk++) {
        a[kk][0] = pack<T>(c[2 * kk][0], c[2 * kk][1]);
        a[kk][1] = pack<T>(c[2 * kk][2], c[2 * kk][3]);
        a[kk][2] = pack<T>(c[2 * kk + 1][0], c[2 * kk + 1][1]);
        a[kk][3] = pack<T>(c[2 * kk + 1][2], c[2 * kk + 1][3]);
    }
}

/** The exponent field, 1.0 and 128.0 (see nonfinite_sum) of a 16-bit storage type. */
template <typename T>
struct Bits16;
template <>
struct Bits16<__half> {
    static constexpr uint32_t EXP = 0x7c00u, ONE = 0x3c00u, WEIGHTLESS = 0x5800u;  // 1.0, 128.0
};
template <>
struct Bits16<__nv_bfloat16> {
    static constexpr uint32_t EXP = 0x7f80u, ONE = 0x3f80u, WEIGHTLESS = 0x4300u;  // 1.0, 128.0
};

/**
 * A pair of 16-bit v values as its finite part (non-finite halves 0) and two 0/1 indicators:
 * +inf or NaN (up), -inf or NaN (down). Their products with the allowed matrix (entries 0, 1
 * and 128) are exact counts, so no 0 x NaN can arise from them.
 */
template <typename T>
__device__ __forceinline__ void split_nonfinite(uint32_t w, uint32_t& fin, uint32_t& up, uint32_t& down) {
    fin = up = down = 0;
    SEQK_UNROLL
    for (int half = 0; half < 2; half++) {
        uint32_t x = (w >> (16 * half)) & 0xffffu;
        bool nonfinite = (x & Bits16<T>::EXP) == Bits16<T>::EXP;
        bool nan = nonfinite && (x & 0x7fffu) != Bits16<T>::EXP;
        bool negative = (x & 0x8000u) != 0;
        fin |= (nonfinite ? 0u : x) << (16 * half);
        up |= (nonfinite && (nan || !negative) ? Bits16<T>::ONE : 0u) << (16 * half);
        down |= (nonfinite && (nan || negative) ? Bits16<T>::ONE : 0u) << (16 * half);
    }
}

/**
 * Rows [j0, j0 + BN) of (b, kvh), columns [0, round16(cols)), into dst [BN][LD] as raw values
 * (16-bit patterns, or floats); zeros outside. The k and v tiles, and at DMAX 256 q's (its head
 * as kvh, BN = BLOCK_M). 16-byte cp.async chunks when `vec`, else element
 * by element. VEC: an instance that the host launches only with 16-byte rows (D and Dv multiples
 * of 8, unit column stride, 16-byte aligned rows): every chunk of the DMAX columns is one
 * cp.async, of 16 bytes or of zeros (past the rows or columns), in a constant number of passes
 * unrolled (each thread the same chunk column every pass: no division, no branch, addresses
 * bumped by a constant).
 */
template <typename T, typename R, int BN, int LD, bool VEC, int DMAX = 0>
__device__ __forceinline__ void load_tile(R* dst, const T* src, const long long* st, long long b, long long kvh, long long j0,
                                          long long rows, int cols, bool vec) {
    constexpr int PER_CHUNK = 16 / sizeof(T);
    if constexpr (VEC) {
        static_assert(sizeof(T) == sizeof(R) && DMAX > 0 && DMAX % PER_CHUNK == 0, "16-bit rows in whole chunks");
        constexpr int CHUNKS = DMAX / PER_CHUNK;                   // per row
        constexpr int ROWS_PER_PASS = WARPS * 32 / CHUNKS, PASSES = BN / ROWS_PER_PASS;
        static_assert(WARPS * 32 % CHUNKS == 0 && BN % ROWS_PER_PASS == 0, "every thread copies the same chunk column each pass");
        // This thread's chunk: row r0 + p ROWS_PER_PASS in pass p, columns e..e + PER_CHUNK - 1.
        const int r0 = static_cast<int>(threadIdx.x) / CHUNKS, e = static_cast<int>(threadIdx.x) % CHUNKS * PER_CHUNK;
        const int live = static_cast<int>(rows - j0);  // rows of this tile that exist (may be <= 0 or > BN)
        const bool column = e < cols;
        const T* const first_row = src + b * st[0] + kvh * st[1];  // exists: a tile is loaded only when the keys do
        const T* from = first_row + (j0 + r0) * st[2] + e;
        const long long pass_stride = ROWS_PER_PASS * st[2];
        R* to = dst + r0 * LD + e;
        SEQK_UNROLL
        for (int p = 0; p < PASSES; p++) {
            bool copy = column && r0 + p * ROWS_PER_PASS < live;
            seqk::arch::cp_async_16_or_zeros(to, copy ? from : first_row, copy);
            from += pass_stride;
            to += ROWS_PER_PASS * LD;
        }
        return;
    }
    int chunks = (cols + 15) / 16 * (16 / PER_CHUNK);
    for (int c = threadIdx.x; c < BN * chunks; c += blockDim.x) {
        int r = c / chunks;
        int e = (c % chunks) * PER_CHUNK;
        R* d = dst + r * LD + e;
        long long j = j0 + r;
        if (j >= rows || e >= cols) {
            for (int x = 0; x < PER_CHUNK; x++) {
                d[x] = R(0);
            }
            continue;
        }
        const T* g = src + b * st[0] + kvh * st[1] + j * st[2] + e * st[3];
        if (vec) {
            seqk::arch::cp_async_16(d, g);
        } else {
            for (int x = 0; x < PER_CHUNK; x++) {
                d[x] = e + x < cols ? raw(g[x * st[3]]) : R(0);
            }
        }
    }
}

/** Whether a length or causal mask blocks (row i, key j). */
__device__ __forceinline__ bool outside(const AttnShape& s, long long i, long long j, long long k_valid, long long q_valid) {
    return j >= k_valid || i >= q_valid || (s.causal == 1 && j > i) || (s.causal == 2 && j > i + (k_valid - q_valid));
}

/** The explicit masks' sum at (row i, key j) of (b, h): -inf where one blocks. */
__device__ __forceinline__ float bias_at(const AttnShape& s, long long b, long long h, long long i, long long j, const float* bias0,
                                         const float* bias1) {
    float add = 0.0f;
    if (bias0) {
        add += bias0[at(s.bias_stride[0], b, h, i, j)];
    }
    if (bias1) {
        add += bias1[at(s.bias_stride[1], b, h, i, j)];
    }
    return add;
}

/** Whether row i may attend to key j: no mask blocks the pair. */
__device__ __forceinline__ bool allowed(const AttnShape& s, long long b, long long h, long long i, long long j, long long k_valid,
                                        long long q_valid, const float* bias0, const float* bias1) {
    return !outside(s, i, j, k_valid, q_valid) && bias_at(s, b, h, i, j, bias0, bias1) != -INFINITY;
}

/**
 * Whether a mask may block a pair (live row of the warp, key of the tile) while the tile's v is
 * loaded: an explicit mask anywhere; the causal one where the tile reaches past the diagonal of
 * the warp's first row (later rows see more keys). Rows past the query length are written as 0
 * whatever their sums hold, and keys past the key length were loaded as zeros: neither counts.
 */
__device__ __forceinline__ bool tile_may_block(const AttnShape& s, long long warp_row0, long long j0, long long bn, long long k_valid,
                                               long long q_valid, bool bias) {
    if (bias) {
        return true;
    }
    if (s.causal == 0 || warp_row0 >= q_valid) {
        return false;
    }
    long long last_key = (j0 + bn < k_valid ? j0 + bn : k_valid) - 1;
    return last_key > warp_row0 + (s.causal == 2 ? k_valid - q_valid : 0);
}

/** Neither infinite nor NaN (one compare of the magnitude). */
__device__ __forceinline__ bool is_finite(float x) { return fabsf(x) < INFINITY; }

/**
 * A column sum of P v over the allowed keys from its finite part (P v', v' = v with non-finite
 * elements 0) and weighted counts of allowed keys whose v is +inf or NaN (up) and -inf or NaN
 * (down): an allowed key weighs 1, or 128 where its P is +0 (an underflowed weight: 0 x inf is
 * NaN, as on tiles no mask touches and in v1). At most 64 keys weigh 1 per tile, so a count of
 * 128 or more means such a key. NaN, +inf or -inf as the sum over those keys is, else the finite part.
 */
__device__ __forceinline__ float nonfinite_sum(float fin, float up, float down) {
    if (fin != fin || up >= 128.0f || down >= 128.0f || (up > 0.0f && down > 0.0f)) {
        return NAN;
    }
    return up > 0.0f ? INFINITY : down > 0.0f ? -INFINITY : fin;
}

__device__ __forceinline__ bool finite4(const float (&a)[4]) {
    return is_finite(a[0]) && is_finite(a[1]) && is_finite(a[2]) && is_finite(a[3]);
}

constexpr float LOG2E = 1.4426950408889634f;

/**
 * Scales (and, when MASK, masks) a warp's 16 x 8*NS score fragments (rows my_row, keys from j0)
 * in place and gives each of the thread's two rows its maximum over the tile (tile_max; fmaxf
 * drops a NaN score, which still reaches l and o through its weight exp(NaN)). MASK: the tile
 * straddles a key length, the causal diagonal or has an explicit mask: blocked entries are -inf,
 * never read out of bounds. Without MASK every pair of the tile is allowed for every row that
 * will be written.
 */
template <int NS, bool MASK>
__device__ __forceinline__ void scale_scores(float (&sc)[NS][4], float (&tile_max)[2], const long long (&my_row)[2], long long j0, int t,
                                             long long b, long long h, long long k_valid, long long q_valid, float scale,
                                             const float* bias0, const float* bias1, const AttnShape& s) {
    SEQK_UNROLL
    for (int r = 0; r < 2; r++) {
        long long i = my_row[r];
        float mx = -INFINITY;
        SEQK_UNROLL
        for (int n = 0; n < NS; n++) {
            SEQK_UNROLL
            for (int e = 0; e < 2; e++) {
                float x;
                if (MASK) {
                    long long j = j0 + n * 8 + 2 * t + e;
                    bool blocked = outside(s, i, j, k_valid, q_valid);
                    float add = blocked ? 0.0f : bias_at(s, b, h, i, j, bias0, bias1);
                    x = blocked || add == -INFINITY ? -INFINITY : fmaf(sc[n][2 * r + e], scale, add);
                } else {
                    x = sc[n][2 * r + e] * scale;
                }
                sc[n][2 * r + e] = x;
                mx = fmaxf(mx, x);
            }
        }
        mx = fmaxf(mx, seqk::arch::shfl_xor(0xffffffffu, mx, 1));
        tile_max[r] = fmaxf(mx, seqk::arch::shfl_xor(0xffffffffu, mx, 2));
    }
}

/**
 * The online softmax's update for a tile of scaled scores (scale_scores): the running max m, sum
 * l and output o of the thread's two rows; leaves the unnormalized probabilities in sc. A weight
 * is exp2((x - m) log2 e) with x the scaled score, exactly 1 at the maximum and 0 far below it for
 * any finite scores. Not FlashAttention-2's single FFMA exp2(s scale log2 e - m scale log2 e):
 * scaling by log2 e first turns finite scores above FLT_MAX / log2 e (a -FLT_MAX padding mask)
 * into infinities, and the rounding of m scale log2 e, common to a row's weights within a tile but
 * not across tiles, is huge for large scores. HOT: a row's max may be +inf (an overflowed or
 * infinite score), handled here; without HOT the caller has made sure no tile_max is +inf.
 */
template <int NS, int NO, bool HOT>
__device__ __forceinline__ void softmax_update(float (&sc)[NS][4], float (&o)[NO][4], float (&m)[2], float (&l)[2],
                                               const float (&tile_max)[2]) {
    SEQK_UNROLL
    for (int r = 0; r < 2; r++) {
        float m_new = fmaxf(m[r], tile_max[r]);
        float base = m_new == -INFINITY ? 0.0f : m_new;
        float corr = m_new == -INFINITY ? 1.0f : exp2f((m[r] - m_new) * LOG2E);
        if (HOT && m_new == INFINITY) {
            // A score overflowed fp32: the +inf keys share the weight (softmax_weight). Rare, so a
            // branch here rather than a select on every weight: scores become 0 at +inf and -inf
            // elsewhere (NaN stays NaN), so the loop below gives weights 1 and 0, never exp(inf - inf).
            base = 0.0f;
            corr = m[r] == INFINITY ? 1.0f : 0.0f;
            SEQK_UNROLL
            for (int n = 0; n < NS; n++) {
                SEQK_UNROLL
                for (int e = 0; e < 2; e++) {
                    float x = sc[n][2 * r + e];
                    sc[n][2 * r + e] = x == INFINITY ? 0.0f : x - INFINITY;
                }
            }
        }
        float sum = 0.0f;
        SEQK_UNROLL
        for (int n = 0; n < NS; n++) {
            SEQK_UNROLL
            for (int e = 0; e < 2; e++) {
                float p = exp2f((sc[n][2 * r + e] - base) * LOG2E);
                sc[n][2 * r + e] = p;
                sum += p;
            }
        }
        l[r] = l[r] * corr + sum;
        m[r] = m_new;
        SEQK_UNROLL
        for (int n = 0; n < NO; n++) {
            o[n][2 * r] *= corr;
            o[n][2 * r + 1] *= corr;
        }
    }
}

/** scale_scores, then softmax_update with +inf handled: a whole tile's online softmax. */
template <int NS, int NO, bool MASK>
__device__ __forceinline__ void online_softmax(float (&sc)[NS][4], float (&o)[NO][4], float (&m)[2], float (&l)[2],
                                               const long long (&my_row)[2], long long j0, int t, long long b, long long h,
                                               long long k_valid, long long q_valid, float scale, const float* bias0,
                                               const float* bias1, const AttnShape& s) {
    float tile_max[2];
    scale_scores<NS, MASK>(sc, tile_max, my_row, j0, t, b, h, k_valid, q_valid, scale, bias0, bias1, s);
    softmax_update<NS, NO, true>(sc, o, m, l, tile_max);
}

/**
 * The thread's two rows of out (normalized; 0 for a row with no allowed key), handed to
 * put(r, n, lo, hi) a column pair at a time (row my_row[r], columns 8n + 2t and 8n + 2t + 1),
 * and their LSE (-inf for such a row), written here. Rows past the tensor's query length are
 * skipped. l == 0 marks a row with no allowed key, not l > 0: a NaN l (a NaN score) must give
 * NaN, and a masked row's o may hold 0 x NaN from a NaN v its tile loaded, which must not reach
 * its zeros. Rows past the entry's query length have no allowed key: tiles without masks summed
 * their scores anyway, so they are told by their index.
 */
template <int NO, typename Put>
__device__ __forceinline__ void finish_rows(float (&o)[NO][4], const float (&m)[2], float (&l)[2], const long long (&my_row)[2], int t,
                                            long long b, long long h, long long q_valid, float* lse, const AttnShape& s,
                                            const Put& put) {
    SEQK_UNROLL
    for (int r = 0; r < 2; r++) {
        l[r] += seqk::arch::shfl_xor(0xffffffffu, l[r], 1);
        l[r] += seqk::arch::shfl_xor(0xffffffffu, l[r], 2);
        long long i = my_row[r];
        if (i >= s.q_len) {
            continue;
        }
        bool dead = l[r] == 0.0f || i >= q_valid;
        float inv = 1.0f / l[r];
        SEQK_UNROLL
        for (int n = 0; n < NO; n++) {
            put(r, n, dead ? 0.0f : o[n][2 * r] * inv, dead ? 0.0f : o[n][2 * r + 1] * inv);
        }
        if (t == 0) {
            lse[(b * s.q_heads + h) * s.q_len + i] = dead ? -INFINITY : m[r] + logf(l[r]);
        }
    }
}

/** finish_rows with out written from the fragments, element by element (the TF32 forward, and the general 16-bit instances). */
template <typename T, int NO>
__device__ __forceinline__ void write_rows(float (&o)[NO][4], const float (&m)[2], float (&l)[2], const long long (&my_row)[2],
                                           int t, long long b, long long h, long long q_valid, T* out, float* lse,
                                           const AttnShape& s) {
    finish_rows<NO>(o, m, l, my_row, t, b, h, q_valid, lse, s, [&](int r, int n, float lo, float hi) {
        int col = n * 8 + 2 * t;
        if (col < s.value_dim) {
            out[at(s.o_stride, b, h, my_row[r], col)] = seqk::from_float<T>(lo);
        }
        if (col + 1 < s.value_dim) {
            out[at(s.o_stride, b, h, my_row[r], col + 1)] = seqk::from_float<T>(hi);
        }
    });
}

/**
 * The 16-bit no-bias forward's out, through shared memory (FlashAttention-2's epilogue): each
 * warp stages its 16 rows, rounded to T, in stage ([BLOCK_M][LD] 16-bit; column pairs as 4-byte
 * stores, the 8 rows of a store on distinct banks since LD / 2 words is 4 mod 32), then, after a
 * barrier, the block writes whole rows: 16-byte stores where out16 (Dv a multiple of 8, unit column stride,
 * 16-byte aligned rows: the host checked), else one 2-byte store a thread with consecutive
 * threads on consecutive columns. Both write what the fragments' element stores wrote: the same
 * rows (below the tensor's query length), columns (below Dv) and bits. stage must be free: the
 * caller's key loop ended at a barrier with every copy waited for. The LSE is written by
 * finish_rows.
 */
template <typename T, int NO, int LD>
__device__ __forceinline__ void write_rows_staged(float (&o)[NO][4], const float (&m)[2], float (&l)[2], const long long (&my_row)[2],
                                                  long long b, long long h, long long q_valid, uint16_t* stage, bool out16, T* out,
                                                  float* lse, const AttnShape& s) {
    constexpr int DMAX = NO * 8;
    // The thread's place, from threadIdx and its first row rather than kept from tile_block (fewer
    // values live across the key loop).
    const int warp = static_cast<int>(threadIdx.x) / 32, g = static_cast<int>(threadIdx.x) % 32 / 4, t = static_cast<int>(threadIdx.x) % 4;
    const long long row0 = my_row[0] - warp * 16 - g;
    uint16_t* const mine = stage + (warp * 16 + g) * LD + 2 * t;
    finish_rows<NO>(o, m, l, my_row, t, b, h, q_valid, lse, s, [&](int r, int n, float lo, float hi) {
        *reinterpret_cast<uint32_t*>(mine + r * 8 * LD + n * 8) = pack<T>(lo, hi);
    });
    __syncthreads();  // every warp's rows are staged before the block copies them out
    const int dv = static_cast<int>(s.value_dim);
    const long long rows = s.q_len - row0 < BLOCK_M ? s.q_len - row0 : BLOCK_M;
    uint16_t* const to = reinterpret_cast<uint16_t*>(out);
    if (out16) {
        constexpr int CHUNKS = DMAX / 8;  // 16-byte chunks of a staged row
        for (int c = threadIdx.x; c < BLOCK_M * CHUNKS; c += WARPS * 32) {
            int r = c / CHUNKS, e = c % CHUNKS * 8;
            if (r < rows && e < dv) {
                *reinterpret_cast<seqk::Chunk16*>(to + at(s.o_stride, b, h, row0 + r, e)) =
                    *reinterpret_cast<const seqk::Chunk16*>(stage + r * LD + e);
            }
        }
    } else {
        const int elements = static_cast<int>(rows) * dv;
        for (int c = threadIdx.x; c < elements; c += WARPS * 32) {
            int r = c / dv, e = c % dv;
            to[at(s.o_stride, b, h, row0 + r, e)] = stage[r * LD + e];
        }
    }
}

/** Where a block of the tensor-core forward works: its (b, h) and first query row, the entry's valid lengths, and the thread's place in its warp. */
struct TileBlock {
    long long b, h, kvh, row0, k_valid, q_valid;
    int warp, lane, g, t;
};

__device__ __forceinline__ TileBlock tile_block(const AttnShape& s, const int* key_lengths, const int* query_lengths) {
    TileBlock w;
    long long q_tiles = (s.q_len + BLOCK_M - 1) / BLOCK_M;
    long long bh = blockIdx.x / q_tiles;
    w.b = bh / s.q_heads;
    w.h = bh % s.q_heads;
    w.kvh = w.h / (s.q_heads / s.kv_heads);
    w.row0 = (blockIdx.x % q_tiles) * BLOCK_M;
    w.k_valid = key_lengths ? key_lengths[w.b] : s.kv_len;
    w.q_valid = query_lengths ? query_lengths[w.b] : s.q_len;
    w.warp = threadIdx.x / 32;
    w.lane = seqk::arch::lane_id();
    w.g = w.lane / 4;
    w.t = w.lane % 4;
    return w;
}

/**
 * The double-buffered k and v tiles of a block, [BN][LD] each, as the loads and products find
 * them: k(i) and v(i), buffer i = 0, 1. Two forms, because the registers of the kernels differ:
 * PointerBuffers keeps the four pointers in an array, which lives in local memory and is read
 * once a tile (the kernel with every option needs the registers computed addresses would take:
 * it spills on sm_80 without); OffsetBuffers computes them from the base (the no-bias kernel at
 * 128 spills on sm_90 with the array).
 */
template <typename R>
struct PointerBuffers {
    R* k_tiles[2];
    R* v_tiles[2];
    __device__ __forceinline__ PointerBuffers(R* base, int tile_elems)
        : k_tiles{base, base + tile_elems}, v_tiles{base + 2 * tile_elems, base + 3 * tile_elems} {}
    __device__ __forceinline__ R* k(int i) const { return k_tiles[i]; }
    __device__ __forceinline__ R* v(int i) const { return v_tiles[i]; }
};

template <typename R>
struct OffsetBuffers {
    R* base;
    int tile_elems;
    __device__ __forceinline__ OffsetBuffers(R* b, int n) : base(b), tile_elems(n) {}
    __device__ __forceinline__ R* k(int i) const { return base + i * tile_elems; }
    __device__ __forceinline__ R* v(int i) const { return base + (2 + i) * tile_elems; }
};

/**
 * Makes k and v tile `tile` ready in buffer tile % 2, first starting the cp.async group of
 * tile + 1 (if any) into the other buffer so it loads while this one is used. The caller started
 * tile 0 and ends each tile with __syncthreads() before its buffer is reused.
 */
template <typename T, typename R, int BN, int LD, bool VEC, int DMAX = 0, typename Buffers>
__device__ __forceinline__ void next_kv_tile(const Buffers& buffers, const T* k, const T* v, const AttnShape& s, const TileBlock& w,
                                             long long key_end, long long tile, long long kv_tiles, bool vec) {
    if (tile + 1 < kv_tiles) {
        int next = static_cast<int>((tile + 1) % 2);
        load_tile<T, R, BN, LD, VEC, DMAX>(buffers.k(next), k, s.k_stride, w.b, w.kvh, (tile + 1) * BN, key_end, static_cast<int>(s.head_dim), vec);
        load_tile<T, R, BN, LD, VEC, DMAX>(buffers.v(next), v, s.v_stride, w.b, w.kvh, (tile + 1) * BN, key_end, static_cast<int>(s.value_dim), vec);
        seqk::arch::cp_async_commit();
        seqk::arch::cp_async_wait<1>();
    } else {
        seqk::arch::cp_async_wait<0>();
    }
    __syncthreads();
}

/** Starts the cp.async group of k and v tile 0 (when there is one) into buffer 0. */
template <typename T, typename R, int BN, int LD, bool VEC, int DMAX = 0, typename Buffers>
__device__ __forceinline__ void first_kv_tile(const Buffers& buffers, const T* k, const T* v, const AttnShape& s, const TileBlock& w,
                                              long long key_end, long long kv_tiles, bool vec) {
    if (kv_tiles > 0) {
        load_tile<T, R, BN, LD, VEC, DMAX>(buffers.k(0), k, s.k_stride, w.b, w.kvh, 0, key_end, static_cast<int>(s.head_dim), vec);
        load_tile<T, R, BN, LD, VEC, DMAX>(buffers.v(0), v, s.v_stride, w.b, w.kvh, 0, key_end, static_cast<int>(s.value_dim), vec);
        seqk::arch::cp_async_commit();
    }
}

/** The last key a tile of query rows [row0, row0 + rows) may attend to, plus one (0: none). */
__device__ __forceinline__ long long key_end_of(const AttnShape& s, long long row0, long long rows, long long k_valid,
                                                long long q_valid) {
    long long last_row = (row0 + rows < q_valid ? row0 + rows : q_valid) - 1;
    if (last_row < row0) {
        return 0;
    }
    long long key_end = k_valid;
    if (s.causal == 1) {
        key_end = key_end < last_row + 1 ? key_end : last_row + 1;
    } else if (s.causal == 2) {
        long long diag = last_row + (k_valid - q_valid) + 1;
        key_end = key_end < diag ? key_end : diag;
    }
    return key_end > 0 ? key_end : 0;
}

/**
 * The leading key tiles no mask touches for any row of a block whose first row is row0
 * (FlashAttention-2 masks only the tiles that straddle a boundary): before the key length and,
 * causal, at or before the diagonal of that first row; none with an explicit mask. Rows past the
 * query length are told apart by the caller.
 */
__device__ __forceinline__ long long unmasked_key_tiles(const AttnShape& s, long long row0, long long k_valid, long long q_valid,
                                                        bool bias, long long bn, long long kv_tiles) {
    if (bias) {
        return 0;
    }
    long long limit = k_valid;
    if (s.causal != 0) {
        long long diag = row0 + (s.causal == 2 ? k_valid - q_valid : 0) + 1;
        limit = limit < diag ? limit : diag;
    }
    long long tiles = limit > 0 ? limit / bn : 0;
    return tiles < kv_tiles ? tiles : kv_tiles;
}

/**
 * o += P v for a tile where a mask may block some of the warp's (row, key) pairs. A blocked pair's
 * P is 0, but 0 x NaN (or x inf) from its v must not reach the row: the reference never reads a
 * blocked key. So each 8-column block's product goes to a fresh accumulator first, and joins o
 * when the whole warp's is finite (the common case). Otherwise (a non-finite v, or a NaN score)
 * the block is recomputed: P v' over the finite part of v, plus weighted counts of the allowed
 * pairs whose v is non-finite (the allowed matrix: 0 blocked, 1 allowed, 128 allowed with P = +0;
 * times 0/1 indicators), so the block gets NaN or +-inf as the sum over the allowed keys does
 * (nonfinite_sum). Blocked pairs are told from allowed ones whose weight underflowed by marking
 * P's fragment -0 there.
 */
template <typename T, int NO, int BN, int LD, typename Allowed>
__device__ __forceinline__ void pv_tile_may_block(float (&o)[NO][4], uint32_t (&pa)[BN / 16][4], const uint16_t* vt, int oblocks, int lane, int t,
                                                  long long j0, const Allowed& allowed_pair) {
    unsigned redo = 0;  // warp-uniform: the 8-column blocks to recompute
    SEQK_UNROLL
    for (int n = 0; n < NO; n++) {
        if (n < oblocks) {
            float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            SEQK_UNROLL
            for (int kk = 0; kk < BN / 16; kk++) {
                uint32_t vb[2];
                seqk::arch::ldmatrix_x2_trans(vb, vt + (kk * 16 + lane % 16) * LD + n * 8);
                mma(acc, pa[kk], vb, T{});
            }
            if (seqk::arch::all(0xffffffffu, finite4(acc))) {
                SEQK_UNROLL
                for (int x = 0; x < 4; x++) {
                    o[n][x] += acc[x];
                }
            } else {
                redo |= 1u << n;
            }
        }
    }
    if (redo == 0) {
        return;
    }
    // Fragment x of k-step kk holds the thread's row x % 2 (0: g, 1: g + 8), keys j0 + 16kk + 8(x / 2) + 2t + e (e = 0, 1
    // in its halves); allowed_pair(row, key) tells whether a mask lets the pair through.
    SEQK_UNROLL
    for (int kk = 0; kk < BN / 16; kk++) {
        SEQK_UNROLL
        for (int x = 0; x < 4; x++) {
            SEQK_UNROLL
            for (int e = 0; e < 2; e++) {
                long long j = j0 + kk * 16 + (x / 2) * 8 + 2 * t + e;
                if (!allowed_pair(x % 2, j)) {
                    pa[kk][x] = (pa[kk][x] & ~(0xffffu << (16 * e))) | (0x8000u << (16 * e));
                }
            }
        }
    }
    SEQK_UNROLL
    for (int n = 0; n < NO; n++) {
        if ((redo >> n) & 1u) {
            float fin[4] = {0.0f, 0.0f, 0.0f, 0.0f}, up[4] = {0.0f, 0.0f, 0.0f, 0.0f}, down[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            SEQK_UNROLL
            for (int kk = 0; kk < BN / 16; kk++) {
                uint32_t vb[2], vf[2], vu[2], vd[2], allow[4];
                seqk::arch::ldmatrix_x2_trans(vb, vt + (kk * 16 + lane % 16) * LD + n * 8);
                split_nonfinite<T>(vb[0], vf[0], vu[0], vd[0]);
                split_nonfinite<T>(vb[1], vf[1], vu[1], vd[1]);
                SEQK_UNROLL
                for (int x = 0; x < 4; x++) {
                    uint32_t lo = pa[kk][x] & 0xffffu, hi = pa[kk][x] >> 16;
                    lo = lo == 0x8000u ? 0u : lo == 0u ? Bits16<T>::WEIGHTLESS : Bits16<T>::ONE;
                    hi = hi == 0x8000u ? 0u : hi == 0u ? Bits16<T>::WEIGHTLESS : Bits16<T>::ONE;
                    allow[x] = lo | (hi << 16);
                }
                mma(fin, pa[kk], vf, T{});
                mma(up, allow, vu, T{});
                mma(down, allow, vd, T{});
            }
            SEQK_UNROLL
            for (int x = 0; x < 4; x++) {
                o[n][x] += nonfinite_sum(fin[x], up[x], down[x]);
            }
        }
    }
}

/** Marks a tile step's kind at compile time (the generic lambda below takes it as its argument). */
template <bool B>
struct Masked {
    static constexpr bool value = B;
};

/**
 * The two instances of the 16-bit tensor-core forward. GENERAL: every option at run time
 * (explicit masks, causal, lengths, 16-byte or element loads). NO_BIAS: no explicit mask and
 * 16-byte rows, which the host guarantees when it picks it; causal and lengths at run time.
 */
enum class TcInstance { GENERAL, NO_BIAS };

template <typename T, int DMAX, int BN, TcInstance I>
__device__ void attn_fwd_tc(const T* q, const T* k, const T* v, T* out, float* lse, const int* key_lengths,
                            const int* query_lengths, const float* bias0, const float* bias1, const AttnShape& s, bool vec,
                            bool out16) {
    static_assert(DMAX % 16 == 0 && BN % 16 == 0, "tiles are whole mma steps");
    constexpr int LD = DMAX + 8;
    constexpr int KS = DMAX / 16;  // k-steps of q k^T
    constexpr int NS = BN / 8;     // 8-key column blocks of S
    constexpr int NO = DMAX / 8;   // 8-column blocks of the output
    constexpr bool VEC = I == TcInstance::NO_BIAS;
    // Above 128 columns q stays in shared memory ([BLOCK_M][LD] after the four k and v tiles),
    // one ldmatrix.x4 a k-step: its fragments (DMAX / 4 registers a thread) do not fit beside the
    // output's (DMAX / 2) without spilling (FlashAttention-2 keeps q in shared memory likewise).
    constexpr bool Q_SHARED = DMAX > 128;
    if (I == TcInstance::NO_BIAS) {
        bias0 = bias1 = nullptr;  // constant from here on: the bias code folds away
    }
    SEQK_DYNAMIC_SHARED(uint16_t, smem);

    using Buffers = std::conditional_t<I == TcInstance::NO_BIAS, OffsetBuffers<uint16_t>, PointerBuffers<uint16_t>>;
    const Buffers buffers(smem, BN * LD);

    const TileBlock blk = tile_block(s, key_lengths, query_lengths);
    const long long b = blk.b, h = blk.h, k_valid = blk.k_valid, q_valid = blk.q_valid;
    const int warp = blk.warp, lane = blk.lane, g = blk.g, t = blk.t;
    const int d = static_cast<int>(s.head_dim), dv = static_cast<int>(s.value_dim);
    const float scale = static_cast<float>(s.scale);

    // Keys this tile of rows can see: none past the key length, none past the diagonal of its last valid row.
    long long key_end = key_end_of(s, blk.row0, BLOCK_M, k_valid, q_valid);
    long long kv_tiles = (key_end + BN - 1) / BN;
    long long unmasked_tiles = unmasked_key_tiles(s, blk.row0, k_valid, q_valid, bias0 || bias1, BN, kv_tiles);

    // This warp's q rows as A fragments (zeros past the row count and the head dimension), or,
    // Q_SHARED, the block's q tile in shared memory (loaded with k and v tile 0; zeros likewise).
    long long my_row[2] = {blk.row0 + warp * 16 + g, blk.row0 + warp * 16 + g + 8};
    uint32_t qa[Q_SHARED ? 1 : KS][4];
    seqk::arch::SharedAddr q_rows = 0;  // Q_SHARED: this warp's 16 rows of the q tile
    if constexpr (Q_SHARED) {
        uint16_t* const q_tile = smem + 4 * BN * LD;
        if (kv_tiles > 0) {
            load_tile<T, uint16_t, BLOCK_M, LD, VEC, DMAX>(q_tile, q, s.q_stride, b, h, blk.row0, s.q_len, d, vec);
        }
        q_rows = seqk::arch::shared_addr(q_tile + warp * 16 * LD);
    } else {
        row_fragments<T, KS>(qa, q, s.q_stride, b, h, my_row, s.q_len, d, t);
    }

    float m[2] = {-INFINITY, -INFINITY};
    float l[2] = {0.0f, 0.0f};
    float o[NO][4];
    SEQK_UNROLL
    for (int n = 0; n < NO; n++) {
        o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    }
    // NO_BIAS leaves a tile whose scores reach +inf to the masked step (see `step`), so its
    // unmasked loop has no code for that case; GENERAL handles it in place (the restructured
    // loops cost it registers it does not have on sm_80).
    constexpr bool LEAVE_HOT = I == TcInstance::NO_BIAS;
    // NO_BIAS runs every k-step and column block of DMAX: past D and Dv the fragments and tiles
    // hold zeros, so the sums are unchanged and the loop has no branches (FlashAttention-2 pads
    // head dimensions likewise); GENERAL skips them at run time.
    const int ksteps = VEC ? KS : (d + 15) / 16;
    const bool live[2] = {my_row[0] < q_valid, my_row[1] < q_valid};
    const int oblocks = VEC ? NO : (dv + 7) / 8;

    long long tile = 0;
    // One key tile: S = q k^T, the online softmax (masked or not), o += P v; the caller ends it
    // with the barrier after which its buffer may be refilled. `load`: the tile's buffer is made
    // ready first (next_kv_tile, a barrier); false only to redo a tile whose buffer is ready.
    // LEAVE_HOT: returns true, with the warp's state untouched, where an unmasked tile has a row
    // whose scores reach +inf (overflowed or infinite): the rare case is left to the masked step,
    // which handles it, so the unmasked loop holds no code for it.
    auto step = [&](auto masked, bool load) -> bool {
        constexpr bool MASK = decltype(masked)::value;
        int buf = static_cast<int>(tile % 2);
        if (load) {
            next_kv_tile<T, uint16_t, BN, LD, VEC, DMAX>(buffers, k, v, s, blk, key_end, tile, kv_tiles, vec);
        }
        const uint16_t* vt = buffers.v(buf);
        long long j0 = tile * BN;

        float sc[NS][4];
        SEQK_UNROLL
        for (int n = 0; n < NS; n++) {
            sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.0f;
        }
        if constexpr (Q_SHARED) {
            product_abt<T, KS, NS, LD>(sc, q_rows, seqk::arch::shared_addr(buffers.k(buf)), ksteps, lane);
        } else {
            product_abt<T, KS, NS, LD>(sc, qa, seqk::arch::shared_addr(buffers.k(buf)), ksteps, lane);
        }

        float tile_max[2];
        scale_scores<NS, MASK>(sc, tile_max, my_row, j0, t, b, h, k_valid, q_valid, scale, bias0, bias1, s);
        // Rows past the query length are written as zeros whatever they sum (a +inf there runs the
        // update below to NaN harmlessly), so junk in them never sends the block to the masked loop.
        if (!MASK && LEAVE_HOT
            && seqk::arch::any(0xffffffffu, (live[0] && tile_max[0] == INFINITY) || (live[1] && tile_max[1] == INFINITY))) {
            return true;
        }
        softmax_update<NS, NO, MASK || !LEAVE_HOT>(sc, o, m, l, tile_max);

        // out += P v: P's C fragments of two 8-key blocks are exactly the A fragment of one k-step.
        uint32_t pa[BN / 16][4];
        c_to_a<T, NS>(pa, sc);
        if (MASK && tile_may_block(s, blk.row0 + warp * 16, j0, BN, k_valid, q_valid, bias0 || bias1)) {
            pv_tile_may_block<T, NO, BN, LD>(o, pa, vt, oblocks, lane, t, j0, [&](int r, long long j) {
                return allowed(s, b, h, my_row[r], j, k_valid, q_valid, bias0, bias1);
            });
        } else {
            product_ab<T, BN / 16, NO, LD>(o, pa, seqk::arch::shared_addr(vt), oblocks, lane);
        }
        return false;
    };

    first_kv_tile<T, uint16_t, BN, LD, VEC, DMAX>(buffers, k, v, s, blk, key_end, kv_tiles, vec);
    if constexpr (LEAVE_HOT) {
        bool hot = false, redo = false;
        for (; tile < unmasked_tiles; tile++) {
            hot = step(Masked<false>{}, true);
            // Every warp is done with this buffer before the next load refills it; and when a warp
            // left its tile to the masked step, the whole block leaves this loop (so every thread
            // meets the same barriers).
            if (__syncthreads_or(hot)) {
                redo = true;
                break;
            }
        }
        // The rest in the masked loop. After a break its first tile is the one left: still in its
        // buffer (the next load into that buffer comes after the next barrier), done over by the
        // warps that left it.
        for (; tile < kv_tiles; tile++) {
            if (!redo || hot) {
                step(Masked<true>{}, !redo);
            }
            redo = false;
            __syncthreads();  // every warp is done with this buffer before the next load refills it
        }
    } else {
        for (; tile < unmasked_tiles; tile++) {
            step(Masked<false>{}, true);
            __syncthreads();  // every warp is done with this buffer before the next load refills it
        }
        for (; tile < kv_tiles; tile++) {
            step(Masked<true>{}, true);
            __syncthreads();
        }
    }

    if constexpr (I == TcInstance::NO_BIAS) {
        write_rows_staged<T, NO, LD>(o, m, l, my_row, b, h, q_valid, smem, out16, out, lse, s);
    } else {
        // The every-option instance stores its fragments' elements: staging spilled it on sm_80-sm_90.
        (void) out16;
        write_rows<T, NO>(o, m, l, my_row, t, b, h, q_valid, out, lse, s);
    }
}

// TF32 forward for F32 storage (the opt-in precision mode): the tensor-core kernel's tiling with
// mma.m16n8k8.tf32. k and v tiles are fp32 in shared memory ([BN][DMAX + 4]: the +4 puts the 8
// rows a B fragment reads on distinct banks); operands are rounded with to_tf32 as they are
// loaded into fragments. The tf32 A layout (rows g / g+8, columns t / t+4) differs from the C
// layout the scores come in, so each warp writes P to its own 16 x (BN + 4) shared rows and reads
// the A fragments back (a warp-local exchange; __syncwarp orders it).
/**
 * A float v as a TF32 operand of its finite part and 0/1 indicators as split_nonfinite. Judged
 * after rounding: TF32 rounds |v| near FLT_MAX up to infinity, which the fast path multiplies as such.
 */
__device__ __forceinline__ void split_nonfinite_tf32(float v, uint32_t& fin, uint32_t& up, uint32_t& down) {
    constexpr uint32_t ONE = 0x3f800000u;
    uint32_t rounded = seqk::arch::to_tf32(v);
    bool nonfinite = (rounded & 0x7f800000u) == 0x7f800000u;
    fin = nonfinite ? 0u : rounded;
    up = nonfinite && !(v < 0.0f) ? ONE : 0u;
    down = nonfinite && !(v > 0.0f) ? ONE : 0u;
}

/** One thread's four sums of an 8-column block of P v (its C fragment). */
struct ColumnSums {
    float v[4];
};

/**
 * pv_tf32_tile_may_block's recompute of one 8-column block (v columns from vt_block), from the
 * warp's marked P rows: P v' and the weighted counts, combined by nonfinite_sum.
 */
__device__ __forceinline__ ColumnSums recompute_tf32_block(const float* p_rows, const float* vt_block, int g, int t, int ld, int pld,
                                                        int ksteps) {
    float fin[4] = {0.0f, 0.0f, 0.0f, 0.0f}, up[4] = {0.0f, 0.0f, 0.0f, 0.0f}, down[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int kk = 0; kk < ksteps; kk++) {
        float p[4] = {p_rows[g * pld + kk * 8 + t], p_rows[(g + 8) * pld + kk * 8 + t], p_rows[g * pld + kk * 8 + t + 4],
                      p_rows[(g + 8) * pld + kk * 8 + t + 4]};
        uint32_t pa[4], allow[4];
        SEQK_UNROLL
        for (int x = 0; x < 4; x++) {
            pa[x] = seqk::arch::to_tf32(p[x]);
            allow[x] = marked_blocked(p[x]) ? 0u : p[x] == 0.0f ? 0x43000000u : 0x3f800000u;  // 0, 128 (+0: weightless), 1
        }
        uint32_t vf[2], vu[2], vd[2];
        split_nonfinite_tf32(vt_block[(kk * 8 + t) * ld + g], vf[0], vu[0], vd[0]);
        split_nonfinite_tf32(vt_block[(kk * 8 + t + 4) * ld + g], vf[1], vu[1], vd[1]);
        seqk::arch::mma_m16n8k8_tf32(fin, pa, vf, fin);
        seqk::arch::mma_m16n8k8_tf32(up, allow, vu, up);
        seqk::arch::mma_m16n8k8_tf32(down, allow, vd, down);
    }
    ColumnSums sums;
    SEQK_UNROLL
    for (int x = 0; x < 4; x++) {
        sums.v[x] = nonfinite_sum(fin[x], up[x], down[x]);
    }
    return sums;
}

/**
 * pv_tile_may_block for the TF32 kernel: P comes from the warp's shared rows (p_rows, [16][PLD]),
 * where the blocked pairs are marked -0 before the recompute; each lane marks the entries it wrote.
 */
template <int NO, int BN, int LD, int PLD>
__device__ __forceinline__ void pv_tf32_tile_may_block(float (&o)[NO][4], float* p_rows, const float* vt, int oblocks, int g, int t,
                                       const long long (&my_row)[2], long long j0, long long b, long long h, long long k_valid,
                                       long long q_valid, const float* bias0, const float* bias1, const AttnShape& s) {
    // Rolled over n (the tile keeps nearly every register for o and q): each block's product
    // reaches o through a static dispatch over m, and a block to recompute is recomputed in place.
    bool marked = false;  // warp-uniform: whether the blocked pairs of p_rows are marked -0 yet
    SEQK_NO_UNROLL
    for (int n = 0; n < oblocks; n++) {
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        SEQK_UNROLL
        for (int kk = 0; kk < BN / 8; kk++) {
            uint32_t pa[4] = {seqk::arch::to_tf32(p_rows[g * PLD + kk * 8 + t]), seqk::arch::to_tf32(p_rows[(g + 8) * PLD + kk * 8 + t]),
                              seqk::arch::to_tf32(p_rows[g * PLD + kk * 8 + t + 4]),
                              seqk::arch::to_tf32(p_rows[(g + 8) * PLD + kk * 8 + t + 4])};
            uint32_t vb[2] = {seqk::arch::to_tf32(vt[(kk * 8 + t) * LD + n * 8 + g]),
                              seqk::arch::to_tf32(vt[(kk * 8 + t + 4) * LD + n * 8 + g])};
            seqk::arch::mma_m16n8k8_tf32(acc, pa, vb, acc);
        }
        if (!seqk::arch::all(0xffffffffu, finite4(acc))) {
            if (!marked) {
                seqk::arch::syncwarp(0xffffffffu);  // every lane has read the P rows before they are marked
                SEQK_UNROLL
                for (int nn = 0; nn < BN / 8; nn++) {
                    SEQK_UNROLL
                    for (int r = 0; r < 2; r++) {
                        SEQK_UNROLL
                        for (int e = 0; e < 2; e++) {
                            if (!allowed(s, b, h, my_row[r], j0 + nn * 8 + 2 * t + e, k_valid, q_valid, bias0, bias1)) {
                                p_rows[(g + 8 * r) * PLD + nn * 8 + 2 * t + e] = -0.0f;
                            }
                        }
                    }
                }
                seqk::arch::syncwarp(0xffffffffu);
                marked = true;
            }
            ColumnSums sums = recompute_tf32_block(p_rows, vt + n * 8, g, t, LD, PLD, BN / 8);
            SEQK_UNROLL
            for (int x = 0; x < 4; x++) {
                acc[x] = sums.v[x];
            }
        }
        SEQK_UNROLL
        for (int m = 0; m < NO; m++) {
            if (m == n) {
                SEQK_UNROLL
                for (int x = 0; x < 4; x++) {
                    o[m][x] += acc[x];
                }
            }
        }
    }
}

template <int DMAX, int BN>
__device__ void attn_fwd_tf32(const float* q, const float* k, const float* v, float* out, float* lse, const int* key_lengths,
                              const int* query_lengths, const float* bias0, const float* bias1, const AttnShape& s, bool vec) {
    static_assert(DMAX % 16 == 0 && BN % 16 == 0, "tiles are whole mma steps");
    constexpr int LD = DMAX + 4;
    constexpr int PLD = BN + 4;
    constexpr int KS = DMAX / 8;  // k-steps of q k^T
    constexpr int NS = BN / 8;    // 8-key column blocks of S
    constexpr int NO = DMAX / 8;  // 8-column blocks of the output
    SEQK_DYNAMIC_SHARED(float, smem);
    const PointerBuffers<float> buffers(smem, BN * LD);

    const TileBlock blk = tile_block(s, key_lengths, query_lengths);
    const long long b = blk.b, h = blk.h, k_valid = blk.k_valid, q_valid = blk.q_valid;
    const int warp = blk.warp, g = blk.g, t = blk.t;
    const int d = static_cast<int>(s.head_dim), dv = static_cast<int>(s.value_dim);
    const float scale = static_cast<float>(s.scale);
    float* p_rows = smem + 4 * BN * LD + warp * 16 * PLD;

    long long key_end = key_end_of(s, blk.row0, BLOCK_M, k_valid, q_valid);
    long long kv_tiles = (key_end + BN - 1) / BN;

    long long my_row[2] = {blk.row0 + warp * 16 + g, blk.row0 + warp * 16 + g + 8};
    uint32_t qa[KS][4];
    SEQK_UNROLL
    for (int ks = 0; ks < KS; ks++) {
        SEQK_UNROLL
        for (int x = 0; x < 4; x++) {
            long long i = my_row[x % 2];
            int col = ks * 8 + t + (x / 2) * 4;
            qa[ks][x] = seqk::arch::to_tf32(i < s.q_len && col < d ? q[at(s.q_stride, b, h, i, col)] : 0.0f);
        }
    }

    float m[2] = {-INFINITY, -INFINITY};
    float l[2] = {0.0f, 0.0f};
    float o[NO][4];
    SEQK_UNROLL
    for (int n = 0; n < NO; n++) {
        o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    }
    int ksteps = (d + 7) / 8;
    int oblocks = (dv + 7) / 8;

    first_kv_tile<float, float, BN, LD, false>(buffers, k, v, s, blk, key_end, kv_tiles, vec);
    for (long long tile = 0; tile < kv_tiles; tile++) {
        int buf = static_cast<int>(tile % 2);
        next_kv_tile<float, float, BN, LD, false>(buffers, k, v, s, blk, key_end, tile, kv_tiles, vec);
        const float* kt = buffers.k(buf);
        const float* vt = buffers.v(buf);
        long long j0 = tile * BN;

        float sc[NS][4];
        SEQK_UNROLL
        for (int n = 0; n < NS; n++) {
            sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.0f;
        }
        SEQK_UNROLL
        for (int ks = 0; ks < KS; ks++) {
            if (ks < ksteps) {
                SEQK_UNROLL
                for (int n = 0; n < NS; n++) {
                    uint32_t kb[2] = {seqk::arch::to_tf32(kt[(n * 8 + g) * LD + ks * 8 + t]),
                                      seqk::arch::to_tf32(kt[(n * 8 + g) * LD + ks * 8 + t + 4])};
                    seqk::arch::mma_m16n8k8_tf32(sc[n], qa[ks], kb, sc[n]);
                }
            }
        }

        online_softmax<NS, NO, true>(sc, o, m, l, my_row, j0, t, b, h, k_valid, q_valid, scale, bias0, bias1, s);

        SEQK_UNROLL
        for (int n = 0; n < NS; n++) {
            SEQK_UNROLL
            for (int e = 0; e < 2; e++) {
                p_rows[g * PLD + n * 8 + 2 * t + e] = sc[n][e];
                p_rows[(g + 8) * PLD + n * 8 + 2 * t + e] = sc[n][2 + e];
            }
        }
        seqk::arch::syncwarp(0xffffffffu);
        if (tile_may_block(s, blk.row0 + warp * 16, j0, BN, k_valid, q_valid, bias0 || bias1)) {
            pv_tf32_tile_may_block<NO, BN, LD, PLD>(o, p_rows, vt, oblocks, g, t, my_row, j0, b, h, k_valid, q_valid, bias0, bias1, s);
        } else {
            SEQK_UNROLL
            for (int kk = 0; kk < BN / 8; kk++) {
                uint32_t pa[4] = {seqk::arch::to_tf32(p_rows[g * PLD + kk * 8 + t]),
                                  seqk::arch::to_tf32(p_rows[(g + 8) * PLD + kk * 8 + t]),
                                  seqk::arch::to_tf32(p_rows[g * PLD + kk * 8 + t + 4]),
                                  seqk::arch::to_tf32(p_rows[(g + 8) * PLD + kk * 8 + t + 4])};
                SEQK_UNROLL
                for (int n = 0; n < NO; n++) {
                    if (n < oblocks) {
                        uint32_t vb[2] = {seqk::arch::to_tf32(vt[(kk * 8 + t) * LD + n * 8 + g]),
                                          seqk::arch::to_tf32(vt[(kk * 8 + t + 4) * LD + n * 8 + g])};
                        seqk::arch::mma_m16n8k8_tf32(o[n], pa, vb, o[n]);
                    }
                }
            }
        }
        __syncthreads();  // every warp is done with this buffer, and each lane with its P rows, before they are refilled
    }

    write_rows<float, NO>(o, m, l, my_row, t, b, h, q_valid, out, lse, s);
}

}  // namespace tc

}  // namespace
