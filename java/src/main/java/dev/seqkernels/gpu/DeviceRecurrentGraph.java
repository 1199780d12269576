package dev.seqkernels.gpu;

import dev.seqkernels.Backend;
import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.ops.RecurrentOp;

import java.util.Arrays;

/**
 * A recurrent op's whole device forward (every layer, direction and step) as one CUDA graph, kept
 * across calls: a {@link #forward} with the same configuration and buffers as the call before it is
 * one graph launch on the call's stream; the first call, and any call that differs, runs the forward
 * and captures it anew. For a framework that repeats the same call (inference serving, a training
 * loop over fixed-size batches), as PyTorch's CUDA graphs do with static buffers.
 *
 * <p>The same call means: the same prepared weights object, x, h0, c0 and output buffer at the same
 * addresses with the same dtype, shape and strides (their values may change: the graph reads them
 * when it runs), the same lengths, and training or inference alike. The prepared weights are read
 * by address too, so updating them in place ({@link dev.seqkernels.ops.PreparedWeights#update})
 * keeps the graph. Lengths are part of the graph (it holds no host memory): a call with other
 * lengths captures anew, so a framework with varying lengths keeps one cache per set of lengths.
 *
 * <p>The graph owns its memory, the results' included: {@link #forward} returns the same result
 * object for every call with the same graph, overwritten by each launch, so it is valid until the
 * next call's work has run; closing the result frees nothing, and closing one of its tensors makes
 * the next repeated call fail ({@code TensorClosed}) instead of writing freed memory. A call that
 * captures anew issues its run and capture first (it may read the old graph's results, such as
 * h0 = the old hn; if it fails, the old graph stays), then waits for its stream (one host wait) and
 * frees the old graph, whose results are then closed; for a while both graphs' memory is held. A
 * training result can be differentiated by {@link DeviceRecurrent#backward} until the next call; a
 * backward on another stream must be ordered before that call. Calls through one cache must be
 * ordered on the device (the same stream, or streams the caller orders). A stateful caller that
 * feeds hn back as h0 should copy it into a buffer of its own that every call passes (a call with
 * h0 at another address captures anew). Closing the cache frees the graph and its memory: close
 * it only once the stream has reached the last call's work, as with any device result.
 *
 * <p>Ordering: the call's work (a graph launch, or the first run) is on the call's stream, after
 * whatever the caller issued there before; the capture itself runs nothing. Unlike a plain call, the
 * graph issues the per-step loop step by step inside itself (a graph cannot nest a capture), so it
 * holds the steps' GEMMs and kernels, or the persistent kernel's one launch per layer and direction.
 */
public final class DeviceRecurrentGraph implements AutoCloseable {
    private final DeviceRecurrent rnn;
    private RecurrentGpu.WholeGraph graph;
    private Key key;
    private int captures;
    private boolean closed;

    DeviceRecurrentGraph(DeviceRecurrent rnn) {
        this.rnn = rnn;
    }

    /** A tensor argument as the graph sees it: its address and layout (null when the call has none). */
    private record TensorKey(long pointer, DType dtype, long[] shape, long[] strides) {
        static TensorKey of(DeviceTensor t) {
            return t == null ? null : new TensorKey(t.pointer(), t.dtype(), t.shape(), t.strides());
        }

        @Override
        public boolean equals(Object o) {
            return o instanceof TensorKey k && k.pointer == pointer && k.dtype == dtype && Arrays.equals(k.shape, shape)
                    && Arrays.equals(k.strides, strides);
        }

        @Override
        public int hashCode() {
            return Long.hashCode(pointer) * 31 + Arrays.hashCode(shape);
        }
    }

    /** What a graph was captured for; weights by identity (their device copies are read by address). */
    private record Key(Backend.PreparedParams weights, TensorKey x, TensorKey h0, TensorKey c0, TensorKey out, int[] lengths,
                       boolean training, RecurrentGpu.StepChoice choice) {
        @Override
        public boolean equals(Object o) {
            return o instanceof Key k && k.weights == weights && k.x.equals(x) && java.util.Objects.equals(k.h0, h0)
                    && java.util.Objects.equals(k.c0, c0) && java.util.Objects.equals(k.out, out) && Arrays.equals(k.lengths, lengths)
                    && k.training == training && k.choice == choice;
        }

        @Override
        public int hashCode() {
            return x.hashCode() * 31 + Arrays.hashCode(lengths);
        }
    }

    /**
     * The op's forward of {@code call} (as {@link DeviceRecurrent#forward}, checked the same way,
     * before anything is queued): one graph launch on the call's stream when the call is the same as
     * the one before, else a run that is also captured. The result is the graph's (see the class
     * comment).
     */
    public synchronized DeviceRecurrentResult forward(DeviceRecurrent.Call call) {
        String name = rnn.op().opName();
        if (closed) {
            throw new SeqkException.TensorClosed(name + ": this graph cache was closed");
        }
        RecurrentOp.DeviceForwardArguments args = rnn.checked(call);
        RecurrentGpu path = rnn.path();
        Key k = new Key(args.prepared(), TensorKey.of(call.x), TensorKey.of(call.h0), TensorKey.of(call.c0), TensorKey.of(call.out),
                args.lengths(), !call.inference, path.stepChoice());
        if (graph != null && k.equals(key)) {
            DeviceRecurrentResult r = graph.result();
            for (DeviceTensor t : new DeviceTensor[]{r.output(), r.hn(), r.cn()}) {
                if (t != null && t.isClosed()) {  // the graph would write freed memory
                    throw new SeqkException.TensorClosed(name + ": a tensor of this graph's result was closed; the cache owns its results"
                            + " (close the cache, not them)");
                }
            }
            graph.scope().driver().launchGraph(graph.graph(), call.stream);
            return r;
        }
        RecurrentGpu.WholeGraph fresh = path.forwardCaptured(rnn.op().config(), args.prepared(), call.x, call.h0, call.c0, args.lengths(),
                call.out, call.stream, !call.inference);
        RecurrentGpu.WholeGraph old = graph;
        graph = fresh;
        key = k;
        captures++;
        if (old != null) {
            // The new run may read the old graph's results (h0 = its hn); calls through the cache are ordered on the device,
            // so once the call's stream is idle nothing reads or writes the old graph's memory.
            try {
                fresh.scope().driver().synchronize(call.stream);
            } finally {
                old.close();
            }
        }
        return fresh.result();
    }

    /** How many times a forward was captured (the first call, and each call that differed from the one before). */
    public synchronized int captures() {
        return captures;
    }

    /** Frees the graph and its memory (results included); the stream must have reached the last call's work. */
    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        if (graph != null) {
            RecurrentGpu.WholeGraph old = graph;
            graph = null;
            old.close();
        }
    }
}
