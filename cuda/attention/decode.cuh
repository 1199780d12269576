// Split-KV forward for decoding: attn_fwd_split (any rows), attn_fwd_decode (16-byte rows, tiled
// through shared memory for bandwidth) and attn_fwd_combine, which both split kernels feed.
#pragma once

#include "../arch/cp_async.cuh"
#include "common.cuh"

namespace {

// ---------------------------------------------------------------------------------------------
// Split-KV forward for decoding (few query rows, long key ranges: FlashDecoding's scheme), any
// storage type, D and Dv up to 256.
//
// attn_fwd_split: grid = (b, kv head, group of 4 query rows, key split), 1-D as
// ((b * Hkv + kvh) * row_groups + group) * splits + split. The query rows of a kv head are the Lq
// rows of each of its Hq/Hkv query heads; warp w of the block owns row 4 * group + w of them, so the
// 4 warps read the same k and v rows (through L1) and a GQA group's k and v are read once per split.
// A warp walks the keys of its split one at a time: lanes hold D/32 elements of q and Dv/32 of the
// output accumulator (lane + 32x), the score is a butterfly sum over the warp, then the online
// softmax. It writes its split's normalized partial output, running max m and sum l (f32 scratch).
// attn_fwd_combine: one thread per (row, value column): weights l_s * exp(m_s - max_s m_s) over the
// splits give the output and the LSE; a row with no allowed key in any split gives 0 and -inf.
// m and l rather than one partial LSE m + log l: when keys overflowed to +inf, m is +inf and the
// combine needs each split's count of them (l) to share the weight over all of them equally.
// Bytes: k and v once per split group, the partials (splits * rows * (Dv + 2) * 4) twice.
namespace split {

constexpr int ROWS_PER_BLOCK = 4;

/**
 * Where a split-KV block works, for every split kernel: blockIdx.x is
 * ((b * Hkv + kvh) * row_groups + group) * splits + split, with the rows of a kv head (its
 * Hq / Hkv query heads' Lq positions; local row l is head l / Lq, position l % Lq) cut into groups
 * of ROWS. Row r of the block is local row group * ROWS + r.
 */
struct Block {
    long long b, kvh, group, split, j0, j_end, k_valid, q_valid;
    long long heads_per_kv, q_len, q_heads, causal;
    int rows;       // rows per group (the kernel's)
    int rows_here;  // rows of this group that exist (the last group of a kv head may be partial)

    __device__ Block(const AttnShape& s, int rows_per_block, long long keys_per_split, long long splits, const int* key_lengths,
                     const int* query_lengths)
        : heads_per_kv(s.q_heads / s.kv_heads), q_len(s.q_len), q_heads(s.q_heads), causal(s.causal), rows(rows_per_block) {
        long long group_rows = heads_per_kv * s.q_len;
        long long row_groups = (group_rows + rows - 1) / rows;
        split = blockIdx.x % splits;
        long long rest = blockIdx.x / splits;
        group = rest % row_groups;
        kvh = (rest / row_groups) % s.kv_heads;
        b = rest / (row_groups * s.kv_heads);
        rows_here = static_cast<int>(group_rows - group * rows < rows ? group_rows - group * rows : rows);
        k_valid = key_lengths ? key_lengths[b] : s.kv_len;
        q_valid = query_lengths ? query_lengths[b] : s.q_len;
        j0 = split * keys_per_split;
        j_end = j0 + keys_per_split < s.kv_len ? j0 + keys_per_split : s.kv_len;
    }

    __device__ long long head(int r) const { return kvh * heads_per_kv + (group * rows + r) / q_len; }
    __device__ long long position(int r) const { return (group * rows + r) % q_len; }
    /** Row r's index in [B * Hq * Lq] (lse, the partial outputs). */
    __device__ long long row_index(int r) const { return (b * q_heads + head(r)) * q_len + position(r); }

    /**
     * One past the last key of the split that row r may see (key and query lengths, causal masks;
     * a bias may block more); j0 for a row past rows_here or the query length: no key.
     */
    __device__ long long key_limit(int r) const {
        long long i = position(r);
        if (r >= rows_here || i >= q_valid) {
            return j0;
        }
        long long limit = j_end < k_valid ? j_end : k_valid;
        long long causal_end = causal == 1 ? i + 1 : causal == 2 ? i + (k_valid - q_valid) + 1 : limit;
        limit = causal_end < limit ? causal_end : limit;
        return limit > j0 ? limit : j0;
    }

    /**
     * The block's rows' key limits, in one pass over them: `any`, one past the last key some row
     * may see (the block loads keys [j0, any)), and `all`, one past the last key every row may
     * see (below it only a bias can block a pair; j0 when some row sees no key).
     */
    struct KeyRange {
        long long all, any;
    };
    __device__ KeyRange key_range() const {
        KeyRange range{j_end, j0};
        for (int r = 0; r < rows_here; r++) {
            long long limit = key_limit(r);
            range.all = limit < range.all ? limit : range.all;
            range.any = limit > range.any ? limit : range.any;
        }
        return range;
    }
};

/**
 * A split's normalized output element from its unnormalized sum acc and its row's sum l: acc / l,
 * and acc x 0 when l is 0 (every key the row may see in the split weighs 0 or is blocked). That
 * is 0 unless acc holds a NaN the row must show: a kernel that reads the value of a key whose
 * score overflowed to -inf (the tensor-core kernels, as the reference does) keeps 0 x NaN there.
 * NaN when l is (a NaN score).
 */
__device__ __forceinline__ float normalized(float acc, float l) { return acc * (l == 0.0f ? 0.0f : 1.0f / l); }

/**
 * The split kernels' double-buffered walk over a split's key tiles, run by every thread of the
 * block: load_tile(n, stage) issues tile n's cp.async copies into a stage, and body(n, stage)
 * uses tile n while tile n + 1's copies are in flight. Barriers: tile n complete and visible
 * before body, and every thread done with the stage after it (the next load refills it). After
 * the walk no copy is in flight (the last group committed is empty), so the stages are free.
 */
constexpr int STAGES = 2;

template <typename Load, typename Body>
__device__ __forceinline__ void walk_key_tiles(int tiles, const Load& load_tile, const Body& body) {
    if (tiles > 0) {
        load_tile(0, 0);
    }
    seqk::arch::cp_async_commit();
    for (int n = 0; n < tiles; n++) {
        const int stage = n % STAGES;
        if (n + 1 < tiles) {
            load_tile(n + 1, (stage + 1) % STAGES);
        }
        seqk::arch::cp_async_commit();
        seqk::arch::cp_async_wait<1>();
        __syncthreads();  // tile n (and whatever the block wrote to shared memory before) visible to every thread
        body(n, stage);
        __syncthreads();  // every thread is done with the stage before the next load refills it
    }
}

template <typename T, int DMAX>
__device__ void attn_fwd_split(const T* q, const T* k, const T* v, float* part_out, float* part_ml, const int* key_lengths,
                               const int* query_lengths, const float* bias0, const float* bias1, const AttnShape& s,
                               long long keys_per_split, long long splits) {
    constexpr int PER_LANE = DMAX / 32;
    const Block blk(s, ROWS_PER_BLOCK, keys_per_split, splits, key_lengths, query_lengths);
    const int w = static_cast<int>(threadIdx.x / 32);
    if (w >= blk.rows_here) {
        return;  // a whole warp leaves: no later shuffle waits for it
    }
    int lane = seqk::arch::lane_id();
    const long long b = blk.b, kvh = blk.kvh, split = blk.split, k_valid = blk.k_valid, q_valid = blk.q_valid;
    long long h = blk.head(w);
    long long i = blk.position(w);
    long long row = blk.row_index(w);
    float scale = static_cast<float>(s.scale);

    float qv[PER_LANE];
    float o[PER_LANE];
    SEQK_UNROLL
    for (int x = 0; x < PER_LANE; x++) {
        long long e = lane + 32 * x;
        qv[x] = e < s.head_dim ? seqk::to_float(q[at(s.q_stride, b, h, i, e)]) : 0.0f;
        o[x] = 0.0f;
    }
    float m = -INFINITY;
    float l = 0.0f;
    for (long long j = blk.j0; j < blk.j_end; j++) {
        bool blocked = j >= k_valid || i >= q_valid || (s.causal == 1 && j > i) ||
                       (s.causal == 2 && j > i + (k_valid - q_valid));
        if (blocked) {
            continue;  // uniform over the warp: every lane has the same row and key
        }
        float add = 0.0f;
        if (bias0) {
            add += bias0[at(s.bias_stride[0], b, h, i, j)];
        }
        if (bias1) {
            add += bias1[at(s.bias_stride[1], b, h, i, j)];
        }
        if (add == -INFINITY) {
            continue;
        }
        float dot = 0.0f;
        SEQK_UNROLL
        for (int x = 0; x < PER_LANE; x++) {
            long long e = lane + 32 * x;
            if (e < s.head_dim) {
                dot += qv[x] * seqk::to_float(k[at(s.k_stride, b, kvh, j, e)]);
            }
        }
        SEQK_UNROLL
        for (int off = 16; off > 0; off /= 2) {
            dot += seqk::arch::shfl_xor(0xffffffffu, dot, off);
        }
        float score = scale * dot + add;
        if (score == -INFINITY) {
            continue;  // below fp32's range: weight 0, like a blocked key (uniform over the warp)
        }
        // fmaxf drops a NaN score (m is never NaN); its weight exp(NaN) carries it into l and o.
        float m_new = fmaxf(m, score);
        float corr = softmax_weight(m, m_new);
        float p = softmax_weight(score, m_new);
        l = l * corr + p;
        m = m_new;
        SEQK_UNROLL
        for (int x = 0; x < PER_LANE; x++) {
            long long e = lane + 32 * x;
            float ve = e < s.value_dim ? seqk::to_float(v[at(s.v_stride, b, kvh, j, e)]) : 0.0f;
            o[x] = o[x] * corr + p * ve;
        }
    }
    long long rows = s.batch * s.q_heads * s.q_len;
    SEQK_UNROLL
    for (int x = 0; x < PER_LANE; x++) {
        long long e = lane + 32 * x;
        if (e < s.value_dim) {
            part_out[(split * rows + row) * s.value_dim + e] = normalized(o[x], l);
        }
    }
    if (lane == 0) {
        part_ml[split * rows + row] = m;
        part_ml[(splits + split) * rows + row] = l;
    }
}

template <typename T>
__device__ void attn_fwd_combine(const float* part_out, const float* part_ml, T* out, float* lse, const AttnShape& s,
                                 long long splits) {
    long long rows = s.batch * s.q_heads * s.q_len;
    long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= rows * s.value_dim) {
        return;
    }
    long long row = idx / s.value_dim;
    long long e = idx % s.value_dim;
    // A split with no key has m = -inf and l = 0: weight 0. A split whose scores were all NaN has
    // m = -inf too (fmaxf dropped them) but l NaN: the row is live, and its NaN reaches sum and acc.
    float mx = -INFINITY;
    bool live = false;
    for (long long sp = 0; sp < splits; sp++) {
        mx = fmaxf(mx, part_ml[sp * rows + row]);
        live = live || part_ml[(splits + sp) * rows + row] != 0.0f;
    }
    float sum = 0.0f;
    float acc = 0.0f;
    if (live) {
        for (long long sp = 0; sp < splits; sp++) {
            float w = part_ml[(splits + sp) * rows + row] * softmax_weight(part_ml[sp * rows + row], mx);
            sum += w;
            acc += w * part_out[(sp * rows + row) * s.value_dim + e];
        }
    }
    long long i = row % s.q_len;
    long long h = (row / s.q_len) % s.q_heads;
    long long b = row / (s.q_len * s.q_heads);
    out[at(s.o_stride, b, h, i, e)] = seqk::from_float<T>(live ? acc / sum : 0.0f);
    if (e == 0) {
        lse[row] = live ? mx + logf(sum) : -INFINITY;
    }
}

}  // namespace split

// ---------------------------------------------------------------------------------------------
// attn_fwd_decode: the split kernel for keys and values whose rows are 16-byte aligned and
// contiguous (AttentionGpu.splitKernel), built for memory bandwidth: decoding reads every key and
// value once per GQA group and does 4 flops per byte read (bf16, Lq = 1), so the kernel's whole job
// is to keep many 16-byte loads in flight. Same grid, partial outputs and combine as attn_fwd_split.
//
// One block (128 threads) = one (batch entry, kv head, group of ROWS query rows, key split). The
// block walks its split in tiles of KEYS keys: the tile's k and v rows go global -> shared with
// 16-byte cp.async (thread t copies chunk column t % CHUNKS of every (128 / CHUNKS)-th key, that
// column's copy skipped past D or Dv), double buffered, so tile n + 1 is in flight while tile n
// is used. Keys are counted from the split's first in 32 bits. Per tile:
// - scores: thread t owns key t % KEYS of the tile for the rows t / KEYS + (128 / KEYS) n (lanes own
//   keys: no shuffle per key); it reads its k row in 16-byte chunks and q (f32, in shared memory,
//   the same address over the warp) and writes scale * dot + bias, or -inf where a mask blocks;
// - softmax: warp w owns row w's running max m and sum l (FlashDecoding's online softmax, the
//   same softmax_weight as every attention kernel); it turns the row's scores into weights p in
//   place and publishes the rescale factor of the row's accumulator;
// - values: thread t owns value chunk t % CHUNKS (one 16-byte chunk of columns) of row
//   (t / CHUNKS) % ROWS (+ SLOTS n when a row needs more threads than there are) over the keys
//   phase, phase + PHASES, ... of the tile, where phase = t / CHUNKS / ROWS; the phases' partial
//   sums add up at the end. A blocked key's weight is marked -0 (marked_blocked) and its value is
//   not read, so a non-finite value at a masked key stays out, as in every other kernel; an
//   allowed key whose weight underflows to +0 still multiplies its value (0 x inf is NaN).
// Shared memory: k and v as [stage][key][chunk] with chunk c of key j at c ^ (j & 7) (an XOR
// swizzle: the 8 lanes of a 16-byte access phase hit 8 distinct 16-byte bank groups, both when
// 8 keys read one chunk each in the score phase and when cp.async writes 8 chunks of one key),
// no padding; then q [ROWS][DMAX] f32, the weights [ROWS][KEYS] f32, each row's rescale and sum.
// Keys no row of the block may see (past the key length, or past every row's causal limit) are
// neither loaded nor read.
namespace decode {

constexpr int THREADS = 128;
constexpr int ROWS = split::ROWS_PER_BLOCK;
constexpr int STAGES = split::STAGES;

/** 16 bytes of consecutive elements: one cp.async chunk, read from shared memory as one access. */
template <typename T>
struct alignas(16) Chunk {
    T v[16 / sizeof(T)];
};

/** The tiling for storage type T and head dimensions up to DMAX (64, 128 or 256). */
template <typename T, int DMAX>
struct Tiling {
    static constexpr int PER_CHUNK = 16 / static_cast<int>(sizeof(T));
    /** 16-byte chunks per shared row (a power of two, at least 8: the swizzle's span). */
    static constexpr int CHUNKS = DMAX / PER_CHUNK;
    /** Keys per tile: 16 KB of k and 16 KB of v per stage, at most one key per thread. */
    static constexpr int KEYS = 16384 / (DMAX * static_cast<int>(sizeof(T))) < THREADS
                                    ? 16384 / (DMAX * static_cast<int>(sizeof(T)))
                                    : THREADS;
    /** Score phase: threads per key, and the rows each thread scores. */
    static constexpr int KEY_THREADS = THREADS / KEYS;
    static constexpr int SCORE_ROWS = (ROWS + KEY_THREADS - 1) / KEY_THREADS;
    /** Value phase: threads per value chunk, rows per thread, key phases per row. */
    static constexpr int SLOTS = THREADS / CHUNKS;
    static constexpr int VALUE_ROWS = SLOTS >= ROWS ? 1 : ROWS / SLOTS;
    static constexpr int PHASES = SLOTS >= ROWS ? SLOTS / ROWS : 1;
    /** Chunks of one operand's stage. */
    static constexpr int STAGE_CHUNKS = KEYS * CHUNKS;
    /** Dynamic shared memory (AttentionGpu.splitKernel computes the same). */
    static constexpr int SHARED_BYTES = 2 * STAGES * STAGE_CHUNKS * 16 + ROWS * DMAX * 4 + ROWS * KEYS * 4 + 2 * ROWS * 4;
    static_assert(CHUNKS >= 8 && (CHUNKS & (CHUNKS - 1)) == 0, "the swizzle needs at least 8 chunks, a power of two");
    static_assert(THREADS % KEYS == 0 && THREADS % CHUNKS == 0, "threads split evenly over keys and chunks");
    static_assert(KEYS % (THREADS / CHUNKS) == 0, "the copy passes cover a tile's keys evenly");
    static_assert((PHASES - 1) * ROWS * DMAX <= STAGE_CHUNKS * 4, "the phases' partial sums fit in a stage");
};

__device__ __forceinline__ int swizzled(int key, int chunk) { return chunk ^ (key & 7); }

template <typename T, int DMAX>
__device__ void attn_fwd_decode(const T* q, const T* k, const T* v, float* part_out, float* part_ml, const int* key_lengths,
                                const int* query_lengths, const float* bias0, const float* bias1, const AttnShape& s,
                                long long keys_per_split, long long splits) {
    using Tile = Tiling<T, DMAX>;
    constexpr int KEYS = Tile::KEYS;
    constexpr int CHUNKS = Tile::CHUNKS;
    constexpr int PER_CHUNK = Tile::PER_CHUNK;
    SEQK_DYNAMIC_SHARED(Chunk<T>, k_tiles);  // [STAGES][KEYS][CHUNKS]
    Chunk<T>* v_tiles = k_tiles + STAGES * Tile::STAGE_CHUNKS;
    float* q_rows = reinterpret_cast<float*>(v_tiles + STAGES * Tile::STAGE_CHUNKS);  // [ROWS][DMAX]
    float* weights = q_rows + ROWS * DMAX;                                                 // [ROWS][KEYS]
    float* rescale = weights + ROWS * KEYS;                                                // [ROWS]
    float* row_sum = rescale + ROWS;                                                       // [ROWS]

    const int tid = static_cast<int>(threadIdx.x);
    const int warp = tid / 32;
    const int lane = seqk::arch::lane_id();
    const split::Block blk(s, ROWS, keys_per_split, splits, key_lengths, query_lengths);
    const long long b = blk.b, kvh = blk.kvh, split = blk.split, j0 = blk.j0;
    const int rows_here = blk.rows_here;
    const long long stop = blk.key_range().any;

    for (int x = tid; x < ROWS * DMAX; x += THREADS) {
        int r = x / DMAX;
        int e = x % DMAX;
        q_rows[x] = r < rows_here && e < s.head_dim ? seqk::to_float(q[at(s.q_stride, b, blk.head(r), blk.position(r), e)]) : 0.0f;
    }

    // Keys are counted from the split's first, j0, in 32 bits (AttentionGpu.splitPlan keeps a split
    // within MAX_KEYS_PER_SPLIT = 2^30 keys); span keys [j0, stop) are loaded.
    const int span = static_cast<int>(stop - j0);
    const int k_chunks = static_cast<int>(s.head_dim) / PER_CHUNK;
    const int v_chunks = static_cast<int>(s.value_dim) / PER_CHUNK;
    // A thread copies chunk column copy_chunk of keys copy_key0, copy_key0 + COPY_STEP, ... of each
    // tile: its column predicates are fixed, its sources step by COPY_STEP rows.
    constexpr int COPY_STEP = THREADS / CHUNKS;
    const int copy_chunk = tid % CHUNKS;
    const int copy_key0 = tid / CHUNKS;
    const bool k_column = copy_chunk < k_chunks;
    const bool v_column = copy_chunk < v_chunks;
    const T* k_first = k + b * s.k_stride[0] + kvh * s.k_stride[1] + j0 * s.k_stride[2] + copy_chunk * PER_CHUNK;
    const T* v_first = v + b * s.v_stride[0] + kvh * s.v_stride[1] + j0 * s.v_stride[2] + copy_chunk * PER_CHUNK;
    const long long k_step = COPY_STEP * s.k_stride[2];
    const long long v_step = COPY_STEP * s.v_stride[2];
    const int tiles = (span + KEYS - 1) / KEYS;
    auto load_tile = [&](int n, int stage) {
        const int first = n * KEYS + copy_key0;
        const T* k_row = k_first + first * s.k_stride[2];
        const T* v_row = v_first + first * s.v_stride[2];
        SEQK_UNROLL
        for (int pass = 0; pass < KEYS / COPY_STEP; pass++) {
            const int key = copy_key0 + pass * COPY_STEP;
            const bool row = first + pass * COPY_STEP < span;
            const int dst = stage * Tile::STAGE_CHUNKS + key * CHUNKS + swizzled(key, copy_chunk);
            if (row && k_column) {
                seqk::arch::cp_async_16(&k_tiles[dst], k_row);
            }
            if (row && v_column) {
                seqk::arch::cp_async_16(&v_tiles[dst], v_row);
            }
            k_row += k_step;
            v_row += v_step;
        }
    };

    // The score phase's key and rows, with each row's limit.
    const int my_key = tid % KEYS;
    const int first_score_row = tid / KEYS;
    int score_limit[Tile::SCORE_ROWS];  // relative to j0
    SEQK_UNROLL
    for (int n = 0; n < Tile::SCORE_ROWS; n++) {
        int r = first_score_row + Tile::KEY_THREADS * n;
        score_limit[n] = static_cast<int>(blk.key_limit(r) - j0);
    }
    // The value phase's chunk, rows and key phase; its accumulators.
    const int my_chunk = tid % CHUNKS;
    const int slot = tid / CHUNKS;
    const int phase = slot / ROWS;
    float acc[Tile::VALUE_ROWS][PER_CHUNK];
    SEQK_UNROLL
    for (int n = 0; n < Tile::VALUE_ROWS; n++) {
        SEQK_UNROLL
        for (int x = 0; x < PER_CHUNK; x++) {
            acc[n][x] = 0.0f;
        }
    }
    float m = -INFINITY;  // warp w's row w: running max and sum
    float l = 0.0f;
    const float scale = static_cast<float>(s.scale);

    split::walk_key_tiles(tiles, load_tile, [&](int n, int stage) {
        const int j = n * KEYS + my_key;  // relative to j0
        const Chunk<T>* k_row = k_tiles + stage * Tile::STAGE_CHUNKS + my_key * CHUNKS;
        SEQK_UNROLL
        for (int sr = 0; sr < Tile::SCORE_ROWS; sr++) {
            int r = first_score_row + Tile::KEY_THREADS * sr;
            if (r >= rows_here) {
                continue;
            }
            float add = 0.0f;
            bool live = j < score_limit[sr];
            if (live && bias0) {
                add += bias0[at(s.bias_stride[0], b, blk.head(r), blk.position(r), j0 + j)];
            }
            if (live && bias1) {
                add += bias1[at(s.bias_stride[1], b, blk.head(r), blk.position(r), j0 + j)];
            }
            float sc = -INFINITY;
            if (live && add != -INFINITY) {
                float dot = 0.0f;
                const float* qr = q_rows + r * DMAX;
                for (int c = 0; c < k_chunks; c++) {
                    Chunk<T> kc = k_row[swizzled(my_key, c)];
                    SEQK_UNROLL
                    for (int x = 0; x < PER_CHUNK; x += 4) {
                        float4 qx = *reinterpret_cast<const float4*>(qr + c * PER_CHUNK + x);  // one broadcast access
                        dot += qx.x * seqk::to_float(kc.v[x]);
                        dot += qx.y * seqk::to_float(kc.v[x + 1]);
                        dot += qx.z * seqk::to_float(kc.v[x + 2]);
                        dot += qx.w * seqk::to_float(kc.v[x + 3]);
                    }
                }
                sc = scale * dot + add;
            }
            weights[r * KEYS + my_key] = sc;
        }
        __syncthreads();  // the tile's scores complete

        if (warp < rows_here) {
            float* row_w = weights + warp * KEYS;
            float tile_max = -INFINITY;
            for (int x = lane; x < KEYS; x += 32) {
                tile_max = fmaxf(tile_max, row_w[x]);  // drops a NaN score: m is never NaN
            }
            SEQK_UNROLL
            for (int off = 16; off > 0; off /= 2) {
                tile_max = fmaxf(tile_max, seqk::arch::shfl_xor(0xffffffffu, tile_max, off));
            }
            float m_new = fmaxf(m, tile_max);
            float corr = softmax_weight(m, m_new);
            float sum = 0.0f;
            for (int x = lane; x < KEYS; x += 32) {
                float sc = row_w[x];
                // Blocked (or a score below fp32's range): marked -0. A NaN score's weight is NaN.
                float p = sc == -INFINITY ? -0.0f : softmax_weight(sc, m_new);
                row_w[x] = p;
                sum += p;
            }
            SEQK_UNROLL
            for (int off = 16; off > 0; off /= 2) {
                sum += seqk::arch::shfl_xor(0xffffffffu, sum, off);
            }
            l = l * corr + sum;
            m = m_new;
            if (lane == 0) {
                rescale[warp] = corr;
            }
        }
        __syncthreads();  // the tile's weights and rescale factors complete

        const Chunk<T>* v_tile = v_tiles + stage * Tile::STAGE_CHUNKS;
        SEQK_UNROLL
        for (int vr = 0; vr < Tile::VALUE_ROWS; vr++) {
            int r = slot % ROWS + Tile::SLOTS * vr;
            if (r >= rows_here || my_chunk >= v_chunks) {
                continue;
            }
            float corr = rescale[r];
            SEQK_UNROLL
            for (int x = 0; x < PER_CHUNK; x++) {
                acc[vr][x] *= corr;
            }
            const float* row_w = weights + r * KEYS;
            for (int key = phase; key < KEYS; key += Tile::PHASES) {
                float p = row_w[key];
                if (!marked_blocked(p)) {
                    Chunk<T> vc = v_tile[key * CHUNKS + swizzled(key, my_chunk)];
                    SEQK_UNROLL
                    for (int x = 0; x < PER_CHUNK; x++) {
                        acc[vr][x] += p * seqk::to_float(vc.v[x]);
                    }
                }
            }
        }
    });

    // The key phases' partial sums meet in the (now idle) k tiles; phase 0 adds them in order.
    float* partial = reinterpret_cast<float*>(k_tiles);  // [PHASES - 1][ROWS][DMAX]
    if (warp < rows_here && lane == 0) {
        row_sum[warp] = l;
    }
    SEQK_UNROLL
    for (int vr = 0; vr < Tile::VALUE_ROWS; vr++) {
        int r = slot % ROWS + Tile::SLOTS * vr;
        if (phase > 0 && r < rows_here && my_chunk < v_chunks) {
            SEQK_UNROLL
            for (int x = 0; x < PER_CHUNK; x++) {
                partial[((phase - 1) * ROWS + r) * DMAX + my_chunk * PER_CHUNK + x] = acc[vr][x];
            }
        }
    }
    __syncthreads();  // partial sums and row sums complete
    const long long rows = s.batch * s.q_heads * s.q_len;
    SEQK_UNROLL
    for (int vr = 0; vr < Tile::VALUE_ROWS; vr++) {
        int r = slot % ROWS + Tile::SLOTS * vr;
        if (phase > 0 || r >= rows_here || my_chunk >= v_chunks) {
            continue;
        }
        for (int ph = 1; ph < Tile::PHASES; ph++) {
            SEQK_UNROLL
            for (int x = 0; x < PER_CHUNK; x++) {
                acc[vr][x] += partial[((ph - 1) * ROWS + r) * DMAX + my_chunk * PER_CHUNK + x];
            }
        }
        float* dst = part_out + (split * rows + blk.row_index(r)) * s.value_dim + my_chunk * PER_CHUNK;
        SEQK_UNROLL
        for (int x = 0; x < PER_CHUNK; x++) {
            dst[x] = split::normalized(acc[vr][x], row_sum[r]);
        }
    }
    if (warp < rows_here && lane == 0) {
        part_ml[split * rows + blk.row_index(warp)] = m;
        part_ml[(splits + split) * rows + blk.row_index(warp)] = l;
    }
}

}  // namespace decode

}  // namespace
