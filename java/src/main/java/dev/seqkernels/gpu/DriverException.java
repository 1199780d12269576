package dev.seqkernels.gpu;

import dev.seqkernels.SeqkException;

/** A driver call failed: the message names the call, the binding's error, and for launches the kernel and shape. */
public final class DriverException extends SeqkException {
    public DriverException(String message) {
        super(message);
    }
}
