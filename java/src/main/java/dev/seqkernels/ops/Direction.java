package dev.seqkernels.ops;

/** Which way(s) a recurrent layer runs over time. REVERSE alone is ONNX's "reverse". */
public enum Direction {
    FORWARD(1), REVERSE(1), BIDIRECTIONAL(2);

    private final int count;

    Direction(int count) {
        this.count = count;
    }

    public int count() {
        return count;
    }

    /** Whether direction slot {@code d} (0 or 1) runs from the last valid step to the first. */
    public boolean isReversed(int d) {
        return this == REVERSE || (this == BIDIRECTIONAL && d == 1);
    }
}
