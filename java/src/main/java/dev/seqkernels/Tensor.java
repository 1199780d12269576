package dev.seqkernels;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * A host tensor: a {@link MemorySegment} seen through a shape, element strides, an element
 * offset and a {@link DType}.
 *
 * <p>Tensors made by {@link #allocate} own their memory (freed by {@link #close()}); tensors made by
 * {@link #wrap} borrow a caller's segment (zero copy) and never free it. Views ({@link #permute},
 * {@link #select}) share the memory and the closed flag of the tensor they come from. Any access
 * after close throws {@link SeqkException.TensorClosed}. Instances are not thread-safe for writes.
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
    private final Arena arena;
    private final AtomicBoolean closed;

    private Tensor(MemorySegment segment, DType dtype, long[] shape, long[] strides, long offset,
                   Arena arena, AtomicBoolean closed) {
        this.segment = segment;
        this.dtype = dtype;
        this.shape = shape;
        this.strides = strides;
        this.offset = offset;
        this.arena = arena;
        this.closed = closed;
    }

    /** A new zero-filled contiguous tensor that owns its memory. */
    public static Tensor allocate(DType dtype, long... shape) {
        checkShape(shape);
        Arena arena = Arena.ofShared();
        MemorySegment seg = arena.allocate(Math.max(1, numel(shape) * dtype.byteSize()), 16);
        return new Tensor(seg, dtype, shape.clone(), contiguousStrides(shape), 0, arena, new AtomicBoolean());
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
        if (strides.length != shape.length) {
            throw new SeqkException.ShapeMismatch("strides " + Arrays.toString(strides)
                    + " must have one entry per dimension of shape " + Arrays.toString(shape));
        }
        long lo = offset;
        long hi = offset;
        for (int i = 0; i < shape.length; i++) {
            if (shape[i] == 0) {
                hi = lo - 1;
                break;
            }
            long span = (shape[i] - 1) * strides[i];
            if (span < 0) {
                lo += span;
            } else {
                hi += span;
            }
        }
        if (hi >= lo && (lo < 0 || (hi + 1) * dtype.byteSize() > segment.byteSize())) {
            throw new SeqkException.ShapeMismatch("shape " + Arrays.toString(shape) + " with strides "
                    + Arrays.toString(strides) + " and offset " + offset + " reaches elements " + lo + ".." + hi
                    + " but the segment holds " + segment.byteSize() / dtype.byteSize() + " " + dtype + " elements");
        }
        return new Tensor(segment, dtype, shape.clone(), strides.clone(), offset, null, new AtomicBoolean());
    }

    /** A new tensor of {@code dtype} holding {@code values} (row-major), each rounded to the dtype. */
    public static Tensor of(DType dtype, double[] values, long... shape) {
        if (values.length != numel(shape)) {
            throw new SeqkException.ShapeMismatch(values.length + " values do not fill shape " + Arrays.toString(shape));
        }
        Tensor t = allocate(dtype, shape);
        for (int i = 0; i < values.length; i++) {
            t.setFlat(i, values[i]);
        }
        return t;
    }

    public static Tensor of(float[] values, long... shape) {
        double[] d = new double[values.length];
        for (int i = 0; i < d.length; i++) {
            d[i] = values[i];
        }
        return of(DType.F32, d, shape);
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

    /** The underlying memory (for zero-copy hand-off); valid only while the tensor is open. */
    public MemorySegment segment() {
        checkOpen();
        return segment;
    }

    public boolean isClosed() {
        return closed.get();
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
        return read(flatToOffset(flat));
    }

    public void setFlat(long flat, double value) {
        write(flatToOffset(flat), value);
    }

    /** All elements in row-major order of the logical shape, widened to double. */
    public double[] toDoubleArray() {
        checkOpen();
        long n = numel();
        if (n > Integer.MAX_VALUE - 8) {
            throw new SeqkException.ShapeMismatch("tensor of " + n + " elements is too large for a Java array");
        }
        double[] out = new double[(int) n];
        for (int i = 0; i < out.length; i++) {
            out[i] = read(flatToOffset(i));
        }
        return out;
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

    /** Shape, strides and offset. */
    public Layout layout() {
        return new Layout(shape, strides, offset);
    }

    private Tensor view(Layout l) {
        checkOpen();
        return new Tensor(segment, dtype, l.shape(), l.strides(), l.offset(), null, closed);
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

    /** A contiguous copy in another dtype. */
    public Tensor to(DType target) {
        return of(target, toDoubleArray(), shape);
    }

    /** Frees owned memory; views and wrapped tensors only become unusable. Idempotent. */
    @Override
    public void close() {
        if (closed.compareAndSet(false, true) && arena != null) {
            arena.close();
        }
    }

    @Override
    public String toString() {
        return "Tensor[" + dtype + " " + Arrays.toString(shape) + (isClosed() ? " closed" : "") + "]";
    }

    public static long numel(long[] shape) {
        long n = 1;
        for (long s : shape) {
            n = Math.multiplyExact(n, s);
        }
        return n;
    }

    public static long[] contiguousStrides(long[] shape) {
        long[] st = new long[shape.length];
        long acc = 1;
        for (int i = shape.length - 1; i >= 0; i--) {
            st[i] = acc;
            acc *= Math.max(1, shape[i]);
        }
        return st;
    }

    private static void checkShape(long[] shape) {
        for (long s : shape) {
            if (s < 0) {
                throw new SeqkException.ShapeMismatch("negative extent in shape " + Arrays.toString(shape));
            }
        }
    }

    private void checkOpen() {
        if (closed.get()) {
            throw new SeqkException.TensorClosed("tensor " + dtype + Arrays.toString(shape) + " is closed");
        }
    }

    private long elementOffset(long[] index) {
        checkOpen();
        if (index.length != shape.length) {
            throw new SeqkException.ShapeMismatch("index " + Arrays.toString(index) + " has " + index.length
                    + " entries, tensor has shape " + Arrays.toString(shape));
        }
        long off = offset;
        for (int i = 0; i < index.length; i++) {
            if (index[i] < 0 || index[i] >= shape[i]) {
                throw new IndexOutOfBoundsException("index " + Arrays.toString(index) + " outside shape " + Arrays.toString(shape));
            }
            off += index[i] * strides[i];
        }
        return off;
    }

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
        long byteOff = element * dtype.byteSize();
        return switch (dtype) {
            case F64 -> segment.get(F64, byteOff);
            case F32 -> segment.get(F32, byteOff);
            case F16 -> Rounding.halfToDouble(segment.get(I16, byteOff));
            case BF16 -> Rounding.bf16ToDouble(segment.get(I16, byteOff));
            case I64 -> segment.get(I64, byteOff);
            case I32 -> segment.get(ValueLayout.JAVA_INT_UNALIGNED, byteOff);
            case BOOL -> segment.get(ValueLayout.JAVA_BYTE, byteOff) != 0 ? 1.0 : 0.0;
        };
    }

    private void write(long element, double v) {
        long byteOff = element * dtype.byteSize();
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
