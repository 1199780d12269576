#!/usr/bin/python3
"""Writes seqkernels' golden cases from PyTorch (Debian's python3-torch), in float64.

Each case is one .safetensors file (format: docs/CONVENTIONS.md, "Golden files"). Outputs come
from torch's own modules (nn.RNN/LSTM/GRU, packed sequences, nn.MultiheadAttention); attention is
torch's softmax(q k^T) v written out, because Debian's torch 1.13 predates
F.scaled_dot_product_attention. Gradients come from torch.autograd for the loss
sum over outputs of output * seed.<output>.

Usage: /usr/bin/python3 tools/golden/make_goldens.py [OUT_DIR]   (default: tools/golden/cases)
"""
import json
import os
import struct
import sys

import torch

torch.manual_seed(20261122)
DT = torch.float64


def write_case(path, tensors, config):
    header = {"__metadata__": {"config": json.dumps(config, sort_keys=True)}}
    blobs, offset = [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous()
        if t.dtype == torch.bool:
            t = t.to(torch.int64)
        dtype = {torch.float64: "F64", torch.int64: "I64"}[t.dtype]
        raw = t.numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * ((8 - len(head) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for b in blobs:
            f.write(b)


def rand(*shape, scale=1.0):
    return ((torch.rand(*shape, dtype=DT) * 2 - 1) * scale).requires_grad_(True)


def loss_and_grads(outputs, wrt):
    """Seeds each output, returns (seeds, grads) with grads of sum(output * seed)."""
    seeds = {name: torch.rand(o.shape, dtype=DT) * 2 - 1 for name, o in outputs.items()}
    loss = sum((o * seeds[name]).sum() for name, o in outputs.items())
    grads = torch.autograd.grad(loss, list(wrt.values()), allow_unused=True)
    return seeds, {name: (g if g is not None else torch.zeros_like(t)) for (name, t), g in zip(wrt.items(), grads)}


def recurrent(out_dir, name, op, input_size, hidden_size, seq_len, batch, num_layers=1, bidirectional=False,
              batch_first=False, lengths=None, nonlinearity="tanh", proj_size=0, bias=True, initial_states=True):
    kwargs = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first, bias=bias)
    if op == "rnn":
        mod = torch.nn.RNN(input_size, hidden_size, nonlinearity=nonlinearity, **kwargs)
    elif op == "lstm":
        mod = torch.nn.LSTM(input_size, hidden_size, proj_size=proj_size, **kwargs)
    else:
        mod = torch.nn.GRU(input_size, hidden_size, **kwargs)
    mod = mod.to(DT)
    with torch.no_grad():
        for p in mod.parameters():
            p.uniform_(-0.6, 0.6)
    nd = 2 if bidirectional else 1
    state = proj_size if proj_size > 0 else hidden_size
    x = rand(*((batch, seq_len, input_size) if batch_first else (seq_len, batch, input_size)))
    inputs = {"x": x}
    if initial_states:
        inputs["h0"] = rand(num_layers * nd, batch, state, scale=0.5)
        if op == "lstm":
            inputs["c0"] = rand(num_layers * nd, batch, hidden_size, scale=0.5)
    hx = None
    if initial_states:
        hx = (inputs["h0"], inputs["c0"]) if op == "lstm" else inputs["h0"]
    if lengths is not None:
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths), batch_first=batch_first,
                                                         enforce_sorted=False)
        out_packed, hn = mod(packed, hx)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out_packed, batch_first=batch_first, total_length=seq_len)
    else:
        out, hn = mod(x, hx)
    outputs = {"out": out}
    if op == "lstm":
        outputs["hn"], outputs["cn"] = hn
    else:
        outputs["hn"] = hn
    params = dict(mod.named_parameters())
    wrt = dict(inputs)
    wrt.update({"param." + k: v for k, v in params.items()})
    seeds, grads = loss_and_grads(outputs, wrt)
    tensors = dict(inputs)
    tensors.update({"param." + k: v for k, v in params.items()})
    if lengths is not None:
        tensors["lengths"] = torch.tensor(lengths, dtype=torch.int64)
    tensors.update(outputs)
    tensors.update({"seed." + k: v for k, v in seeds.items()})
    tensors.update({"grad." + k.replace("param.", ""): v for k, v in grads.items()})
    config = dict(op=op, input_size=input_size, hidden_size=hidden_size, num_layers=num_layers,
                  bidirectional=bidirectional, seq_len=seq_len, batch=batch, batch_first=batch_first,
                  lengths=lengths, nonlinearity=nonlinearity if op == "rnn" else None,
                  proj_size=proj_size if op == "lstm" else 0, bias=bias)
    write_case(os.path.join(out_dir, name + ".safetensors"), tensors, config)


def cell(out_dir, name, op, input_size, hidden_size, batch, nonlinearity="tanh", bias=True):
    """One step of nn.RNNCell / nn.LSTMCell / nn.GRUCell: outputs hn (and cn) from x, h0 (and c0)."""
    if op == "rnn_cell":
        mod = torch.nn.RNNCell(input_size, hidden_size, bias=bias, nonlinearity=nonlinearity)
    elif op == "lstm_cell":
        mod = torch.nn.LSTMCell(input_size, hidden_size, bias=bias)
    else:
        mod = torch.nn.GRUCell(input_size, hidden_size, bias=bias)
    mod = mod.to(DT)
    with torch.no_grad():
        for p in mod.parameters():
            p.uniform_(-0.6, 0.6)
    inputs = {"x": rand(batch, input_size), "h0": rand(batch, hidden_size, scale=0.5)}
    if op == "lstm_cell":
        inputs["c0"] = rand(batch, hidden_size, scale=0.5)
        hn, cn = mod(inputs["x"], (inputs["h0"], inputs["c0"]))
        outputs = {"hn": hn, "cn": cn}
    else:
        outputs = {"hn": mod(inputs["x"], inputs["h0"])}
    params = dict(mod.named_parameters())
    wrt = dict(inputs)
    wrt.update({"param." + k: v for k, v in params.items()})
    seeds, grads = loss_and_grads(outputs, wrt)
    tensors = dict(inputs)
    tensors.update({"param." + k: v for k, v in params.items()})
    tensors.update(outputs)
    tensors.update({"seed." + k: v for k, v in seeds.items()})
    tensors.update({"grad." + k.replace("param.", ""): v for k, v in grads.items()})
    config = dict(op=op, input_size=input_size, hidden_size=hidden_size, batch=batch, bias=bias)
    if op == "rnn_cell":
        config["nonlinearity"] = nonlinearity
    write_case(os.path.join(out_dir, name + ".safetensors"), tensors, config)


def sdpa_math(q, k, v, scale, blocked, additive):
    """softmax(scale q k^T + additive, blocked -> -inf) v; fully blocked rows give 0 and lse -inf."""
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    if additive is not None:
        s = s + additive
    s = s.masked_fill(blocked, float("-inf"))
    dead = torch.isneginf(s).all(dim=-1, keepdim=True)
    s_safe = torch.where(dead, torch.zeros_like(s), s)
    p = torch.softmax(s_safe, dim=-1) * (~dead)
    lse = torch.where(dead.squeeze(-1), torch.full_like(s[..., 0], float("-inf")), torch.logsumexp(s_safe, dim=-1))
    return torch.matmul(p, v), lse


def sdpa(out_dir, name, batch, heads, q_len, kv_len, head_dim, value_dim, kv_heads=None, mask=None, scale=None,
         key_lengths=None, query_lengths=None, mask_shape=None):
    kv_heads = kv_heads or heads
    q = rand(batch, heads, q_len, head_dim)
    k = rand(batch, kv_heads, kv_len, head_dim)
    v = rand(batch, kv_heads, kv_len, value_dim)
    blocked = torch.zeros(batch, heads, q_len, kv_len, dtype=torch.bool)
    additive = None
    tensors = {"q": q, "k": k, "v": v}
    i = torch.arange(q_len).view(-1, 1)
    j = torch.arange(kv_len).view(1, -1)
    kl = key_lengths or [kv_len] * batch
    ql = query_lengths or [q_len] * batch
    for b in range(batch):
        blocked[b] |= (j >= kl[b]) | (i >= ql[b])
        if mask == "causal_top_left":
            blocked[b] |= j > i
        elif mask == "causal_bottom_right":
            blocked[b] |= j > i + (kl[b] - ql[b])
    if mask == "bool":
        allowed = torch.rand(*mask_shape) < 0.7
        tensors["mask"] = allowed
        blocked = blocked | ~allowed.expand(batch, heads, q_len, kv_len)
    elif mask == "additive":
        additive = torch.rand(*mask_shape, dtype=DT) * 4 - 2
        tensors["mask"] = additive
    sc = scale if scale is not None else 1.0 / head_dim ** 0.5
    out, lse = sdpa_math(q, k, v, sc, blocked, additive)
    seeds, grads = loss_and_grads({"out": out}, {"q": q, "k": k, "v": v})
    tensors.update({"out": out, "lse": lse, "seed.out": seeds["out"]})
    tensors.update({"grad." + n: g for n, g in grads.items()})
    config = dict(op="sdpa", batch=batch, heads=heads, kv_heads=kv_heads, q_len=q_len, kv_len=kv_len,
                  head_dim=head_dim, value_dim=value_dim, mask=mask if mask else None)
    if scale is not None:
        config["scale"] = scale
    if key_lengths is not None:
        config["key_lengths"] = key_lengths
    if query_lengths is not None:
        config["query_lengths"] = query_lengths
    write_case(os.path.join(out_dir, name + ".safetensors"), tensors, config)


def mha(out_dir, name, embed_dim, num_heads, q_len, kv_len, batch, kdim=None, vdim=None, batch_first=False,
        self_attention=False, need_weights=False, bias=True, key_padding_mask=None, attn_mask=None):
    mod = torch.nn.MultiheadAttention(embed_dim, num_heads, bias=bias, kdim=kdim, vdim=vdim,
                                      batch_first=batch_first).to(DT)
    with torch.no_grad():
        for p in mod.parameters():
            p.uniform_(-0.5, 0.5)

    def seq(length, feat):
        return rand(*((batch, length, feat) if batch_first else (length, batch, feat)))

    query = seq(q_len, embed_dim)
    if self_attention:
        key = value = query
        inputs = {"query": query}
    else:
        key = seq(kv_len, kdim or embed_dim)
        value = seq(kv_len, vdim or embed_dim)
        inputs = {"query": query, "key": key, "value": value}
    tensors = dict(inputs)
    kpm = am = None
    if key_padding_mask == "bool":
        kpm = torch.zeros(batch, kv_len, dtype=torch.bool)
        kpm[:, -1] = True
        kpm[0, 1] = True
        tensors["key_padding_mask"] = kpm
    if attn_mask == "float":
        am = torch.rand(q_len, kv_len, dtype=DT) * 2 - 1
        tensors["attn_mask"] = am
    elif attn_mask == "bool_per_head":
        am = torch.rand(batch * num_heads, q_len, kv_len) < 0.3
        am[..., 0] = False  # every row keeps one key: PyTorch gives NaN for fully masked rows
        tensors["attn_mask"] = am
    out, weights = mod(query, key, value, key_padding_mask=kpm, attn_mask=am, need_weights=need_weights)
    outputs = {"out": out}
    if need_weights:
        outputs["attn_weights_avg"] = weights
    params = dict(mod.named_parameters())
    wrt = dict(inputs)
    wrt.update({"param." + k: p for k, p in params.items()})
    seeds, grads = loss_and_grads(outputs, wrt)
    tensors.update({"param." + k: p for k, p in params.items()})
    tensors.update(outputs)
    tensors.update({"seed." + k: s for k, s in seeds.items()})
    tensors.update({"grad." + k.replace("param.", ""): g for k, g in grads.items()})
    config = dict(op="mha", embed_dim=embed_dim, num_heads=num_heads, kdim=kdim or embed_dim,
                  vdim=vdim or embed_dim, q_len=q_len, kv_len=kv_len, batch=batch, batch_first=batch_first,
                  self_attention=self_attention, need_weights=need_weights, bias=bias)
    write_case(os.path.join(out_dir, name + ".safetensors"), tensors, config)


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "cases")
    os.makedirs(out_dir, exist_ok=True)
    recurrent(out_dir, "rnn_tanh", "rnn", 5, 7, 9, 3)
    recurrent(out_dir, "rnn_relu_2layer_bidir_batch_first", "rnn", 3, 5, 6, 2, num_layers=2, bidirectional=True,
              batch_first=True, nonlinearity="relu")
    recurrent(out_dir, "rnn_tanh_bidir_lengths", "rnn", 4, 6, 7, 3, bidirectional=True, lengths=[7, 1, 4])
    recurrent(out_dir, "rnn_no_bias_zero_states", "rnn", 4, 5, 5, 2, bias=False, initial_states=False)
    recurrent(out_dir, "lstm", "lstm", 5, 7, 9, 3)
    recurrent(out_dir, "lstm_2layer_bidir_lengths", "lstm", 4, 5, 9, 4, num_layers=2, bidirectional=True,
              lengths=[9, 1, 5, 3])
    recurrent(out_dir, "lstm_proj_2layer_bidir_lengths", "lstm", 4, 7, 6, 3, num_layers=2, bidirectional=True,
              lengths=[2, 6, 1], proj_size=3)
    recurrent(out_dir, "lstm_batch_first_zero_states", "lstm", 3, 4, 5, 2, batch_first=True, initial_states=False)
    recurrent(out_dir, "lstm_odd_T97_H37", "lstm", 13, 37, 97, 3, lengths=[97, 1, 50])
    recurrent(out_dir, "gru", "gru", 5, 7, 9, 3)
    recurrent(out_dir, "gru_2layer_bidir_lengths_batch_first", "gru", 3, 6, 7, 3, num_layers=2, bidirectional=True,
              batch_first=True, lengths=[3, 7, 1])
    recurrent(out_dir, "gru_no_bias", "gru", 4, 5, 4, 2, bias=False)
    cell(out_dir, "rnn_cell_relu", "rnn_cell", 5, 7, 3, nonlinearity="relu")
    cell(out_dir, "lstm_cell", "lstm_cell", 5, 7, 3)
    cell(out_dir, "gru_cell_no_bias", "gru_cell", 6, 5, 4, bias=False)
    sdpa(out_dir, "sdpa_plain", 2, 3, 5, 7, 4, 6)
    sdpa(out_dir, "sdpa_gqa_scale", 2, 6, 4, 5, 5, 3, kv_heads=2, scale=0.37)
    sdpa(out_dir, "sdpa_causal_top_left", 1, 2, 6, 9, 4, 4, mask="causal_top_left")
    sdpa(out_dir, "sdpa_causal_bottom_right", 1, 2, 6, 9, 4, 4, mask="causal_bottom_right")
    sdpa(out_dir, "sdpa_causal_bottom_right_lq_gt_lk", 1, 2, 9, 6, 4, 4, mask="causal_bottom_right")
    sdpa(out_dir, "sdpa_bool_mask_broadcast", 2, 3, 5, 6, 3, 2, mask="bool", mask_shape=(2, 1, 5, 6))
    sdpa(out_dir, "sdpa_additive_mask", 2, 2, 5, 6, 3, 5, mask="additive", mask_shape=(5, 6))
    sdpa(out_dir, "sdpa_varlen_causal", 3, 2, 6, 8, 4, 3, mask="causal_bottom_right", key_lengths=[8, 3, 0],
         query_lengths=[6, 2, 4])
    sdpa(out_dir, "sdpa_odd_D59_Dv24", 1, 2, 37, 65, 59, 24, kv_heads=1)
    mha(out_dir, "mha_self_packed_weights_kpm", 12, 3, 5, 5, 2, self_attention=True, need_weights=True,
        key_padding_mask="bool")
    mha(out_dir, "mha_cross_kdim_vdim_batch_first_float_mask", 8, 2, 4, 6, 2, kdim=5, vdim=7, batch_first=True,
        attn_mask="float", need_weights=True)
    mha(out_dir, "mha_no_bias_bool_per_head_mask", 6, 3, 3, 4, 2, bias=False, attn_mask="bool_per_head")
    mha(out_dir, "mha_E48_H6_cross_odd", 48, 6, 7, 9, 2, need_weights=True)


if __name__ == "__main__":
    main()
