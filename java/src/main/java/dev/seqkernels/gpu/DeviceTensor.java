package dev.seqkernels.gpu;

import dev.seqkernels.DType;
import dev.seqkernels.Layout;
import dev.seqkernels.SeqkException;
import dev.seqkernels.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.ref.Cleaner;
import java.lang.ref.Reference;
import java.util.Arrays;

/**
 * A tensor in device memory: a device pointer, an element offset, shape, element strides and
 * dtype. Close it: a tensor that owns its memory frees it on {@link #close()}; one that is garbage
 * collected while still open is freed by a Cleaner that logs the leak (a safety net, not the
 * plan). Tensors made by {@link #wrap} borrow a caller's pointer and never free it. Views
 * ({@link #permute}, {@link #select}, {@link #narrow}) share the memory and the lifetime of the
 * tensor they come from: closing any of them closes them all, and only the owner frees.
 */
public final class DeviceTensor implements AutoCloseable {
    private static final Cleaner CLEANER = Cleaner.create();
    private static final System.Logger LOG = System.getLogger(DeviceTensor.class.getName());

    private final Driver driver;
    private final long base;
    private final long offset;
    private final DType dtype;
    private final long[] shape;
    private final long[] strides;
    private final Lifetime lifetime;

    /**
     * Shared by a tensor and all its views. The Cleaner watches this object, so owned memory is
     * freed only when neither the tensor nor any view can be reached; its action sees only the
     * {@link Closed} flag, never the lifetime itself (or it would keep it reachable).
     */
    private static final class Lifetime {
        final Closed closed = new Closed();
        final Cleaner.Cleanable cleanable;

        /** pointer 0: not owned, nothing to free. */
        Lifetime(Driver driver, long pointer, String description) {
            this.cleanable = pointer == 0 ? null : CLEANER.register(this, new Free(driver, pointer, description, closed));
        }

        void close() {
            if (!closed.value) {
                closed.value = true;
                if (cleanable != null) {
                    cleanable.clean();
                }
            }
        }
    }

    private static final class Closed {
        volatile boolean value;
    }

    /** The Cleaner's action: frees the memory, and logs a leak when nobody closed it. */
    private record Free(Driver driver, long pointer, String description, Closed closed) implements Runnable {
        @Override
        public void run() {
            if (!closed.value) {
                LOG.log(System.Logger.Level.WARNING, "device tensor " + description + " was never closed; freeing it");
            }
            driver.free(pointer);
        }
    }

    private DeviceTensor(Driver driver, long base, long offset, DType dtype, long[] shape, long[] strides, Lifetime lifetime) {
        this.driver = driver;
        this.base = base;
        this.offset = offset;
        this.dtype = dtype;
        this.shape = shape;
        this.strides = strides;
        this.lifetime = lifetime;
    }

    /** New device memory for a contiguous tensor (contents undefined: poisoned with NaN on the emulator). */
    public static DeviceTensor allocate(Driver driver, DType dtype, long... shape) {
        long bytes = Math.max(1, Tensor.byteSize(dtype, shape));
        long pointer = driver.malloc(bytes);
        return new DeviceTensor(driver, pointer, 0, dtype, shape.clone(), Tensor.contiguousStrides(shape),
                new Lifetime(driver, pointer, dtype + Arrays.toString(shape) + " on " + driver.name()));
    }

    /**
     * New device memory for a tensor with the given (non-negative) element strides: the span they
     * reach is allocated, and the tensor is its view (contents undefined). Gradients of strided
     * inputs take their input's layout this way.
     */
    static DeviceTensor allocateStrided(Driver driver, DType dtype, long[] shape, long[] strides) {
        long span = spanOf(shape, strides);
        DeviceTensor whole = allocate(driver, dtype, span);
        return whole.view(new Layout(shape, strides, 0));
    }

    /**
     * Whether each index of the shape has an element of its own (no zero stride over an extent
     * above 1, no overlap): the dimensions sorted by stride must each step past the ones below.
     */
    static boolean oneToOne(long[] shape, long[] strides) {
        Integer[] order = new Integer[shape.length];
        for (int i = 0; i < order.length; i++) {
            order[i] = i;
        }
        Arrays.sort(order, (a, b) -> Long.compare(strides[a], strides[b]));
        long reach = 1;  // elements the dimensions so far cover
        for (int i : order) {
            if (shape[i] <= 1) {
                continue;
            }
            if (strides[i] < reach) {
                return false;
            }
            reach = Math.multiplyExact(strides[i], shape[i]);
        }
        return true;
    }

    /** Elements from the first to the last a layout reaches, inclusive (0 for an empty shape). */
    static long spanOf(long[] shape, long[] strides) {
        long last = 0;
        for (int i = 0; i < shape.length; i++) {
            if (shape[i] == 0) {
                return 0;
            }
            if (strides[i] < 0) {
                throw new SeqkException.Unsupported("negative strides " + Arrays.toString(strides) + " are not supported");
            }
            last = Math.addExact(last, Math.multiplyExact(shape[i] - 1, strides[i]));
        }
        return last + 1;
    }

    /** A copy of a host tensor (any strides) on the device, contiguous. */
    public static DeviceTensor of(Driver driver, Tensor host) {
        DeviceTensor d = allocate(driver, host.dtype(), host.shape());
        try {
            d.copyFrom(host);
        } catch (RuntimeException e) {
            d.close();
            throw e;
        }
        return d;
    }

    /**
     * A caller's device memory seen as a tensor (strides in elements, non-negative), without
     * copying; never freed by us. Extents and strides are checked: negative ones, or a layout whose
     * span overflows a long, are a ShapeMismatch.
     */
    public static DeviceTensor wrap(Driver driver, long pointer, DType dtype, long[] shape, long[] strides) {
        if (driver == null || dtype == null || shape == null || strides == null) {
            throw new SeqkException.ShapeMismatch("DeviceTensor.wrap: driver, dtype, shape and strides are required");
        }
        if (shape.length != strides.length) {
            throw new SeqkException.ShapeMismatch("strides " + Arrays.toString(strides) + " do not match shape " + Arrays.toString(shape));
        }
        for (int i = 0; i < shape.length; i++) {
            if (shape[i] < 0 || strides[i] < 0) {
                throw new SeqkException.ShapeMismatch("DeviceTensor.wrap: shape " + Arrays.toString(shape) + " and strides "
                        + Arrays.toString(strides) + " must be non-negative");
            }
        }
        try {
            Math.multiplyExact(spanOf(shape, strides), (long) dtype.byteSize());
        } catch (ArithmeticException e) {
            throw new SeqkException.ShapeMismatch("DeviceTensor.wrap: shape " + Arrays.toString(shape) + " with strides "
                    + Arrays.toString(strides) + " reaches beyond a long's bytes");
        }
        return new DeviceTensor(driver, pointer, 0, dtype, shape.clone(), strides.clone(), new Lifetime(driver, 0, ""));
    }

    private DeviceTensor view(Layout l) {
        checkOpen();
        return new DeviceTensor(driver, base, l.offset(), dtype, l.shape(), l.strides(), lifetime);
    }

    /** The device address of the first element. */
    public long pointer() {
        checkOpen();
        return base + offset * dtype.byteSize();
    }

    public Driver driver() {
        return driver;
    }

    public DType dtype() {
        return dtype;
    }

    public long[] shape() {
        return shape.clone();
    }

    public long[] strides() {
        return strides.clone();
    }

    public long numel() {
        return Tensor.numel(shape);
    }

    public boolean isContiguous() {
        return Arrays.equals(strides, Tensor.contiguousStrides(shape));
    }

    public long byteSize() {
        return Tensor.byteSize(dtype, shape);
    }

    public boolean isClosed() {
        return lifetime.closed.value;
    }

    /** A view with dimensions reordered: new dimension i is old dimension {@code order[i]}. */
    public DeviceTensor permute(int... order) {
        return view(layout().permute(order));
    }

    /** A view of index {@code index} along {@code dim}, that dimension removed. */
    public DeviceTensor select(int dim, long index) {
        return view(layout().select(dim, index));
    }

    /** A view of {@code length} indices along {@code dim} starting at {@code start}. */
    public DeviceTensor narrow(int dim, long start, long length) {
        return view(layout().narrow(dim, start, length));
    }

    public Layout layout() {
        return new Layout(shape, strides, offset);
    }

    /** Uploads a host tensor of the same dtype and shape (host strides are gathered on the host first). */
    public void copyFrom(Tensor host) {
        checkOpen();
        checkSame(host, "copyFrom");
        requireContiguous("copyFrom");
        // The hold keeps another thread from closing host while a binding that passes raw
        // addresses (jcuda) copies from it; the JDK keeps its arena alive only for its own downcalls.
        try (Arena arena = Arena.ofConfined(); Tensor.Hold hold = host.hold()) {
            driver.copyHostToDevice(pointer(), contiguousHost(host, arena), byteSize());
        } finally {
            Reference.reachabilityFence(host);  // the segment alone does not keep the tensor from its Cleaner
        }
    }

    /** Downloads into a host tensor of the same dtype and shape (any strides). */
    public void copyTo(Tensor host) {
        checkOpen();
        checkSame(host, "copyTo");
        requireContiguous("copyTo");
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment staging = arena.allocate(Math.max(1, byteSize()), 16);
            driver.copyDeviceToHost(staging, pointer(), byteSize());
            host.copyFrom(Tensor.wrap(staging, dtype, shape));
        } finally {
            Reference.reachabilityFence(host);
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
        packed.copyFrom(host);
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
            throw new SeqkException.Unsupported("device tensor " + call + ": strided device views are not copied to or from "
                    + "the host (shape " + Arrays.toString(shape) + " strides " + Arrays.toString(strides)
                    + "); kernels take them through pointer() and strides()");
        }
    }

    private void checkOpen() {
        if (lifetime.closed.value) {
            throw new SeqkException.TensorClosed("device tensor " + dtype + Arrays.toString(shape) + " is closed");
        }
    }

    /** Closes this tensor and every view of the same memory; frees it if owned. Idempotent. */
    @Override
    public void close() {
        lifetime.close();
    }

    @Override
    public String toString() {
        return "DeviceTensor[" + dtype + " " + Arrays.toString(shape) + " on " + driver.name() + (isClosed() ? " closed" : "") + "]";
    }
}
