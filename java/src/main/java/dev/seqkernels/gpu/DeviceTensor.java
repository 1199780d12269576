package dev.seqkernels.gpu;

import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.ref.Cleaner;
import java.util.Arrays;

/**
 * A tensor in device memory: a device pointer, shape, element strides and dtype. Close it: a
 * tensor that owns its memory frees it on {@link #close()}; one that is garbage collected while
 * still open is freed by a Cleaner that logs the leak (a safety net, not the plan). Tensors made
 * by {@link #wrap} borrow a caller's pointer and never free it.
 */
public final class DeviceTensor implements AutoCloseable {
    private static final Cleaner CLEANER = Cleaner.create();
    private static final System.Logger LOG = System.getLogger(DeviceTensor.class.getName());

    private final Driver driver;
    private final long pointer;
    private final DType dtype;
    private final long[] shape;
    private final long[] strides;
    private final Owner owner;
    private final Cleaner.Cleanable cleanable;
    private volatile boolean closedView;

    /** The freeing action; knows whether close() or the Cleaner ran it. */
    private static final class Owner implements Runnable {
        final Driver driver;
        final long pointer;
        final String description;
        volatile boolean closedExplicitly;

        Owner(Driver driver, long pointer, String description) {
            this.driver = driver;
            this.pointer = pointer;
            this.description = description;
        }

        @Override
        public void run() {
            if (!closedExplicitly) {
                LOG.log(System.Logger.Level.WARNING, "device tensor " + description + " was never closed; freeing it");
            }
            driver.free(pointer);
        }
    }

    private DeviceTensor(Driver driver, long pointer, DType dtype, long[] shape, long[] strides, boolean owned) {
        this.driver = driver;
        this.pointer = pointer;
        this.dtype = dtype;
        this.shape = shape;
        this.strides = strides;
        if (owned) {
            this.owner = new Owner(driver, pointer, dtype + Arrays.toString(shape) + " on " + driver.name());
            this.cleanable = CLEANER.register(this, owner);
        } else {
            this.owner = null;
            this.cleanable = null;
        }
    }

    /** New device memory for a contiguous tensor (contents undefined: poisoned with NaN on the emulator). */
    public static DeviceTensor allocate(Driver driver, DType dtype, long... shape) {
        long bytes = Math.max(1, Tensor.numel(shape) * dtype.byteSize());
        return new DeviceTensor(driver, driver.malloc(bytes), dtype, shape.clone(), Tensor.contiguousStrides(shape), true);
    }

    /** A copy of a host tensor (any strides) on the device, contiguous. */
    public static DeviceTensor of(Driver driver, Tensor host) {
        DeviceTensor d = allocate(driver, host.dtype(), host.shape());
        d.copyFrom(host);
        return d;
    }

    /** A caller's device memory seen as a tensor, without copying; never freed by us. */
    public static DeviceTensor wrap(Driver driver, long pointer, DType dtype, long[] shape, long[] strides) {
        if (shape.length != strides.length) {
            throw new SeqkException.ShapeMismatch("strides " + Arrays.toString(strides) + " do not match shape " + Arrays.toString(shape));
        }
        return new DeviceTensor(driver, pointer, dtype, shape.clone(), strides.clone(), false);
    }

    public long pointer() {
        checkOpen();
        return pointer;
    }

    public DType dtype() {
        return dtype;
    }

    public long[] shape() {
        return shape.clone();
    }

    public long numel() {
        return Tensor.numel(shape);
    }

    public boolean isContiguous() {
        return Arrays.equals(strides, Tensor.contiguousStrides(shape));
    }

    public long byteSize() {
        return numel() * dtype.byteSize();
    }

    public boolean isClosed() {
        return owner != null ? owner.closedExplicitly : closedView;
    }

    /** Uploads a host tensor of the same dtype and shape (host strides are gathered on the host first). */
    public void copyFrom(Tensor host) {
        checkOpen();
        checkSame(host, "copyFrom");
        requireContiguous("copyFrom");
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment staging = contiguousHost(host, arena);
            driver.copyHostToDevice(pointer, staging, byteSize());
        }
    }

    /** Downloads into a host tensor of the same dtype and shape (any strides). */
    public void copyTo(Tensor host) {
        checkOpen();
        checkSame(host, "copyTo");
        requireContiguous("copyTo");
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment staging = arena.allocate(Math.max(1, byteSize()), 16);
            driver.copyDeviceToHost(staging, pointer, byteSize());
            Tensor view = Tensor.wrap(staging, dtype, shape);
            host.copyFrom(view.toDoubleArray());
        }
    }

    /** A new host tensor holding this tensor's values. */
    public Tensor toHost() {
        Tensor t = Tensor.allocate(dtype, shape);
        copyTo(t);
        return t;
    }

    private static MemorySegment contiguousHost(Tensor host, Arena arena) {
        if (host.isContiguous() && host.offset() == 0 && host.segment().isNative()) {
            return host.segment();
        }
        Tensor packed = Tensor.wrap(arena.allocate(Math.max(1, host.numel() * host.dtype().byteSize()), 16), host.dtype(),
                host.shape());
        packed.copyFrom(host.toDoubleArray());
        return packed.segment();
    }

    private void checkSame(Tensor host, String call) {
        if (host.dtype() != dtype || !Arrays.equals(host.shape(), shape)) {
            throw new SeqkException.ShapeMismatch("device tensor " + call + ": host tensor " + host.dtype()
                    + Arrays.toString(host.shape()) + " does not match device tensor " + dtype + Arrays.toString(shape));
        }
    }

    private void requireContiguous(String call) {
        if (!isContiguous()) {
            throw new SeqkException.Unsupported("device tensor " + call + ": strided device tensors are not copied yet; shape "
                    + Arrays.toString(shape) + " strides " + Arrays.toString(strides));
        }
    }

    private void checkOpen() {
        if (isClosed()) {
            throw new SeqkException.TensorClosed("device tensor " + dtype + Arrays.toString(shape) + " is closed");
        }
    }

    @Override
    public void close() {
        if (owner == null) {
            closedView = true;
        } else if (!owner.closedExplicitly) {
            owner.closedExplicitly = true;
            cleanable.clean();
        }
    }

    @Override
    public String toString() {
        return "DeviceTensor[" + dtype + " " + Arrays.toString(shape) + " on " + driver.name() + (isClosed() ? " closed" : "") + "]";
    }
}
