#!/usr/bin/env python3
"""Times PyTorch on the shapes of a `seqk bench` suite and writes rows in seqk bench's JSON shape.

    seqk bench --suite rnn --list > cases.json
    python3 bench/peers/torch_bench.py --cases cases.json --out peers.json
    seqk bench --suite rnn --compare peers.json

Peers: nn.LSTM / nn.GRU (cuDNN on a GPU), nn.MultiheadAttention (self-attention, need_weights=False),
and scaled_dot_product_attention once per backend it has
(flash, cudnn, efficient, math; a backend that refuses a case gets a row saying why). Without
scaled_dot_product_attention (PyTorch < 2.0) attention is timed as matmul-softmax-matmul.

Timing matches seqk bench: warm-up, then at least 3 repetitions, at least 10 unless they take over
2 s, and more up to 300 ms (at most 200), each between CUDA events after writing a 256 MiB buffer so that L2 holds nothing useful; median and
10th/90th percentiles. The forward pass is the training forward (autograd on), as ours saves what
backward needs; the infer pass runs under torch.inference_mode(), as ours keeps nothing; the
infer-graph pass captures that inference forward once in a torch.cuda.CUDAGraph and times its replay,
as ours times one launch of its captured forward. On a CPU (--device cpu) it times with perf_counter, for checking this script.
"""
import argparse
import datetime
import inspect
import json
import re
import sys
import time

import torch
import torch.nn.functional as F

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def percentile(values, q):
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(len(s) - 1, lo + 1)
    return s[lo] + (pos - lo) * (s[hi] - s[lo])


class Timer:
    def __init__(self, device, warmup, min_reps, max_reps, budget_ms):
        self.device = device
        self.warmup, self.min_reps, self.max_reps, self.budget_ms = warmup, min_reps, max_reps, budget_ms
        self.flush = torch.empty(256 << 20, dtype=torch.uint8, device=device) if device == "cuda" else None

    def __call__(self, fn):
        for _ in range(self.warmup):
            fn()
        self.sync()
        times = []
        while (len(times) < 3 or (len(times) < self.min_reps and sum(times) < 2000)
               or (len(times) < self.max_reps and sum(times) < self.budget_ms)):
            if self.flush is not None:
                self.flush.fill_(len(times) & 0xFF)
            if self.device == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return times

    def sync(self):
        if self.device == "cuda":
            torch.cuda.synchronize()


def recurrent_runner(case, device):
    s, dt = case["shape"], DTYPES[case["dtype"]]
    cls = torch.nn.LSTM if case["op"] == "lstm" else torch.nn.GRU
    net = cls(s["I"], s["H"]).to(device=device, dtype=dt)
    x = torch.randn(s["T"], s["B"], s["I"], device=device, dtype=dt, requires_grad=True)
    dy = torch.randn(s["T"], s["B"], s["H"], device=device, dtype=dt)

    def fwd():
        return net(x)[0]

    def fwd_bwd():
        net(x)[0].backward(dy)

    def infer():
        with torch.inference_mode():
            return net(x)[0]

    impl = "torch-cudnn" if device == "cuda" and torch.backends.cudnn.is_available() else "torch-" + device
    if case["pass"] == "infer-graph":
        return [captured_runner(impl, infer, device)]
    run = {"fwd+bwd": fwd_bwd, "infer": infer}.get(case["pass"], fwd)
    return [(impl, run, None)]


def captured_runner(impl, forward, device):
    """forward captured once in a torch.cuda.CUDAGraph (warmed up on a side stream first, as PyTorch's
    CUDA graph notes ask) and timed by replay; on a CPU the plain forward, said so."""
    if device != "cuda":
        return impl, forward, "no CUDA graph on a CPU: the plain inference forward"
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            forward()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        forward()
    return impl + "-graph", graph.replay, "the inference forward captured once in a CUDA graph, timed per replay"


def sdpa_backends():
    """(name, context factory) for each SDPA backend this PyTorch can select, or None before 2.0."""
    if not hasattr(F, "scaled_dot_product_attention"):
        return None
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # 2.0 .. 2.2
        return [("default", None)]
    names = [("flash", "FLASH_ATTENTION"), ("cudnn", "CUDNN_ATTENTION"), ("efficient", "EFFICIENT_ATTENTION"), ("math", "MATH")]
    return [(n, (lambda b=getattr(SDPBackend, a): sdpa_kernel(b))) for n, a in names if hasattr(SDPBackend, a)]


def sdpa_takes_gqa(device, dt):
    """Whether this PyTorch's SDPA takes enable_gqa (2.5 and later): tried once on a tiny call."""
    try:
        x = torch.zeros(1, 2, 1, 8, device=device, dtype=dt)
        y = torch.zeros(1, 1, 1, 8, device=device, dtype=dt)
        F.scaled_dot_product_attention(x, y, y, enable_gqa=True)
        return True
    except (TypeError, RuntimeError, AttributeError):
        return False


def attention_runners(case, device):
    s, dt = case["shape"], DTYPES[case["dtype"]]
    b, h, d = s["B"], s["H"], s["D"]
    hkv = s.get("Hkv", h)
    lq, lk = s.get("Lq", s.get("L")), s.get("Lk", s.get("L"))
    causal = s.get("causal", 0) == 1
    grad = case["pass"] == "fwd+bwd"
    q = torch.randn(b, h, lq, d, device=device, dtype=dt, requires_grad=grad)
    k = torch.randn(b, hkv, lk, d, device=device, dtype=dt, requires_grad=grad)
    v = torch.randn(b, hkv, lk, d, device=device, dtype=dt, requires_grad=grad)
    dout = torch.randn(b, h, lq, d, device=device, dtype=dt)
    note = None
    gqa = {}
    if hkv != h and sdpa_takes_gqa(device, dt):
        gqa = {"enable_gqa": True}
        note = "enable_gqa: k and v read once per group"
    elif hkv != h and not grad:
        # Repeated once, outside the timed call: the copy is not PyTorch's attention work.
        k, v = (t.repeat_interleave(h // hkv, dim=1) for t in (k, v))
        note = "k and v repeated to the query heads before timing (this PyTorch has no enable_gqa)"
    elif hkv != h:
        note = "k and v repeated to the query heads inside the timed call, so gradients reach them (no enable_gqa)"

    def expand(t):
        return t if gqa or t.shape[1] == h else t.repeat_interleave(h // hkv, dim=1)

    backends = sdpa_backends()
    runners = []
    if backends is None:
        def manual():
            scores = torch.matmul(q, expand(k).transpose(-1, -2)) * d ** -0.5
            if causal:
                scores = scores.masked_fill(torch.ones(lq, lk, dtype=torch.bool, device=device).triu(1), float("-inf"))
            out = torch.matmul(torch.softmax(scores, dim=-1), expand(v))
            if grad:
                out.backward(dout)
        return [("torch-matmul-softmax", manual, note)]
    for name, ctx in backends:
        def run(ctx=ctx):
            if ctx is None:
                out = F.scaled_dot_product_attention(q, expand(k), expand(v), is_causal=causal, **gqa)
            else:
                with ctx():
                    out = F.scaled_dot_product_attention(q, expand(k), expand(v), is_causal=causal, **gqa)
            if grad:
                out.backward(dout)
        runners.append(("torch-sdpa-" + name, run, note))
    return runners


def mha_runner(case, device):
    """nn.MultiheadAttention as seqk bench's mha case runs it: self-attention, batch first, no weights."""
    s, dt = case["shape"], DTYPES[case["dtype"]]
    b, l, e, h = s["B"], s["L"], s["E"], s["H"]
    causal = s.get("causal", 0) == 1
    grad = case["pass"] == "fwd+bwd"
    net = torch.nn.MultiheadAttention(e, h, batch_first=True, device=device, dtype=dt)
    x = torch.randn(b, l, e, device=device, dtype=dt, requires_grad=grad)
    dout = torch.randn(b, l, e, device=device, dtype=dt)
    # The causal mask made once, outside the timed call; is_causal (PyTorch 2.0+) is a hint beside it.
    mask = torch.full((l, l), float("-inf"), device=device, dtype=dt).triu(1) if causal else None
    hint = {"is_causal": True} if causal and "is_causal" in inspect.signature(net.forward).parameters else {}

    def run():
        out = net(x, x, x, need_weights=False, attn_mask=mask, **hint)[0]
        if grad:
            out.backward(dout)
    return [("torch-mha", run, None)]


def row(case, impl, times, note):
    timed = bool(times)
    return {
        "key": case["key"], "op": case["op"], "shape": case["shape"], "dtype": case["dtype"], "pass": case["pass"],
        "impl": impl, "medianMs": percentile(times, 0.5) if timed else 0.0,
        "p10Ms": percentile(times, 0.1) if timed else 0.0, "p90Ms": percentile(times, 0.9) if timed else 0.0,
        "reps": len(times), "flops": case["flops"], "bytes": case["bytes"], "floorMs": 0.0, "bound": "",
        "note": note or "",
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", required=True, help="seqk bench --suite S --list output")
    ap.add_argument("--out", required=True, help="where to write the peer rows (JSON)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else None, choices=["cuda", "cpu"])
    ap.add_argument("--filter", help="only cases whose key matches this regular expression")
    ap.add_argument("--min-reps", type=int, default=10)
    args = ap.parse_args()
    if args.device is None:
        sys.exit("torch_bench: no CUDA device; pass --device cpu to check the script on a CPU")
    with open(args.cases) as f:
        cases = json.load(f)["cases"]
    if args.filter:
        cases = [c for c in cases if re.search(args.filter, c["key"])]
    timer = Timer(args.device, warmup=3, min_reps=args.min_reps, max_reps=200, budget_ms=300)
    report = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "binding": "torch " + torch.__version__ + (" cudnn " + str(torch.backends.cudnn.version()) if args.device == "cuda" else ""),
        "date": datetime.date.today().isoformat(), "command": " ".join(sys.argv), "peaks": None, "rows": [],
    }
    for case in cases:
        if case.get("skip"):
            report["rows"].append(row(case, "torch", [], "skipped: " + case["skip"]))
            continue
        try:
            if case["op"] in ("lstm", "gru"):
                runners = recurrent_runner(case, args.device)
            elif case["op"] == "mha":
                runners = mha_runner(case, args.device)
            else:
                runners = attention_runners(case, args.device)
        except (RuntimeError, ValueError) as e:
            report["rows"].append(row(case, "torch", [], "failed: " + str(e).splitlines()[0]))
            runners = []
        for impl, fn, note in runners:
            try:
                r = row(case, impl, timer(fn), note)
            except (RuntimeError, ValueError) as e:  # a backend that does not take this case says so
                r = row(case, impl, [], "unsupported: " + (str(e).splitlines() or ["?"])[0])
            report["rows"].append(r)
            print("%-52s %-24s %s" % (case["key"], impl, "%.4f ms" % r["medianMs"] if r["reps"] else r["note"]), flush=True)
            with open(args.out, "w") as f:  # after every row: a run cut short keeps what it measured
                json.dump(report, f, indent=1)
        if args.device == "cuda":
            torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
