package dev.seqkernels.gpu;

import dev.seqkernels.DType;
import dev.seqkernels.Tensor;

import java.util.ArrayList;
import java.util.List;

/**
 * Device tensors that live and die together (one op call's buffers); closing the scope closes them all,
 * the host tensors a stream still had to read ({@link #uploadOnStream}), and the streams, events
 * and graphs its work used ({@link #release}). A whole-sequence graph's capture goes through a
 * scope that allocates nothing and hands back a recorded scope's tensors instead ({@link #replaying}).
 */
public final class DeviceScope implements AutoCloseable {
    private final Driver driver;
    private final List<DeviceTensor> tensors = new ArrayList<>();
    private final List<Tensor> hosts = new ArrayList<>();
    private final List<AutoCloseable> releases = new ArrayList<>();
    private final List<Long> lentStreams = new ArrayList<>();
    /** The tensors a replaying scope hands out again, in allocation order; null for an owning scope. */
    private final List<DeviceTensor> replayed;
    private int nextReplayed;
    private boolean wholeGraph;

    public DeviceScope(Driver driver) {
        this(driver, null);
    }

    private DeviceScope(Driver driver, List<DeviceTensor> replayed) {
        this.driver = driver;
        this.replayed = replayed;
    }

    /**
     * The scope of a whole-sequence graph's first run ({@link DeviceRecurrentGraph}): its work is issued
     * as it will be captured, the per-step loop one step after another on the call's stream instead
     * of a nested step graph, so {@link #replaying} it under capture issues the same work.
     */
    static DeviceScope forWholeGraph(Driver driver) {
        DeviceScope s = new DeviceScope(driver);
        s.wholeGraph = true;
        return s;
    }

    /**
     * A scope that allocates nothing: each {@link #allocate} hands back {@code recorded}'s next tensor,
     * which must have the same dtype and shape (the run being captured allocates as the recorded run
     * did, so a graph captured through it reads and writes the recorded run's memory, and no
     * allocation, which stream capture forbids, happens during the capture). Closing it frees
     * nothing: {@code recorded} owns the memory. Uploads, synchronous memsets and lent streams are
     * refused (a captured graph could not replay them).
     */
    static DeviceScope replaying(DeviceScope recorded) {
        DeviceScope s = new DeviceScope(recorded.driver, List.copyOf(recorded.tensors));
        s.wholeGraph = true;
        return s;
    }

    /** Whether the per-step loop is issued step by step on the call's stream (a whole-sequence graph's run and capture). */
    boolean wholeGraph() {
        return wholeGraph;
    }

    /** Whether this scope hands out a recorded run's tensors ({@link #replaying}). */
    boolean replaying() {
        return replayed != null;
    }

    /** Whether a replaying scope handed out every tensor the recorded run allocated. */
    boolean replayedAll() {
        return replayed != null && nextReplayed == replayed.size();
    }

    public Driver driver() {
        return driver;
    }

    public DeviceTensor allocate(DType dtype, long... shape) {
        if (replayed != null) {
            DeviceTensor t = nextReplayed < replayed.size() ? replayed.get(nextReplayed) : null;
            if (t == null || t.dtype() != dtype || !java.util.Arrays.equals(t.shape(), shape)) {
                throw new IllegalStateException("the captured run allocated " + dtype + java.util.Arrays.toString(shape) + " as its allocation "
                        + nextReplayed + " where the recorded run had " + (t == null ? "none" : t.dtype() + java.util.Arrays.toString(t.shape())));
            }
            nextReplayed++;
            return t;
        }
        return keep(DeviceTensor.allocate(driver, dtype, shape));
    }

    /** Device memory set to zero bits (0.0 in every floating dtype). */
    public DeviceTensor zeros(DType dtype, long... shape) {
        refuseWhenReplaying("zeros");
        DeviceTensor t = allocate(dtype, shape);
        driver.memset(t.pointer(), 0, Math.max(1, t.byteSize()));
        return t;
    }

    /** A copy of {@code host} on the device; the host tensor stays the caller's. */
    public DeviceTensor upload(Tensor host) {
        refuseWhenReplaying("upload");
        return keep(DeviceTensor.of(driver, host));
    }

    /** A copy of {@code host} converted to {@code dtype} on the device; the host conversion is freed at once. */
    public DeviceTensor upload(Tensor host, DType dtype) {
        if (host.dtype() == dtype) {
            return upload(host);
        }
        try (Tensor converted = host.to(dtype)) {
            return upload(converted);
        }
    }

    /** Uploads a host tensor made only for this upload, and closes it. */
    public DeviceTensor uploadAndClose(Tensor temporary) {
        try (temporary) {
            return upload(temporary);
        }
    }

    /**
     * A copy of {@code temporary} (a contiguous host tensor made for this upload) on the device, copied
     * in order on {@code stream}: the call returns before the stream reads the host memory, so the
     * scope keeps the host tensor and closes it with the device tensors.
     */
    DeviceTensor uploadOnStream(Tensor temporary, long stream) {
        refuseWhenReplaying("uploadOnStream");
        hosts.add(temporary);
        if (!temporary.isContiguous() || temporary.offset() != 0) {
            throw new IllegalStateException("uploadOnStream takes a contiguous temporary of its own, not " + temporary);
        }
        DeviceTensor t = allocate(temporary.dtype(), temporary.shape());
        driver.copyHostToDeviceAsync(t.pointer(), temporary.segment(), t.byteSize(), stream);
        return t;
    }

    /**
     * Makes a driver resource the scope's (a stream, event or graph its work used): released when the
     * scope closes, before its memory is freed.
     */
    void release(AutoCloseable resource) {
        refuseWhenReplaying("release");
        releases.add(resource);
    }

    /**
     * A stream the scope's work runs on besides the caller's (a step stream): {@code giveBack} runs
     * when the scope closes, and a failed call waits for it too before freeing ({@link #closeAfterFailure}).
     */
    void lend(long stream, AutoCloseable giveBack) {
        refuseWhenReplaying("lend");
        lentStreams.add(stream);
        releases.add(giveBack);
    }

    private void refuseWhenReplaying(String call) {
        if (replayed != null) {
            throw new IllegalStateException("DeviceScope." + call + " while capturing a whole-sequence graph: the graph could not replay it");
        }
    }

    /** Makes {@code t} the scope's: closed with it. */
    DeviceTensor keep(DeviceTensor t) {
        refuseWhenReplaying("keep");
        tensors.add(t);
        return t;
    }

    /**
     * Closes the scope of a call that failed after it may have queued work: the stream, and every
     * stream lent to the scope, are waited for first (they may still read the scope's memory);
     * whatever the waits and the close throw is attached to the call's failure, never thrown instead. The wait's own failure (a
     * broken context) is attached to the call's.
     */
    void closeAfterFailure(long stream, Throwable failure) {
        List<Long> waits = new ArrayList<>(lentStreams);
        waits.addFirst(stream);
        for (long w : waits) {
            try {
                driver.synchronize(w);
            } catch (RuntimeException waitFailed) {
                failure.addSuppressed(waitFailed);
            }
        }
        try {
            close();
        } catch (RuntimeException closeFailed) {  // a broken context fails the frees too: the call's error stays the one thrown
            failure.addSuppressed(closeFailed);
        }
    }

    /** Closes everything, even when one close fails (the first failure is thrown, later ones attached to it). */
    @Override
    public void close() {
        RuntimeException failure = null;
        for (int i = releases.size() - 1; i >= 0; i--) {
            failure = closeOne(releases.get(i), failure);
        }
        releases.clear();
        lentStreams.clear();
        for (int i = tensors.size() - 1; i >= 0; i--) {
            failure = closeOne(tensors.get(i), failure);
        }
        tensors.clear();
        for (Tensor t : hosts) {
            failure = closeOne(t, failure);
        }
        hosts.clear();
        if (failure != null) {
            throw failure;
        }
    }

    private static RuntimeException closeOne(AutoCloseable c, RuntimeException failure) {
        try {
            c.close();
        } catch (Exception e) {
            RuntimeException r = e instanceof RuntimeException re ? re : new IllegalStateException(e);
            if (failure == null) {
                return r;
            }
            failure.addSuppressed(r);
        }
        return failure;
    }
}
