package dev.seqkernels.ops;

/**
 * Causal masking, and where the diagonal sits when the query and key lengths differ.
 * TOP_LEFT: query i may attend to keys j &lt;= i. BOTTOM_RIGHT: the last query aligns with the last
 * key, j &lt;= i + (Lk - Lq) (FlashAttention's convention, right for decoding with a KV cache). With
 * per-batch key/query lengths, Lk and Lq are that batch entry's valid lengths.
 */
public enum CausalAlignment {
    NONE, TOP_LEFT, BOTTOM_RIGHT;

    /** Whether query i may see key j given the valid lengths of its batch entry. */
    public boolean allows(int i, int j, int qLen, int kLen) {
        return switch (this) {
            case NONE -> true;
            case TOP_LEFT -> j <= i;
            case BOTTOM_RIGHT -> j <= i + (kLen - qLen);
        };
    }
}
