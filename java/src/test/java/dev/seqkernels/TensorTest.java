package dev.seqkernels;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class TensorTest {

    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"F64", "F32", "F16", "BF16"})
    void storesValuesRoundedToTheDType(DType dtype) {
        TestData data = new TestData();
        double[] v = new double[3 * 5];
        for (int i = 0; i < v.length; i++) {
            v[i] = data.uniform(-3, 3);
        }
        try (Tensor t = Tensor.of(dtype, v, 3, 5)) {
            assertArrayEquals(new long[]{3, 5}, t.shape());
            for (int i = 0; i < v.length; i++) {
                assertEquals(Rounding.roundTo(dtype, v[i]), t.getFlat(i), "element " + i + " " + data);
            }
            assertEquals(Rounding.roundTo(dtype, v[7]), t.get(1, 2));
        }
    }

    @Test
    void wrapsCallerMemoryWithStridesWithoutCopying() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment seg = arena.allocate(4 * 12);
            for (int i = 0; i < 12; i++) {
                seg.setAtIndex(ValueLayout.JAVA_FLOAT, i, i);
            }
            // Column-major 3x4 view of the same 12 floats: element (r, c) at r + 3c.
            Tensor t = Tensor.wrap(seg, DType.F32, new long[]{3, 4}, new long[]{1, 3}, 0);
            assertEquals(7.0, t.get(1, 2));
            assertFalse(t.isContiguous());
            t.set(-1.5, 2, 3);
            assertEquals(-1.5f, seg.getAtIndex(ValueLayout.JAVA_FLOAT, 11), "writes reach the caller's memory");
            assertArrayEquals(new double[]{0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, -1.5}, t.toDoubleArray());
            Tensor tr = t.permute(1, 0);
            assertTrue(tr.isContiguous());
            assertEquals(7.0, tr.get(2, 1));
            Tensor row = t.select(0, 1);
            assertArrayEquals(new double[]{1, 4, 7, 10}, row.toDoubleArray());
            t.close();
            assertEquals(0.0f, seg.getAtIndex(ValueLayout.JAVA_FLOAT, 0), "closing a wrapped tensor frees nothing");
        }
    }

    @Test
    void rejectsViewsThatLeaveTheSegment() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment seg = arena.allocate(4 * 10);
            var e = assertThrows(SeqkException.ShapeMismatch.class,
                    () -> Tensor.wrap(seg, DType.F32, new long[]{3, 4}, new long[]{4, 1}, 0));
            assertTrue(e.getMessage().contains("segment holds 10"), e.getMessage());
            assertThrows(SeqkException.ShapeMismatch.class, () -> Tensor.wrap(seg, DType.F32, new long[]{2}, new long[]{-1}, 0));
            assertThrows(SeqkException.ShapeMismatch.class, () -> Tensor.wrap(seg, DType.F32, new long[]{2, 2}, new long[]{1}, 0));
        }
    }

    @Test
    void closedTensorsAndTheirViewsThrow() {
        Tensor t = Tensor.allocate(DType.F32, 2, 3);
        Tensor view = t.permute(1, 0);
        t.close();
        t.close();
        assertTrue(view.isClosed());
        assertThrows(SeqkException.TensorClosed.class, () -> t.get(0, 0));
        assertThrows(SeqkException.TensorClosed.class, view::toDoubleArray);
        assertThrows(SeqkException.TensorClosed.class, t::segment);
    }

    @Test
    void badIndicesAndShapes() {
        try (Tensor t = Tensor.allocate(DType.F64, 2, 3)) {
            assertThrows(SeqkException.IndexOutOfRange.class, () -> t.get(2, 0));
            assertThrows(SeqkException.ShapeMismatch.class, () -> t.get(0));
            assertThrows(SeqkException.ShapeMismatch.class, () -> t.permute(0, 0));
            assertThrows(SeqkException.ShapeMismatch.class, () -> t.select(1, 3));
        }
        assertThrows(SeqkException.ShapeMismatch.class, () -> Tensor.allocate(DType.F32, 2, -1));
        assertThrows(SeqkException.ShapeMismatch.class, () -> Tensor.of(DType.F32, new double[5], 2, 3));
    }

    @Test
    void boolAndI64Storage() {
        try (Tensor b = Tensor.of(DType.BOOL, new double[]{0, 2, -1, 0}, 4);
             Tensor l = Tensor.of(DType.I64, new double[]{3, 1L << 40}, 2)) {
            assertArrayEquals(new double[]{0, 1, 1, 0}, b.toDoubleArray());
            assertEquals((double) (1L << 40), l.get(1));
        }
    }
}
