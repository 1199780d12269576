package dev.seqkernels.gpu;

import dev.seqkernels.Tensor;

import java.util.ArrayList;
import java.util.List;

/**
 * Host tensors an op call is building for its caller: if the call fails before {@link
 * #handOver()}, closing this frees them, so an error path leaks nothing.
 */
final class PendingResults implements AutoCloseable {
    private final List<Tensor> tensors = new ArrayList<>();

    /** Keeps {@code t} (null passes through) until the results are handed over. */
    Tensor keep(Tensor t) {
        if (t != null) {
            tensors.add(t);
        }
        return t;
    }

    /** The call succeeded: the caller owns the tensors now. */
    void handOver() {
        tensors.clear();
    }

    @Override
    public void close() {
        for (int i = tensors.size() - 1; i >= 0; i--) {
            tensors.get(i).close();
        }
        tensors.clear();
    }
}
