package dev.seqkernels.ops;

import dev.seqkernels.SeqkException;

/**
 * Inference mode, shared by the ops: a forward's saved state (what backward needs; device buffers
 * on a GPU backend) released as soon as the outputs exist, and a backward of such a result refused.
 */
final class SavedState {
    private SavedState() {
    }

    /** Releases what a backend saved for backward; returns null, the result's saved state from now on. */
    static Object release(Object saved) {
        if (saved instanceof AutoCloseable resources) {
            try {
                resources.close();
            } catch (Exception e) {
                throw new IllegalStateException("could not release a forward's saved state", e);
            }
        }
        return null;
    }

    static SeqkException.ShapeMismatch missing(String op) {
        return new SeqkException.ShapeMismatch(op + ": argument 'forward' holds no saved state: it ran in inference mode, or is"
                + " not a forward's result; differentiate the result of a forward without inference");
    }
}
