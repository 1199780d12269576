// Scaled dot-product attention, forward and backward, for AttentionGpu.java (the Attention and
// MultiHeadAttention ops' GPU path).
//
// Versions: v1 (these) are plain ports of cpu/AttentionReference: one thread per query row
// (forward, dq, row dot products) or per key row (dk, dv); scores are recomputed where needed and
// the softmax is never stored; accumulators live in f32 global rows (no per-thread arrays, so no
// spills at any head dimension). Deterministic: no atomics. Tiled tensor-core versions will sit
// beside them and must match them.
//
// Layout: element (b, h, l, e) of q, k, v, out (and dout, dq, dk, dv) is at
// b*s[0] + h*s[1] + l*s[2] + e*s[3] with the strides in AttnShape, so multi-head attention reads
// projected [B*L, E] buffers in place. Query head h reads key/value head h / (Hq / Hkv).
// Masks: up to two additive f32 biases (-inf blocks) with broadcast strides (0 = broadcast), causal
// (1 top-left, 2 bottom-right aligned to each entry's valid lengths), key and query lengths.
// A row with no allowed key: out 0, lse -inf, no gradient.
// Flops: forward 2*Lq*Lk*(D + Dv) per (b, h) for the useful work, times 2 for the score recompute.
#include "seqk.cuh"

namespace {

/** Shapes, strides and options; every field 8 bytes so the Java side packs it word by word. */
struct AttnShape {
    long long batch, q_heads, kv_heads, q_len, kv_len, head_dim, value_dim;
    long long q_stride[4], k_stride[4], v_stride[4], o_stride[4];
    long long bias_stride[2][4];
    long long causal;
    double scale;
};

struct AttnRow {
    long long b, h, kvh, i, q_valid, k_valid;
};

__device__ __forceinline__ long long at(const long long* s, long long b, long long h, long long l, long long e) {
    return b * s[0] + h * s[1] + l * s[2] + e * s[3];
}

/** Row coordinates of query row `row` in [B*Hq*Lq], with its batch entry's valid lengths. */
__device__ __forceinline__ AttnRow row_of(const AttnShape& s, long long row, const int* key_lengths, const int* query_lengths) {
    AttnRow r;
    r.i = row % s.q_len;
    r.h = (row / s.q_len) % s.q_heads;
    r.b = row / (s.q_len * s.q_heads);
    r.kvh = r.h / (s.q_heads / s.kv_heads);
    r.k_valid = key_lengths ? key_lengths[r.b] : s.kv_len;
    r.q_valid = query_lengths ? query_lengths[r.b] : s.q_len;
    return r;
}

/** The scaled, biased score of (row, key j), or -inf when any mask blocks it. */
template <typename T>
__device__ float score(const AttnShape& s, const AttnRow& r, long long j, const T* q, const T* k, const float* bias0,
                       const float* bias1) {
    if (j >= r.k_valid || r.i >= r.q_valid) {
        return -INFINITY;
    }
    if ((s.causal == 1 && j > r.i) || (s.causal == 2 && j > r.i + (r.k_valid - r.q_valid))) {
        return -INFINITY;
    }
    float add = 0.0f;
    if (bias0) {
        add += bias0[at(s.bias_stride[0], r.b, r.h, r.i, j)];
    }
    if (bias1) {
        add += bias1[at(s.bias_stride[1], r.b, r.h, r.i, j)];
    }
    if (add == -INFINITY) {
        return -INFINITY;
    }
    float dot = 0.0f;
    for (long long e = 0; e < s.head_dim; e++) {
        dot += seqk::to_float(q[at(s.q_stride, r.b, r.h, r.i, e)]) * seqk::to_float(k[at(s.k_stride, r.b, r.kvh, j, e)]);
    }
    return static_cast<float>(s.scale) * dot + add;
}

// Forward. One thread: one query row. lse [B*Hq*Lq] f32; acc [B*Hq*Lq, Dv] f32 scratch.
template <typename T>
__device__ void attn_fwd_v1(const T* q, const T* k, const T* v, T* out, float* lse, float* acc, const int* key_lengths,
                            const int* query_lengths, const float* bias0, const float* bias1, const AttnShape& s) {
    long long row = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (row >= s.batch * s.q_heads * s.q_len) {
        return;
    }
    AttnRow r = row_of(s, row, key_lengths, query_lengths);
    float m = -INFINITY;
    for (long long j = 0; j < s.kv_len; j++) {
        m = fmaxf(m, score(s, r, j, q, k, bias0, bias1));
    }
    float* a = acc + row * s.value_dim;
    for (long long e = 0; e < s.value_dim; e++) {
        a[e] = 0.0f;
    }
    if (m == -INFINITY) {
        lse[row] = -INFINITY;
    } else {
        float l = 0.0f;
        for (long long j = 0; j < s.kv_len; j++) {
            float p = expf(score(s, r, j, q, k, bias0, bias1) - m);
            if (p == 0.0f) {
                continue;
            }
            l += p;
            for (long long e = 0; e < s.value_dim; e++) {
                a[e] += p * seqk::to_float(v[at(s.v_stride, r.b, r.kvh, j, e)]);
            }
        }
        for (long long e = 0; e < s.value_dim; e++) {
            a[e] /= l;
        }
        lse[row] = m + logf(l);
    }
    for (long long e = 0; e < s.value_dim; e++) {
        out[at(s.o_stride, r.b, r.h, r.i, e)] = seqk::from_float<T>(a[e]);
    }
}

__device__ __forceinline__ float prob(float sc, float lse) {
    return sc == -INFINITY || lse == -INFINITY ? 0.0f : expf(sc - lse);
}

// probs [B, Hq, Lq, Lk] f32 (multi-head attention's weights). One thread: one query row.
template <typename T>
__device__ void attn_probs_v1(const T* q, const T* k, const float* lse, float* probs, const int* key_lengths,
                              const int* query_lengths, const float* bias0, const float* bias1, const AttnShape& s) {
    long long row = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (row >= s.batch * s.q_heads * s.q_len) {
        return;
    }
    AttnRow r = row_of(s, row, key_lengths, query_lengths);
    for (long long j = 0; j < s.kv_len; j++) {
        probs[row * s.kv_len + j] = prob(score(s, r, j, q, k, bias0, bias1), lse[row]);
    }
}

/** dP(row, j) = dout_row . v_j (+ dprobs when the probabilities are an output too). */
template <typename T>
__device__ float dprob(const AttnShape& s, const AttnRow& r, long long row, long long j, const T* v, const float* dout,
                       const float* dprobs) {
    float d = dprobs ? dprobs[row * s.kv_len + j] : 0.0f;
    for (long long e = 0; e < s.value_dim; e++) {
        d += dout[at(s.o_stride, r.b, r.h, r.i, e)] * seqk::to_float(v[at(s.v_stride, r.b, r.kvh, j, e)]);
    }
    return d;
}

// Backward, rows: delta[row] = sum_j P dP, then dq_row = scale * sum_j P (dP - delta) k_j.
// One thread: one query row. dout and dq f32 (dout with the out strides, dq with the q strides).
template <typename T>
__device__ void attn_bwd_dq_v1(const T* q, const T* k, const T* v, const float* dout, const float* dprobs, const float* lse,
                               float* delta, float* dq, const int* key_lengths, const int* query_lengths, const float* bias0,
                               const float* bias1, const AttnShape& s) {
    long long row = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (row >= s.batch * s.q_heads * s.q_len) {
        return;
    }
    AttnRow r = row_of(s, row, key_lengths, query_lengths);
    for (long long e = 0; e < s.head_dim; e++) {
        dq[at(s.q_stride, r.b, r.h, r.i, e)] = 0.0f;
    }
    float dsum = 0.0f;
    for (long long j = 0; j < s.kv_len; j++) {
        float p = prob(score(s, r, j, q, k, bias0, bias1), lse[row]);
        if (p != 0.0f) {
            dsum += p * dprob(s, r, row, j, v, dout, dprobs);
        }
    }
    delta[row] = dsum;
    for (long long j = 0; j < s.kv_len; j++) {
        float p = prob(score(s, r, j, q, k, bias0, bias1), lse[row]);
        if (p == 0.0f) {
            continue;
        }
        float ds = p * (dprob(s, r, row, j, v, dout, dprobs) - dsum) * static_cast<float>(s.scale);
        for (long long e = 0; e < s.head_dim; e++) {
            dq[at(s.q_stride, r.b, r.h, r.i, e)] += ds * seqk::to_float(k[at(s.k_stride, r.b, r.kvh, j, e)]);
        }
    }
}

// Backward, keys: dk_j and dv_j summed over every query row of every query head that reads key
// head kvh. One thread: one key row (b, kvh, j). Needs delta from attn_bwd_dq.
template <typename T>
__device__ void attn_bwd_dkdv_v1(const T* q, const T* k, const T* v, const float* dout, const float* dprobs,
                                 const float* lse, const float* delta, float* dk, float* dv, const int* key_lengths,
                                 const int* query_lengths, const float* bias0, const float* bias1, const AttnShape& s) {
    long long key = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (key >= s.batch * s.kv_heads * s.kv_len) {
        return;
    }
    long long j = key % s.kv_len;
    long long kvh = (key / s.kv_len) % s.kv_heads;
    long long b = key / (s.kv_len * s.kv_heads);
    for (long long e = 0; e < s.head_dim; e++) {
        dk[at(s.k_stride, b, kvh, j, e)] = 0.0f;
    }
    for (long long e = 0; e < s.value_dim; e++) {
        dv[at(s.v_stride, b, kvh, j, e)] = 0.0f;
    }
    long long group = s.q_heads / s.kv_heads;
    for (long long h = kvh * group; h < (kvh + 1) * group; h++) {
        for (long long i = 0; i < s.q_len; i++) {
            long long row = (b * s.q_heads + h) * s.q_len + i;
            AttnRow r = row_of(s, row, key_lengths, query_lengths);
            float p = prob(score(s, r, j, q, k, bias0, bias1), lse[row]);
            if (p == 0.0f) {
                continue;
            }
            for (long long e = 0; e < s.value_dim; e++) {
                dv[at(s.v_stride, b, kvh, j, e)] += p * dout[at(s.o_stride, b, h, i, e)];
            }
            float ds = p * (dprob(s, r, row, j, v, dout, dprobs) - delta[row]) * static_cast<float>(s.scale);
            for (long long e = 0; e < s.head_dim; e++) {
                dk[at(s.k_stride, b, kvh, j, e)] += ds * seqk::to_float(q[at(s.q_stride, b, h, i, e)]);
            }
        }
    }
}

}  // namespace

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
