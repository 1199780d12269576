package dev.seqkernels.gpu;

import dev.seqkernels.SeqkException;

/**
 * A driver call failed: the message names the call, the binding's error, and for launches the
 * kernel and shape. {@link #status()} is the driver's CUresult when the driver refused the call,
 * 0 when the binding refused it before calling the driver.
 */
public final class DriverException extends SeqkException {
    /** CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: "too many resources requested for launch" (registers x threads, launch bounds). */
    public static final int LAUNCH_OUT_OF_RESOURCES = 701;
    /** CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE: the grid does not fit on the device at once (MPS, a smaller GPU). */
    public static final int COOPERATIVE_LAUNCH_TOO_LARGE = 720;

    private final int status;

    public DriverException(String message) {
        this(message, 0);
    }

    public DriverException(String message, int status) {
        super(message);
        this.status = status;
    }

    /** The CUresult the driver returned, or 0 when the binding refused the call itself. */
    public int status() {
        return status;
    }
}
