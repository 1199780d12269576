// Scaled dot-product attention, forward and backward, for AttentionGpu.java (the Attention and
// MultiHeadAttention ops' GPU path).
//
// Versions: v1 (attn_*_v1) are plain ports of cpu/AttentionReference: one thread per query row
// (forward, dq, row dot products) or per key row (dk, dv); scores are recomputed where needed and
// the softmax is never stored; accumulators live in f32 global rows (no per-thread arrays, so no
// spills at any head dimension). Deterministic: no atomics.
// attn_fwd_tc (fp16/bf16, D and Dv <= 256, sm_80+) is the tiled tensor-core forward beside v1,
// with the same masks and outputs; attn_bwd_delta, attn_bwd_dq_tc and attn_bwd_dkdv_tc (fp16/bf16,
// D and Dv <= 128) the tensor-core backward beside v1's, with v1's arguments except dout in the
// storage type, delta from the forward's out, a buffer of per-row counts and a `vec` flag.
// AttentionGpu.java chooses between them (see its javadoc).
//
// Layout: element (b, h, l, e) of q, k, v, out (and dout, dq, dk, dv) is at
// b*s[0] + h*s[1] + l*s[2] + e*s[3] with the strides in AttnShape, so multi-head attention reads
// projected [B*L, E] buffers in place. Query head h reads key/value head h / (Hq / Hkv).
// Masks: up to two additive f32 biases (-inf blocks) with broadcast strides (0 = broadcast), causal
// (1 top-left, 2 bottom-right aligned to each entry's valid lengths), key and query lengths.
// A row with no allowed key: out 0, lse -inf, no gradient. NaN and overflow (docs/CONVENTIONS.md):
// blocked keys are never read; a NaN score makes its row's out and lse NaN (the running max drops
// it, the sum carries it); a score that overflows fp32 to +inf takes the row's weight, shared with
// any other +inf score, and lse is +inf (softmax_weight).
// Flops: forward 2*Lq*Lk*(D + Dv) per (b, h) for the useful work, times 2 for the score recompute.
//
// This file holds the kernels' entry points; their code is split by role under attention/:
// common.cuh (shape, index arithmetic, scores, the weight recompute), v1.cuh, forward_tc.cuh
// (tensor-core forward), backward_tc.cuh (tensor-core backward), decode.cuh (split-KV: attn_fwd_split,
// attn_fwd_decode and their combine), decode_tc.cuh (the tensor-core split kernel).
#include "attention/backward_tc.cuh"
#include "attention/common.cuh"
#include "attention/decode.cuh"
#include "attention/decode_tc.cuh"
#include "attention/forward_tc.cuh"
#include "attention/v1.cuh"

// attn_fwd_decodeDMAX_T: decode::attn_fwd_decode for D and Dv up to DMAX, with
// decode::Tiling<T, DMAX>::SHARED_BYTES of dynamic shared memory and 128 threads.
#define SEQK_ATTENTION_DECODE(dmax, suffix, T)                                                                           \
    extern "C" __global__ void attn_fwd_decode##dmax##_##suffix(                                                         \
        const T* q, const T* k, const T* v, float* part_out, float* part_ml, const int* key_lengths,                     \
        const int* query_lengths, const float* bias0, const float* bias1, AttnShape shape, long long keys_per_split,    \
        long long splits) {                                                                                              \
        decode::attn_fwd_decode<T, dmax>(q, k, v, part_out, part_ml, key_lengths, query_lengths, bias0, bias1, shape,    \
                                         keys_per_split, splits);                                                        \
    }                                                                                                                    \
    SEQK_KERNEL(attn_fwd_decode##dmax##_##suffix)

#define SEQK_ATTENTION_SPLIT(suffix, T)                                                                                  \
    extern "C" __global__ void attn_fwd_split_##suffix(const T* q, const T* k, const T* v, float* part_out,            \
                                                       float* part_ml, const int* key_lengths, const int* query_lengths, \
                                                       const float* bias0, const float* bias1, AttnShape shape,         \
                                                       long long keys_per_split, long long splits) {                    \
        if (shape.head_dim <= 64 && shape.value_dim <= 64) {                                                             \
            split::attn_fwd_split<T, 64>(q, k, v, part_out, part_ml, key_lengths, query_lengths, bias0, bias1, shape,    \
                                         keys_per_split, splits);                                                        \
        } else if (shape.head_dim <= 128 && shape.value_dim <= 128) {                                                    \
            split::attn_fwd_split<T, 128>(q, k, v, part_out, part_ml, key_lengths, query_lengths, bias0, bias1, shape,   \
                                          keys_per_split, splits);                                                       \
        } else {                                                                                                         \
            split::attn_fwd_split<T, 256>(q, k, v, part_out, part_ml, key_lengths, query_lengths, bias0, bias1, shape,   \
                                          keys_per_split, splits);                                                       \
        }                                                                                                                \
    }                                                                                                                    \
    SEQK_KERNEL(attn_fwd_split_##suffix);                                                                                \
    extern "C" __global__ void attn_fwd_combine_##suffix(const float* part_out, const float* part_ml, T* out,           \
                                                         float* lse, AttnShape shape, long long splits) {               \
        split::attn_fwd_combine<T>(part_out, part_ml, out, lse, shape, splits);                                          \
    }                                                                                                                    \
    SEQK_KERNEL(attn_fwd_combine_##suffix)

SEQK_ATTENTION_SPLIT(f32, float);
SEQK_ATTENTION_SPLIT(f16, __half);
SEQK_ATTENTION_SPLIT(bf16, __nv_bfloat16);

// The SIMT decode kernel where the rule (AttentionGpu.splitKernel) takes it: F32 at every width,
// 16-bit only above 128 (up to 128 the tensor-core decode kernel runs; before sm_80 neither fits).
SEQK_ATTENTION_DECODE(64, f32, float);
SEQK_ATTENTION_DECODE(128, f32, float);
SEQK_ATTENTION_DECODE(256, f32, float);
SEQK_ATTENTION_DECODE(256, f16, __half);
SEQK_ATTENTION_DECODE(256, bf16, __nv_bfloat16);

// Two instances each (tc::TcInstance): attn_fwd_tcDMAX_T (every option at run time; key tiles of
// BN) and attn_fwd_tcDMAX_nobias_T (no explicit mask, 16-byte rows: the host launches it only so;
// it ignores `vec`'s bit 0; key tiles of BN_NOBIAS). Same arguments, so the host picks by name.
// `vec`: bit 0, 16-byte rows of the tiles loaded (k and v; q too at 256); bit 1, of out (the
// no-bias instances' staged output's 16-byte stores). The TF32 kernels read bit 0 only, the
// general 16-bit ones too (they store out from their fragments).
#define SEQK_ATTENTION_TC(suffix, T, DMAX, BN, BN_NOBIAS)                                                                           \
    extern "C" __global__ void attn_fwd_tc##DMAX##_##suffix(const T* q, const T* k, const T* v, T* out, float* lse,    \
                                                           const int* key_lengths, const int* query_lengths,            \
                                                           const float* bias0, const float* bias1, AttnShape shape,     \
                                                           int vec) {                                                   \
        tc::attn_fwd_tc<T, DMAX, BN, tc::TcInstance::GENERAL>(q, k, v, out, lse, key_lengths, query_lengths, bias0,     \
                                                              bias1, shape, (vec & 1) != 0, (vec & 2) != 0);             \
    }                                                                                                                    \
    SEQK_KERNEL(attn_fwd_tc##DMAX##_##suffix);                                                                           \
    extern "C" __global__ void attn_fwd_tc##DMAX##_nobias_##suffix(const T* q, const T* k, const T* v, T* out,         \
                                                                  float* lse, const int* key_lengths,                   \
                                                                  const int* query_lengths, const float* bias0,         \
                                                                  const float* bias1, AttnShape shape, int vec) {       \
        tc::attn_fwd_tc<T, DMAX, BN_NOBIAS, tc::TcInstance::NO_BIAS>(q, k, v, out, lse, key_lengths, query_lengths, bias0,     \
                                                              bias1, shape, true, (vec & 2) != 0);                       \
    }                                                                                                                    \
    SEQK_KERNEL(attn_fwd_tc##DMAX##_nobias_##suffix)

#define SEQK_ATTENTION_TF32(DMAX, BN)                                                                                  \
    extern "C" __global__ void attn_fwd_tf32x##DMAX##_f32(const float* q, const float* k, const float* v, float* out,  \
                                                          float* lse, const int* key_lengths, const int* query_lengths, \
                                                          const float* bias0, const float* bias1, AttnShape shape,      \
                                                          int vec) {                                                    \
        tc::attn_fwd_tf32<DMAX, BN>(q, k, v, out, lse, key_lengths, query_lengths, bias0, bias1, shape, (vec & 1) != 0); \
    }                                                                                                                    \
    SEQK_KERNEL(attn_fwd_tf32x##DMAX##_f32)

// Shared memory: 2 x 2 x BN x (DMAX + 4) x 4 bytes + 4 warps x 16 x (BN + 4) x 4 = 44,032 (64/32) and 38,912 (128/16).
SEQK_ATTENTION_TF32(64, 32);
SEQK_ATTENTION_TF32(128, 16);

// Shared memory: 2 buffers x (k + v) x BN x (DMAX + 8) x 2 bytes = 36,864 (64/64) and 34,816
// (128/32); the no-bias instance at 128 takes key tiles of 64 (FlashAttention-2's at D = 128),
// 69,632 bytes (above 48 KB: the bindings opt the kernel in), which it fits in registers without
// the explicit-mask code. At 256 q joins them (64 x (256 + 8) x 2 = 33,792 bytes: its fragments
// would not fit in registers beside the output's), with key tiles of 32 without bias (101,376
// bytes, exactly the 99 KB sm_86, sm_89 and sm_120 allow a block; at 64 its arrays went to 1,224
// bytes of stack) and 16 with every option (67,584; at 32 it spilled).
SEQK_ATTENTION_TC(f16, __half, 64, 64, 64);
SEQK_ATTENTION_TC(f16, __half, 128, 32, 64);
SEQK_ATTENTION_TC(f16, __half, 256, 16, 32);
SEQK_ATTENTION_TC(bf16, __nv_bfloat16, 64, 64, 64);
SEQK_ATTENTION_TC(bf16, __nv_bfloat16, 128, 32, 64);
SEQK_ATTENTION_TC(bf16, __nv_bfloat16, 256, 16, 32);

// attn_fwd_decode_tcDMAX_T (decode_tc::attn_fwd_decode_tc): the split kernels' arguments, 128
// threads, decode_tc::Tiling<DMAX>::SHARED_BYTES of dynamic shared memory: 2 stages x (k + v) x
// 64 keys x (DMAX + 8) x 2 bytes + the q tile, 16 x (DMAX + 8) x 2 = 39,168 (64) and 73,984 (128).
#define SEQK_ATTENTION_DECODE_TC(suffix, T, DMAX)                                                                       \
    extern "C" __global__ void attn_fwd_decode_tc##DMAX##_##suffix(                                                     \
        const T* q, const T* k, const T* v, float* part_out, float* part_ml, const int* key_lengths,                     \
        const int* query_lengths, const float* bias0, const float* bias1, AttnShape shape, long long keys_per_split,    \
        long long splits) {                                                                                              \
        decode_tc::attn_fwd_decode_tc<T, DMAX>(q, k, v, part_out, part_ml, key_lengths, query_lengths, bias0, bias1,     \
                                               shape, keys_per_split, splits);                                          \
    }                                                                                                                    \
    SEQK_KERNEL(attn_fwd_decode_tc##DMAX##_##suffix)

SEQK_ATTENTION_DECODE_TC(f16, __half, 64);
SEQK_ATTENTION_DECODE_TC(f16, __half, 128);
SEQK_ATTENTION_DECODE_TC(bf16, __nv_bfloat16, 64);
SEQK_ATTENTION_DECODE_TC(bf16, __nv_bfloat16, 128);

// The tensor-core backward (tc::attn_bwd_delta, tc::attn_bwd_dq_tc, tc::attn_bwd_dkdv_tc): v1's
// arguments, dout in the storage type, delta from attn_bwd_delta (which reads the forward's out
// with its own strides, dout with the shape's out strides), each row's count of +inf keys (hot:
// written by dq, read by dkdv); `vec`: 16-byte cp.async rows (dq: k and v; dkdv: q and dout).
// Instances as the forward's: attn_bwd_dq_tcDMAX_T and attn_bwd_dkdv_tcDMAX_T take every option at
// run time; the _nobias_ ones (no explicit mask, 16-byte rows of the tiles they stream: the host
// launches them only so; they ignore `vec`) have the same arguments, so the host picks by name, and
// the same tiles but dq's at 128: its _nobias_ instance takes key tiles of 16, as with tiles of 32
// ptxas spilled it on sm_80-sm_120 (sm_90: 16 bytes stored, 28 loaded, at 255 registers); with 16
// it fits in 255 without a spill on every architecture built (main-loop figures in
// docs/ARCHITECTURE.md).
#define SEQK_ATTENTION_BWD_DQ_TC(suffix, T, DMAX, BN, name, instance, vec_arg)                                         \
    extern "C" __global__ void attn_bwd_dq_tc##DMAX##name##suffix(const T* q, const T* k, const T* v, const T* dout,   \
                                                                 const float* lse, const float* delta, float* hot,      \
                                                                 float* dq,                                             \
                                                                 const int* key_lengths, const int* query_lengths,      \
                                                                 const float* bias0, const float* bias1,                \
                                                                 AttnShape shape, int vec) {                            \
        tc::attn_bwd_dq_tc<T, DMAX, BN, tc::TcInstance::instance>(q, k, v, dout, lse, delta, hot, dq, key_lengths,      \
                                                                  query_lengths, bias0, bias1, shape, vec_arg);         \
    }                                                                                                                   \
    SEQK_KERNEL(attn_bwd_dq_tc##DMAX##name##suffix)

#define SEQK_ATTENTION_BWD_DKDV_TC(suffix, T, DMAX, BQ, name, instance, vec_arg)                                       \
    extern "C" __global__ void attn_bwd_dkdv_tc##DMAX##name##suffix(const T* q, const T* k, const T* v, const T* dout, \
                                                                   const float* lse, const float* delta,                \
                                                                   const float* hot, float* dk, float* dv,              \
                                                                   const int* key_lengths, const int* query_lengths,    \
                                                                   const float* bias0, const float* bias1,              \
                                                                   AttnShape shape, int vec) {                          \
        tc::attn_bwd_dkdv_tc<T, DMAX, BQ, (DMAX > 64), tc::TcInstance::instance>(                                       \
            q, k, v, dout, lse, delta, hot, dk, dv, key_lengths, query_lengths, bias0, bias1, shape, vec_arg);           \
    }                                                                                                                   \
    SEQK_KERNEL(attn_bwd_dkdv_tc##DMAX##name##suffix)

// D and Dv up to 64 / 128 (attn_bwd_dkdv_tc128 splits its walk: see backward_tc.cuh). Shared
// memory: dq 2 x (k + v) x BN x (DMAX + 8) x 2 bytes + 4 warps x 16 x BN x 2 of scratch = 45,056
// (64/64), 38,912 (128/32) and 19,456 (128/16, no bias); dkdv 2 x (q + dout) x BQ x (DMAX + 8) x 2 + 2 x 3 x BQ x 4 +
// 4 x 16 x BQ x 2 = 23,296 (64/32) and 19,840 (128/16).
#define SEQK_ATTENTION_BWD_TC(suffix, T)                                                                                \
    SEQK_ATTENTION_BWD_DQ_TC(suffix, T, 64, 64, _, GENERAL, vec != 0);                                                 \
    SEQK_ATTENTION_BWD_DQ_TC(suffix, T, 64, 64, _nobias_, NO_BIAS, ((void) vec, true));                                \
    SEQK_ATTENTION_BWD_DQ_TC(suffix, T, 128, 32, _, GENERAL, vec != 0);                                                \
    SEQK_ATTENTION_BWD_DQ_TC(suffix, T, 128, 16, _nobias_, NO_BIAS, ((void) vec, true));                               \
    SEQK_ATTENTION_BWD_DKDV_TC(suffix, T, 64, 32, _, GENERAL, vec != 0);                                               \
    SEQK_ATTENTION_BWD_DKDV_TC(suffix, T, 64, 32, _nobias_, NO_BIAS, ((void) vec, true));                              \
    SEQK_ATTENTION_BWD_DKDV_TC(suffix, T, 128, 16, _, GENERAL, vec != 0);                                              \
    SEQK_ATTENTION_BWD_DKDV_TC(suffix, T, 128, 16, _nobias_, NO_BIAS, ((void) vec, true))

#define SEQK_ATTENTION_BWD_DELTA(suffix, T)                                                                            \
    extern "C" __global__ void attn_bwd_delta_##suffix(const T* out, const T* dout, float* delta, AttnShape shape,     \
                                                       RowStrides out_stride) {                                         \
        tc::attn_bwd_delta<T>(out, dout, delta, shape, out_stride);                                                     \
    }                                                                                                                   \
    SEQK_KERNEL(attn_bwd_delta_##suffix)

SEQK_ATTENTION_BWD_DELTA(f16, __half);
SEQK_ATTENTION_BWD_DELTA(bf16, __nv_bfloat16);
SEQK_ATTENTION_BWD_TC(f16, __half);
SEQK_ATTENTION_BWD_TC(bf16, __nv_bfloat16);

#define SEQK_ATTENTION(suffix, T)                                                                                        \
    extern "C" __global__ void attn_fwd_##suffix(const T* q, const T* k, const T* v, T* out, float* lse, float* acc,   \
                                                 const int* key_lengths, const int* query_lengths, const float* bias0,  \
                                                 const float* bias1, AttnShape shape) {                                 \
        attn_fwd_v1<T>(q, k, v, out, lse, acc, key_lengths, query_lengths, bias0, bias1, shape);                        \
    }                                                                                                                    \
    SEQK_KERNEL(attn_fwd_##suffix);                                                                                      \
    extern "C" __global__ void attn_probs_##suffix(const T* q, const T* k, const float* lse, float* probs,               \
                                                   const int* key_lengths, const int* query_lengths,                    \
                                                   const float* bias0, const float* bias1, AttnShape shape) {           \
        attn_probs_v1<T>(q, k, lse, probs, key_lengths, query_lengths, bias0, bias1, shape);                            \
    }                                                                                                                    \
    SEQK_KERNEL(attn_probs_##suffix);                                                                                    \
    extern "C" __global__ void attn_bwd_dq_##suffix(const T* q, const T* k, const T* v, const float* dout,              \
                                                    const float* dprobs, const float* lse, float* delta, float* dq,     \
                                                    const int* key_lengths, const int* query_lengths,                   \
                                                    const float* bias0, const float* bias1, AttnShape shape) {          \
        attn_bwd_dq_v1<T>(q, k, v, dout, dprobs, lse, delta, dq, key_lengths, query_lengths, bias0, bias1, shape);      \
    }                                                                                                                    \
    SEQK_KERNEL(attn_bwd_dq_##suffix);                                                                                   \
    extern "C" __global__ void attn_bwd_dkdv_##suffix(const T* q, const T* k, const T* v, const float* dout,            \
                                                      const float* dprobs, const float* lse, const float* delta,        \
                                                      float* dk, float* dv, const int* key_lengths,                     \
                                                      const int* query_lengths, const float* bias0, const float* bias1, \
                                                      AttnShape shape) {                                                \
        attn_bwd_dkdv_v1<T>(q, k, v, dout, dprobs, lse, delta, dk, dv, key_lengths, query_lengths, bias0, bias1, shape); \
    }                                                                                                                    \
    SEQK_KERNEL(attn_bwd_dkdv_##suffix)

SEQK_ATTENTION(f32, float);
SEQK_ATTENTION(f16, __half);
SEQK_ATTENTION(bf16, __nv_bfloat16);
