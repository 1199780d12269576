// v1: plain ports of cpu/AttentionReference, forward, probabilities and backward (see attention.cu).
#pragma once

#include "common.cuh"

namespace {

// Forward. One thread: one query row. lse [B*Hq*Lq] f32; acc [B*Hq*Lq, Dv] f32 scratch.
template <typename T>
__device__ void attn_fwd_v1(const T* q, const T* k, const T* v, T* out, float* lse, float* acc, const int* key_lengths,
                            const int* query_lengths, const float* bias0, const float* bias1, const AttnShape& s) {
    long long row = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (row >= s.batch * s.q_heads * s.q_len) {
        return;
    }
    AttnRow r = row_of(s, row, key_lengths, query_lengths);
    // The reference's Math.max keeps a NaN score (fmaxf would drop it, and a row of NaN scores
    // would pass for fully masked): m is NaN then, and so are the weights, out and lse.
    float m = -INFINITY;
    for (long long j = 0; j < s.kv_len; j++) {
        float sc = score(s, r, j, q, k, bias0, bias1);
        m = sc > m || sc != sc ? sc : m;
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
            float sc = score(s, r, j, q, k, bias0, bias1);
            if (sc == -INFINITY) {
                continue;  // blocked: never read; an allowed key is read even if its weight underflows
            }
            float p = softmax_weight(sc, m);
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

// probs [B, Hq, Lq, Lk] f32 (multi-head attention's weights). One thread: one query row.
template <typename T>
__device__ void attn_probs_v1(const T* q, const T* k, const float* lse, float* probs, const int* key_lengths,
                              const int* query_lengths, const float* bias0, const float* bias1, const AttnShape& s) {
    long long row = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (row >= s.batch * s.q_heads * s.q_len) {
        return;
    }
    AttnRow r = row_of(s, row, key_lengths, query_lengths);
    // Scores beyond fp32's range: the keys at +inf share the row's weight equally, as in the forward.
    float hot = lse[row] == INFINITY ? hot_keys(s, r, q, k, bias0, bias1) : 0.0f;
    for (long long j = 0; j < s.kv_len; j++) {
        probs[row * s.kv_len + j] = prob_of(score(s, r, j, q, k, bias0, bias1), lse[row], hot);
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
    float hot = lse[row] == INFINITY ? hot_keys(s, r, q, k, bias0, bias1) : 0.0f;
    float dsum = 0.0f;
    for (long long j = 0; j < s.kv_len; j++) {
        float sc = score(s, r, j, q, k, bias0, bias1);
        float p = prob_of(sc, lse[row], hot);
        if (sc != -INFINITY) {  // blocked keys are never read, as in forward
            dsum += p * dprob(s, r, row, j, v, dout, dprobs);
        }
    }
    delta[row] = dsum;
    for (long long j = 0; j < s.kv_len; j++) {
        float sc = score(s, r, j, q, k, bias0, bias1);
        if (sc == -INFINITY) {
            continue;
        }
        float p = prob_of(sc, lse[row], hot);
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
            float sc = score(s, r, j, q, k, bias0, bias1);
            if (sc == -INFINITY) {
                continue;  // blocked for this row: never read
            }
            float p = prob_of(sc, lse[row], lse[row] == INFINITY ? hot_keys(s, r, q, k, bias0, bias1) : 0.0f);
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
