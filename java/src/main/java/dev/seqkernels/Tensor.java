package dev.seqkernels;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.ref.Cleaner;
import java.util.Arrays;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;

/**
 * A host tensor: a {@link MemorySegment} seen through a shape, element strides, an element
 * offset and a {@link DType}.
 *
 * <p>Tensors made by {@link #allocate} own their memory: {@link #close()} frees it at once, and one
 * that becomes unreachable unclosed is freed by a Cleaner (a safety net: close tensors in loops).
 * Tensors made by {@link #wrap} borrow a caller's segment (zero copy) and never free it; they are
 * closed when the segment's arena is. Views ({@link #permute}, {@link #select}, {@link
 * #unsqueeze}) share the memory and the lifetime of the tensor they come from: closing any of them
 * closes them all and frees owned memory. Any access after close throws {@link
 * SeqkException.TensorClosed}. Instances are not thread-safe for writes.
 *
 * <p>Every size, stride and offset product is checked: one that overflows a {@code long} is a
 * {@link SeqkException.ShapeMismatch} naming the shape, never a wrapped value.
 */
public final class Tensor implements AutoCloseable {
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    private static final ValueLayout.OfDouble F64 = ValueLayout.JAVA_DOUBLE_UNALIGNED;
    private static final ValueLayout.OfShort I16 = ValueLayout.JAVA_SHORT_UNALIGNED;
    private static final ValueLayout.OfLong I64 = ValueLayout.JAVA_LONG_UNALIGNED;

    private final MemorySegment segment;
    private final DType dtype;
    private final long[] shape;
    private final long[] strides;
    private final long offset;
    private final Lifetime lifetime;

    private static final Cleaner CLEANER = Cleaner.create();
    private static final AtomicLong OPEN_BYTES = new AtomicLong();
    private static final AtomicLong CLEANED_BYTES = new AtomicLong();
    private static final AtomicLong LEAKS = new AtomicLong();
    private static final System.Logger LOG = System.getLogger(Tensor.class.getName());

    /**
     * Shared by a tensor and its views. The Cleaner watches this object and its action holds only
     * the arena, so owned memory is freed when neither the tensor nor a view can be reached.
     */
    private static final class Lifetime {
        final AtomicBoolean closed = new AtomicBoolean();
        final Free free;
        final Cleaner.Cleanable cleanable;
        private int holds;  // guarded by this

        /** arena null: borrowed memory, nothing to free. */
        Lifetime(Arena arena, long bytes, String description) {
            this.free = arena == null ? null : new Free(arena, bytes, description);
            this.cleanable = free == null ? null : CLEANER.register(this, free);
        }

        /**
         * The arena is closed first, so a tensor still in use by a native call on another thread
         * (the JDK refuses to close an arena a downcall holds) stays open and the caller is told.
         */
        synchronized void close(Tensor t) {
            if (closed.get()) {
                return;
            }
            if (holds > 0) {
                throw inUse(t, null);
            }
            if (free != null) {
                try {
                    free.arena.close();
                } catch (IllegalStateException e) {
                    throw inUse(t, e);
                }
                OPEN_BYTES.addAndGet(-free.bytes);
            }
            closed.set(true);
            if (cleanable != null) {
                cleanable.clean();
            }
        }

        synchronized void hold(Tensor t) {
            t.checkOpen();
            holds++;
        }

        synchronized void release() {
            holds--;
        }

        private static SeqkException inUse(Tensor t, Throwable cause) {
            return new SeqkException("tensor " + t.dtype + Arrays.toString(t.shape)
                    + " cannot be closed while another thread uses it in a native call", cause);
        }
    }

    /** An open {@link #hold()}: closing it lets the tensor be closed again. Idempotent. */
    public static final class Hold implements AutoCloseable {
        private final Lifetime lifetime;
        private final AtomicBoolean released = new AtomicBoolean();

        private Hold(Lifetime lifetime) {
            this.lifetime = lifetime;
        }

        @Override
        public void close() {
            if (released.compareAndSet(false, true)) {
                lifetime.release();
            }
        }
    }

    /** How many unclosed tensors the Cleaner has freed (the leaks it logs a line for at 1, 10, 100, ...). For tests. */
    static long leaks() {
        return LEAKS.get();
    }

    /**
     * The Cleaner's action for a tensor nobody closed (after close() the arena is no longer alive).
     * Its bytes stay counted in {@link #openBytes()}: the garbage collector rescued a leak.
     */
    private record Free(Arena arena, long bytes, String description) implements Runnable {
        @Override
        public void run() {
            if (arena.scope().isAlive()) {
                arena.close();
                CLEANED_BYTES.addAndGet(bytes);
                long leaks = LEAKS.incrementAndGet();
                // The first leak, then the 10th, 100th, ...: a loop that never closes is one line per decade.
                if (Long.toString(leaks).matches("10*")) {
                    LOG.log(System.Logger.Level.WARNING, "host tensor " + description + " was never closed; the Cleaner freed it ("
                            + leaks + " such tensor" + (leaks == 1 ? "" : "s") + " so far: close tensors and results, e.g. with try-with-resources)");
                }
            }
        }
    }

    private Tensor(MemorySegment segment, DType dtype, long[] shape, long[] strides, long offset, Lifetime lifetime) {
        this.segment = segment;
        this.dtype = dtype;
        this.shape = shape;
        this.strides = strides;
        this.offset = offset;
        this.lifetime = lifetime;
    }

    /** A new zero-filled contiguous tensor that owns its memory. */
    public static Tensor allocate(DType dtype, long... shape) {
        checkShape(shape);
        long bytes = Math.max(1, byteSize(dtype, shape));
        Arena arena = Arena.ofShared();
        MemorySegment seg;
        try {
            seg = arena.allocate(bytes, 16);
        } catch (OutOfMemoryError e) {
            arena.close();
            throw new SeqkException("cannot allocate " + bytes + " bytes of host memory for a " + dtype + " tensor of shape "
                    + Arrays.toString(shape), e);
        }
        OPEN_BYTES.addAndGet(bytes);
        return new Tensor(seg, dtype, shape.clone(), contiguousStrides(shape), 0, new Lifetime(arena, bytes, dtype + Arrays.toString(shape)));
    }

    /**
     * Host bytes of tensors from {@link #allocate} (and {@link #of}, {@link #to}) that were never
     * closed, whether or not the Cleaner has since freed them. A diagnostic for leak tests: it does
     * not depend on the garbage collector, and an op that closes its temporaries leaves it unchanged.
     */
    public static long openBytes() {
        return OPEN_BYTES.get();
    }

    /** Host bytes the Cleaner freed because their tensors became unreachable unclosed. */
    public static long cleanedBytes() {
        return CLEANED_BYTES.get();
    }

    /** A contiguous (row-major) view of a caller's memory, without copying. */
    public static Tensor wrap(MemorySegment segment, DType dtype, long... shape) {
        return wrap(segment, dtype, shape, contiguousStrides(shape), 0);
    }

    /**
     * A strided view of a caller's memory, without copying. Strides and offset are in elements.
     * Every addressable element must lie inside the segment.
     */
    public static Tensor wrap(MemorySegment segment, DType dtype, long[] shape, long[] strides, long offset) {
        checkShape(shape);
        if (segment == null || dtype == null || strides == null) {
            throw new SeqkException.ShapeMismatch("Tensor.wrap: argument '" + (segment == null ? "segment" : dtype == null ? "dtype" : "strides")
                    + "' is required");
        }
        if (strides.length != shape.length) {
            throw new SeqkException.ShapeMismatch("strides " + Arrays.toString(strides)
                    + " must have one entry per dimension of shape " + Arrays.toString(shape));
        }
        long lo = offset;
        long hi = offset;
        boolean fits;
        try {
            for (int i = 0; i < shape.length; i++) {
                if (shape[i] == 0) {
                    hi = lo - 1;
                    break;
                }
                long span = Math.multiplyExact(shape[i] - 1, strides[i]);
                if (span < 0) {
                    lo = Math.addExact(lo, span);
                } else {
                    hi = Math.addExact(hi, span);
                }
            }
            fits = hi < lo || (lo >= 0 && Math.multiplyExact(Math.addExact(hi, 1), (long) dtype.byteSize()) <= segment.byteSize());
        } catch (ArithmeticException e) {
            throw new SeqkException.ShapeMismatch("shape " + Arrays.toString(shape) + " with strides " + Arrays.toString(strides)
                    + " and offset " + offset + " addresses elements beyond the range of a long");
        }
        if (!fits) {
            throw new SeqkException.ShapeMismatch("shape " + Arrays.toString(shape) + " with strides "
                    + Arrays.toString(strides) + " and offset " + offset + " reaches elements " + lo + ".." + hi
                    + " but the segment holds " + segment.byteSize() / dtype.byteSize() + " " + dtype + " elements");
        }
        return new Tensor(segment, dtype, shape.clone(), strides.clone(), offset, new Lifetime(null, 0, null));
    }

    /** A new tensor of {@code dtype} holding {@code values} (row-major), each rounded to the dtype. */
    public static Tensor of(DType dtype, double[] values, long... shape) {
        if (values == null) {
            throw new SeqkException.ShapeMismatch("Tensor.of: argument 'values' is required");
        }
        if (values.length != numel(shape)) {
            throw new SeqkException.ShapeMismatch(values.length + " values do not fill shape " + Arrays.toString(shape));
        }
        Tensor t = allocate(dtype, shape);
        for (int i = 0; i < values.length; i++) {
            t.setFlat(i, values[i]);
        }
        return t;
    }

    /** A new F32 tensor holding {@code values} (row-major), copied in bulk. */
    public static Tensor of(float[] values, long... shape) {
        if (values == null) {
            throw new SeqkException.ShapeMismatch("Tensor.of: argument 'values' is required");
        }
        if (values.length != numel(shape)) {
            throw new SeqkException.ShapeMismatch(values.length + " values do not fill shape " + Arrays.toString(shape));
        }
        Tensor t = allocate(DType.F32, shape);
        t.copyFrom(values);
        return t;
    }

    public DType dtype() {
        return dtype;
    }

    public long[] shape() {
        return shape.clone();
    }

    public long size(int dim) {
        return shape[dim];
    }

    public long[] strides() {
        return strides.clone();
    }

    public long offset() {
        return offset;
    }

    public int rank() {
        return shape.length;
    }

    public long numel() {
        return numel(shape);
    }

    /**
     * The underlying memory (for zero-copy hand-off); valid only while the tensor is open. Keep
     * the tensor itself reachable while the segment is used: the Cleaner frees an unreachable one.
     */
    public MemorySegment segment() {
        checkOpen();
        return segment;
    }

    /**
     * Keeps this tensor and its views from being closed until the hold is closed: {@link #close()}
     * on any thread is then refused ("cannot be closed while another thread uses it in a native
     * call"), as during the JDK's own downcalls. For handing {@link #segment()}'s address to native
     * code the JDK does not see (JNI, a raw pointer), which a concurrent close would leave reading
     * freed memory. A wrapped segment's own arena is the caller's to keep open meanwhile.
     */
    public Hold hold() {
        lifetime.hold(this);
        return new Hold(lifetime);
    }

    /** Closed by {@link #close()} (of this tensor or a view), or, for a wrapped segment, by its arena. */
    public boolean isClosed() {
        return lifetime.closed.get() || !segment.scope().isAlive();
    }

    public boolean isContiguous() {
        return Arrays.equals(strides, contiguousStrides(shape));
    }

    /** Element at a multi-index, widened to double. */
    public double get(long... index) {
        return read(elementOffset(index));
    }

    public void set(double value, long... index) {
        write(elementOffset(index), value);
    }

    /** Element at a row-major flat position (over the logical shape, whatever the strides). */
    public double getFlat(long flat) {
        return read(flatToOffset(checkedFlat(flat)));
    }

    public void setFlat(long flat, double value) {
        write(flatToOffset(checkedFlat(flat)), value);
    }

    /** All elements in row-major order of the logical shape, widened to double. */
    public double[] toDoubleArray() {
        double[] out = new double[arrayLength()];
        for (int i = 0; i < out.length; i++) {
            out[i] = read(flatToOffset(i));
        }
        return out;
    }

    /** The element count as a Java array length (checked open and small enough). */
    private int arrayLength() {
        checkOpen();
        long n = numel();
        if (n > Integer.MAX_VALUE - 8) {
            throw new SeqkException.ShapeMismatch("tensor of " + n + " elements is too large for a Java array");
        }
        return (int) n;
    }

    /** Writes {@code values} (row-major over the logical shape), rounding to this dtype. */
    public void copyFrom(double[] values) {
        checkOpen();
        if (values.length != numel()) {
            throw new SeqkException.ShapeMismatch(values.length + " values do not fill shape " + Arrays.toString(shape));
        }
        for (int i = 0; i < values.length; i++) {
            write(flatToOffset(i), values[i]);
        }
    }

    /** All elements in row-major order as floats (an F32 tensor's exactly; contiguous F32: one bulk copy). */
    public float[] toFloatArray() {
        float[] out = new float[arrayLength()];
        if (dtype == DType.F32 && isContiguous()) {
            try {
                MemorySegment.copy(segment, F32, offset * 4, out, 0, out.length);
            } catch (IllegalStateException | WrongThreadException e) {
                throw inaccessible(e);
            }
            return out;
        }
        for (int i = 0; i < out.length; i++) {
            out[i] = (float) read(flatToOffset(i));
        }
        return out;
    }

    /** Writes {@code values} (row-major), rounding to this dtype (contiguous F32: one bulk copy). */
    public void copyFrom(float[] values) {
        checkOpen();
        if (values == null || values.length != numel()) {
            throw new SeqkException.ShapeMismatch((values == null ? "no" : values.length) + " values do not fill shape "
                    + Arrays.toString(shape));
        }
        if (dtype == DType.F32 && isContiguous()) {
            checkWritable();
            try {
                MemorySegment.copy(values, 0, segment, F32, offset * 4, values.length);
            } catch (IllegalStateException | WrongThreadException e) {
                throw inaccessible(e);
            }
            return;
        }
        for (int i = 0; i < values.length; i++) {
            write(flatToOffset(i), values[i]);
        }
    }

    /** The raw 16-bit patterns of an F16 or BF16 tensor, row-major (contiguous: one bulk copy). */
    public short[] toShortArray() {
        require16Bit("toShortArray");
        short[] out = new short[arrayLength()];
        try {
            if (isContiguous()) {
                MemorySegment.copy(segment, I16, offset * 2, out, 0, out.length);
            } else {
                for (int i = 0; i < out.length; i++) {
                    out[i] = segment.get(I16, flatToOffset(i) * 2);
                }
            }
        } catch (IllegalStateException | WrongThreadException e) {
            throw inaccessible(e);
        }
        return out;
    }

    /** Writes raw 16-bit patterns (row-major) into an F16 or BF16 tensor, as they are (contiguous: one bulk copy). */
    public void copyFrom(short[] bits) {
        require16Bit("copyFrom(short[])");
        if (bits == null || bits.length != numel()) {
            throw new SeqkException.ShapeMismatch((bits == null ? "no" : bits.length) + " values do not fill shape "
                    + Arrays.toString(shape));
        }
        checkWritable();
        try {
            if (isContiguous()) {
                MemorySegment.copy(bits, 0, segment, I16, offset * 2, bits.length);
            } else {
                for (int i = 0; i < bits.length; i++) {
                    segment.set(I16, flatToOffset(i) * 2, bits[i]);
                }
            }
        } catch (IllegalStateException | WrongThreadException e) {
            throw inaccessible(e);
        }
    }

    private void require16Bit(String call) {
        checkOpen();
        if (dtype != DType.F16 && dtype != DType.BF16) {
            throw new SeqkException.DTypeMismatch(call + ": raw 16-bit patterns are for F16 and BF16 tensors, not " + dtype);
        }
    }

    /**
     * This tensor's values in row-major order without gaps: a view of the same memory when it
     * already is contiguous (closing it closes this tensor, as any view), else a new contiguous
     * copy that the caller owns.
     */
    public Tensor contiguous() {
        return isContiguous() ? view(layout()) : to(dtype);
    }

    /**
     * Copies {@code src}'s values (same shape; any dtype and strides) into this tensor, rounding
     * each once to this dtype. Same dtype and both contiguous: one bulk copy, no per-element work.
     */
    public void copyFrom(Tensor src) {
        checkOpen();
        if (src == null) {
            throw new SeqkException.ShapeMismatch("copyFrom: argument 'src' is required");
        }
        src.checkOpen();
        if (!Arrays.equals(shape, src.shape)) {
            throw new SeqkException.ShapeMismatch("copyFrom: source shape " + Arrays.toString(src.shape)
                    + " differs from this tensor's " + Arrays.toString(shape));
        }
        long n = numel();
        if (src.dtype == dtype && isContiguous() && src.isContiguous()) {
            checkWritable();
            long bytes = dtype.byteSize();
            try {
                MemorySegment.copy(src.segment, src.offset * bytes, segment, offset * bytes, n * bytes);
            } catch (IllegalStateException | WrongThreadException e) {
                throw inaccessible(e);
            }
            return;
        }
        if (isContiguous() && src.isContiguous() && dtype.isFloatingPoint() && src.dtype.isFloatingPoint()) {
            checkWritable();
            try {
                convertContiguous(src, this, n);
            } catch (IllegalStateException | WrongThreadException e) {
                throw inaccessible(e);
            }
            return;
        }
        for (long i = 0; i < n; i++) {
            write(flatToOffset(i), src.read(src.flatToOffset(i)));
        }
    }

    /**
     * A NaN with its quiet bit set (F16 and BF16 patterns can hold signalling ones); other values as
     * they are. Both conversion paths apply it to 16-bit values, so their NaN bits agree whether or
     * not the JIT folds a float's round trip through double (which would otherwise decide).
     */
    private static float quiet(float f) {
        return f == f ? f : Float.intBitsToFloat(Float.floatToRawIntBits(f) | 0x00400000);
    }

    /** Elements per chunk of a bulk conversion: small enough for the caches, large enough to amortize the copies. */
    private static final int CHUNK = 8192;

    /**
     * n elements between contiguous floating-point tensors of different dtypes, a chunk at a time
     * through Java arrays (bulk segment copies, a tight loop per chunk), rounding each element once
     * as {@link #writeElement} does: F32, F16 and BF16 values go through float exactly; F64 values
     * round to F32 directly, and to F16/BF16 through float rounded to odd.
     */
    private static void convertContiguous(Tensor src, Tensor dst, long n) {
        long srcBase = src.offset * src.dtype.byteSize();
        long dstBase = dst.offset * dst.dtype.byteSize();
        int chunk = (int) Math.min(CHUNK, n);
        double[] wide = src.dtype == DType.F64 ? new double[chunk] : null;
        double[] out64 = dst.dtype == DType.F64 ? new double[chunk] : null;
        float[] values = new float[chunk];
        short[] bits = new short[chunk];
        for (long done = 0; done < n; done += chunk) {
            int m = (int) Math.min(chunk, n - done);
            if (wide != null) {
                MemorySegment.copy(src.segment, F64, srcBase + done * 8, wide, 0, m);
                switch (dst.dtype) {
                    case F32 -> {
                        for (int i = 0; i < m; i++) {
                            values[i] = (float) wide[i];
                        }
                        MemorySegment.copy(values, 0, dst.segment, F32, dstBase + done * 4, m);
                    }
                    case F16, BF16 -> {
                        boolean half = dst.dtype == DType.F16;
                        for (int i = 0; i < m; i++) {
                            bits[i] = half ? Rounding.doubleToHalf(wide[i]) : Rounding.doubleToBf16(wide[i]);
                        }
                        MemorySegment.copy(bits, 0, dst.segment, I16, dstBase + done * 2, m);
                    }
                    default -> throw new IllegalStateException("F64 to " + dst.dtype + " is a plain copy");
                }
                continue;
            }
            switch (src.dtype) {
                case F32 -> MemorySegment.copy(src.segment, F32, srcBase + done * 4, values, 0, m);
                case F16 -> {
                    MemorySegment.copy(src.segment, I16, srcBase + done * 2, bits, 0, m);
                    for (int i = 0; i < m; i++) {
                        values[i] = quiet(Float.float16ToFloat(bits[i]));
                    }
                }
                case BF16 -> {
                    MemorySegment.copy(src.segment, I16, srcBase + done * 2, bits, 0, m);
                    for (int i = 0; i < m; i++) {
                        values[i] = quiet(Float.intBitsToFloat((bits[i] & 0xffff) << 16));
                    }
                }
                default -> throw new IllegalStateException("not a floating-point dtype: " + src.dtype);
            }
            switch (dst.dtype) {
                case F64 -> {
                    for (int i = 0; i < m; i++) {
                        out64[i] = values[i];
                    }
                    MemorySegment.copy(out64, 0, dst.segment, F64, dstBase + done * 8, m);
                }
                case F32 -> MemorySegment.copy(values, 0, dst.segment, F32, dstBase + done * 4, m);
                case F16 -> {
                    for (int i = 0; i < m; i++) {
                        bits[i] = Float.floatToFloat16(values[i]);
                    }
                    MemorySegment.copy(bits, 0, dst.segment, I16, dstBase + done * 2, m);
                }
                case BF16 -> {
                    for (int i = 0; i < m; i++) {
                        bits[i] = Rounding.floatToBf16(values[i]);
                    }
                    MemorySegment.copy(bits, 0, dst.segment, I16, dstBase + done * 2, m);
                }
                default -> throw new IllegalStateException("not a floating-point dtype: " + dst.dtype);
            }
        }
    }

    /** A view with another shape of as many elements; only a contiguous tensor can be reshaped without a copy. */
    public Tensor reshape(long... newShape) {
        checkShape(newShape);
        if (numel(newShape) != numel()) {
            throw new SeqkException.ShapeMismatch("reshape: shape " + Arrays.toString(newShape) + " does not hold the "
                    + numel() + " elements of shape " + Arrays.toString(shape));
        }
        if (!isContiguous()) {
            throw new SeqkException.Unsupported("reshape: the tensor of shape " + Arrays.toString(shape) + " with strides "
                    + Arrays.toString(strides) + " is not contiguous; copy it first (to(dtype()))");
        }
        return view(new Layout(newShape, contiguousStrides(newShape), offset));
    }

    /** Shape, strides and offset. */
    public Layout layout() {
        return new Layout(shape, strides, offset);
    }

    private Tensor view(Layout l) {
        checkOpen();
        return new Tensor(segment, dtype, l.shape(), l.strides(), l.offset(), lifetime);
    }

    /** A view with dimensions reordered: new dimension i is old dimension {@code order[i]}. */
    public Tensor permute(int... order) {
        return view(layout().permute(order));
    }

    /** A view of index {@code index} along {@code dim}, with that dimension removed. */
    public Tensor select(int dim, long index) {
        return view(layout().select(dim, index));
    }

    /** A view with a new dimension of extent 1 inserted at {@code dim} (0..rank). */
    public Tensor unsqueeze(int dim) {
        return view(layout().unsqueeze(dim));
    }

    /** A contiguous copy in {@code target} (the same dtype: a plain copy, in bulk when this is contiguous). */
    public Tensor to(DType target) {
        Tensor t = allocate(target, shape);
        try {
            t.copyFrom(this);
        } catch (RuntimeException e) {
            t.close();
            throw e;
        }
        return t;
    }

    /**
     * Closes this tensor and every view of the same memory, freeing it if owned (so closing a
     * view frees its parent's memory too); a wrapped segment only becomes unusable. Idempotent.
     */
    @Override
    public void close() {
        lifetime.close(this);
    }

    @Override
    public String toString() {
        return "Tensor[" + dtype + " " + Arrays.toString(shape) + (isClosed() ? " closed" : "") + "]";
    }

    /** The product of the extents; a product beyond a long is a ShapeMismatch. */
    public static long numel(long[] shape) {
        long n = 1;
        for (long s : shape) {
            n = multiply(n, s, shape);
        }
        return n;
    }

    /** Bytes of a contiguous tensor of this shape; a size beyond a long is a ShapeMismatch. */
    public static long byteSize(DType dtype, long[] shape) {
        return multiply(numel(shape), dtype.byteSize(), shape);
    }

    public static long[] contiguousStrides(long[] shape) {
        long[] st = new long[shape.length];
        long acc = 1;
        for (int i = shape.length - 1; i >= 0; i--) {
            st[i] = acc;
            acc = multiply(acc, Math.max(1, shape[i]), shape);
        }
        return st;
    }

    private static long multiply(long a, long b, long[] shape) {
        try {
            return Math.multiplyExact(a, b);
        } catch (ArithmeticException e) {
            throw new SeqkException.ShapeMismatch("shape " + Arrays.toString(shape) + " has more elements or bytes than a long holds");
        }
    }

    private static void checkShape(long[] shape) {
        if (shape == null) {
            throw new SeqkException.ShapeMismatch("shape is null");
        }
        for (long s : shape) {
            if (s < 0) {
                throw new SeqkException.ShapeMismatch("negative extent in shape " + Arrays.toString(shape));
            }
        }
    }

    private void checkOpen() {
        if (lifetime.closed.get()) {
            throw new SeqkException.TensorClosed("tensor " + dtype + Arrays.toString(shape) + " is closed");
        }
        if (!segment.scope().isAlive()) {
            throw new SeqkException.TensorClosed("tensor " + dtype + Arrays.toString(shape)
                    + " wraps a segment whose arena is closed");
        }
    }

    private long elementOffset(long[] index) {
        checkOpen();
        if (index == null || index.length != shape.length) {
            throw new SeqkException.ShapeMismatch("index " + Arrays.toString(index) + " has " + (index == null ? 0 : index.length)
                    + " entries, tensor has shape " + Arrays.toString(shape));
        }
        long off = offset;
        for (int i = 0; i < index.length; i++) {
            if (index[i] < 0 || index[i] >= shape[i]) {
                throw new SeqkException.IndexOutOfRange("index " + Arrays.toString(index) + " outside shape " + Arrays.toString(shape));
            }
            off += index[i] * strides[i];
        }
        return off;
    }

    private long checkedFlat(long flat) {
        checkOpen();
        if (flat < 0 || flat >= numel()) {
            throw new SeqkException.IndexOutOfRange("flat position " + flat + " outside shape " + Arrays.toString(shape)
                    + " (" + numel() + " elements)");
        }
        return flat;
    }

    /** The element offset of a row-major position; callers keep {@code flat} in 0..numel-1. */
    private long flatToOffset(long flat) {
        checkOpen();
        long off = offset;
        for (int i = shape.length - 1; i >= 0; i--) {
            long idx = flat % shape[i];
            flat /= shape[i];
            off += idx * strides[i];
        }
        return off;
    }

    private double read(long element) {
        try {
            return readElement(element);
        } catch (IllegalStateException | WrongThreadException e) {
            throw inaccessible(e);
        }
    }

    private double readElement(long element) {
        long byteOff = element * dtype.byteSize();
        return switch (dtype) {
            case F64 -> segment.get(F64, byteOff);
            case F32 -> segment.get(F32, byteOff);
            case F16 -> quiet(Float.float16ToFloat(segment.get(I16, byteOff)));
            case BF16 -> quiet(Float.intBitsToFloat((segment.get(I16, byteOff) & 0xffff) << 16));
            case I64 -> segment.get(I64, byteOff);
            case I32 -> segment.get(ValueLayout.JAVA_INT_UNALIGNED, byteOff);
            case BOOL -> segment.get(ValueLayout.JAVA_BYTE, byteOff) != 0 ? 1.0 : 0.0;
        };
    }

    private void checkWritable() {
        if (segment.isReadOnly()) {
            throw new SeqkException.Unsupported("tensor " + dtype + Arrays.toString(shape) + " is read-only (a view of a mapped file"
                    + " or a read-only segment); copy it first");
        }
    }

    private void write(long element, double v) {
        checkWritable();
        try {
            writeElement(element, v);
        } catch (IllegalStateException | WrongThreadException e) {
            throw inaccessible(e);
        }
    }

    /**
     * The JDK refuses an access whose arena another thread closed meanwhile, or a confined
     * segment's access from another thread; both become our errors.
     */
    private SeqkException inaccessible(RuntimeException e) {
        if (e instanceof WrongThreadException) {
            return new SeqkException("tensor " + dtype + Arrays.toString(shape) + " wraps a segment confined to another thread", e);
        }
        return new SeqkException.TensorClosed("tensor " + dtype + Arrays.toString(shape) + " was closed while in use");
    }

    private void writeElement(long element, double v) {        long byteOff = element * dtype.byteSize();
        switch (dtype) {
            case F64 -> segment.set(F64, byteOff, v);
            case F32 -> segment.set(F32, byteOff, (float) v);
            case F16 -> segment.set(I16, byteOff, Rounding.doubleToHalf(v));
            case BF16 -> segment.set(I16, byteOff, Rounding.doubleToBf16(v));
            case I64 -> segment.set(I64, byteOff, (long) v);
            case I32 -> segment.set(ValueLayout.JAVA_INT_UNALIGNED, byteOff, (int) v);
            case BOOL -> segment.set(ValueLayout.JAVA_BYTE, byteOff, (byte) (v != 0 ? 1 : 0));
        }
    }
}
