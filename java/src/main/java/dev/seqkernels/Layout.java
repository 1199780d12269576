package dev.seqkernels;

import java.util.Arrays;

/**
 * Where a tensor's elements are: a shape, element strides and an element offset. Host and device
 * tensors share these view operations; they never copy.
 */
public record Layout(long[] shape, long[] strides, long offset) {
    public Layout {
        shape = shape.clone();
        strides = strides.clone();
    }

    public static Layout contiguous(long... shape) {
        return new Layout(shape, Tensor.contiguousStrides(shape), 0);
    }

    @Override
    public long[] shape() {
        return shape.clone();
    }

    @Override
    public long[] strides() {
        return strides.clone();
    }

    public boolean isContiguous() {
        return Arrays.equals(strides, Tensor.contiguousStrides(shape));
    }

    /** New dimension i is old dimension {@code order[i]}. */
    public Layout permute(int... order) {
        if (order.length != shape.length) {
            throw new SeqkException.ShapeMismatch("permute order " + Arrays.toString(order) + " must name all "
                    + shape.length + " dimensions");
        }
        long[] s = new long[order.length];
        long[] st = new long[order.length];
        boolean[] seen = new boolean[order.length];
        for (int i = 0; i < order.length; i++) {
            if (order[i] < 0 || order[i] >= order.length || seen[order[i]]) {
                throw new SeqkException.ShapeMismatch("permute order " + Arrays.toString(order) + " is not a permutation");
            }
            seen[order[i]] = true;
            s[i] = shape[order[i]];
            st[i] = strides[order[i]];
        }
        return new Layout(s, st, offset);
    }

    /** Index {@code index} along {@code dim}, that dimension removed. */
    public Layout select(int dim, long index) {
        checkRange(dim, index, 1, "select(" + dim + ", " + index + ")");
        long[] s = new long[shape.length - 1];
        long[] st = new long[shape.length - 1];
        for (int i = 0, j = 0; i < shape.length; i++) {
            if (i != dim) {
                s[j] = shape[i];
                st[j++] = strides[i];
            }
        }
        return new Layout(s, st, offset + index * strides[dim]);
    }

    /** {@code length} indices along {@code dim} from {@code start}. */
    public Layout narrow(int dim, long start, long length) {
        checkRange(dim, start, length, "narrow(" + dim + ", " + start + ", " + length + ")");
        long[] s = shape.clone();
        s[dim] = length;
        return new Layout(s, strides, offset + start * strides[dim]);
    }

    /** A new dimension of extent 1 at {@code dim} (0..rank). */
    public Layout unsqueeze(int dim) {
        if (dim < 0 || dim > shape.length) {
            throw new SeqkException.ShapeMismatch("unsqueeze(" + dim + ") is outside 0.." + shape.length);
        }
        long[] s = new long[shape.length + 1];
        long[] st = new long[shape.length + 1];
        for (int i = 0, j = 0; i < s.length; i++) {
            if (i == dim) {
                s[i] = 1;
            } else {
                s[i] = shape[j];
                st[i] = strides[j++];
            }
        }
        return new Layout(s, st, offset);
    }

    private void checkRange(int dim, long start, long length, String what) {
        if (dim < 0 || dim >= shape.length || start < 0 || length < 0 || start > shape[dim] || length > shape[dim] - start) {
            throw new SeqkException.ShapeMismatch(what + " is outside shape " + Arrays.toString(shape));
        }
    }
}
