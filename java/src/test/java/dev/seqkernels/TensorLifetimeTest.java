package dev.seqkernels;

import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Host tensor lifetimes (views, wrapped segments, the Cleaner) and size arithmetic that must never wrap. */
class TensorLifetimeTest {
    private static void mentions(Throwable e, String... parts) {
        for (String p : parts) {
            assertTrue(e.getMessage().contains(p), () -> "message '" + e.getMessage() + "' should mention '" + p + "'");
        }
    }

    @Test
    void closingAViewFreesTheOwnersMemory() {
        long before = Tensor.openBytes();
        Tensor t = Tensor.allocate(DType.F32, 4, 8);
        assertEquals(before + 128, Tensor.openBytes());
        Tensor row = t.select(0, 1);
        row.close();
        assertTrue(t.isClosed(), "a view shares its parent's lifetime");
        assertEquals(before, Tensor.openBytes(), "closing the view freed the memory");
        t.close();
        assertEquals(before, Tensor.openBytes(), "closing the parent afterwards frees nothing twice");
    }

    @Test
    void aHeldTensorCannotBeClosedUntilTheHoldIs() {
        Tensor t = Tensor.allocate(DType.F32, 4, 8);
        Tensor view = t.select(0, 1);
        Tensor.Hold hold = view.hold();
        Tensor.Hold second = t.hold();
        SeqkException refused = assertThrows(SeqkException.class, t::close);
        mentions(refused, "cannot be closed while another thread uses it");
        assertFalse(t.isClosed());
        hold.close();
        hold.close();  // idempotent: the second release must not free the other hold
        assertThrows(SeqkException.class, view::close, "one hold is still open");
        second.close();
        view.close();
        assertTrue(t.isClosed());
        mentions(assertThrows(SeqkException.TensorClosed.class, t::hold), "closed");
    }

    @Test
    void anUnclosedTensorIsFreedByTheCleaner() throws InterruptedException {
        long before = Tensor.cleanedBytes();
        allocateAndDrop();
        long deadline = System.nanoTime() + 20_000_000_000L;
        while (Tensor.cleanedBytes() < before + 8 * (1 << 16) && System.nanoTime() < deadline) {
            System.gc();
            Thread.sleep(20);
        }
        assertTrue(Tensor.cleanedBytes() >= before + 8 * (1 << 16), "the unreachable tensor's memory was freed");
    }

    /**
     * The Cleaner logs the leaks it rescues: the first, then the 10th, 100th, ... (so a loop that
     * never closes is not a line per call). Tensors are leaked until the count reaches its next
     * logged value; a WARNING naming a tensor and saying it was never closed must appear.
     */
    @Test
    void theCleanerLogsTheLeaksItRescues() throws InterruptedException {
        java.util.logging.Logger logger = java.util.logging.Logger.getLogger(Tensor.class.getName());
        java.util.List<String> warnings = new java.util.concurrent.CopyOnWriteArrayList<>();
        java.util.logging.Handler handler = new java.util.logging.Handler() {
            @Override
            public void publish(java.util.logging.LogRecord r) {
                if (r.getLevel() == java.util.logging.Level.WARNING) {
                    warnings.add(r.getMessage());
                }
            }

            @Override
            public void flush() {
            }

            @Override
            public void close() {
            }
        };
        logger.addHandler(handler);
        try {
            long deadline = System.nanoTime() + 30_000_000_000L;
            long next = 1;
            while (next <= Tensor.leaks()) {
                next *= 10;
            }
            while (warnings.isEmpty() && System.nanoTime() < deadline) {
                while (Tensor.leaks() + pending < next) {
                    Tensor.allocate(DType.F32, 3, 5);  // dropped at once
                    pending++;
                }
                System.gc();
                Thread.sleep(10);
                pending = 0;
            }
            assertFalse(warnings.isEmpty(), "no leak was logged (" + Tensor.leaks() + " leaks rescued)");
            mentions(new RuntimeException(warnings.get(0)), "host tensor", "was never closed", "so far");
        } finally {
            logger.removeHandler(handler);
        }
    }

    private long pending;

    private static void allocateAndDrop() {
        Tensor t = Tensor.allocate(DType.F64, 1 << 16);
        t.unsqueeze(0).set(1.0, 0, 5);
    }

    @Test
    void aWrappedSegmentWhoseArenaClosedIsAClosedTensor() {
        Arena arena = Arena.ofShared();
        Tensor t = Tensor.wrap(arena.allocate(64), DType.F32, 16);
        assertFalse(t.isClosed());
        arena.close();
        assertTrue(t.isClosed());
        mentions(assertThrows(SeqkException.TensorClosed.class, () -> t.get(0)), "arena is closed");
        assertThrows(SeqkException.TensorClosed.class, t::segment);
    }

    @Test
    void sizesThatOverflowALongAreRefused() {
        mentions(assertThrows(SeqkException.ShapeMismatch.class, () -> Tensor.allocate(DType.F32, 1L << 62)),
                "[4611686018427387904]", "than a long holds");
        mentions(assertThrows(SeqkException.ShapeMismatch.class, () -> Tensor.allocate(DType.F32, 1L << 40, 1L << 40)),
                "than a long holds");
        MemorySegment small = Arena.ofAuto().allocate(16);
        mentions(assertThrows(SeqkException.ShapeMismatch.class,
                () -> Tensor.wrap(small, DType.F32, new long[]{2}, new long[]{1L << 62}, 0)), "beyond the range of a long");
        mentions(assertThrows(SeqkException.ShapeMismatch.class,
                () -> Tensor.wrap(small, DType.F32, new long[]{2}, new long[]{1}, Long.MAX_VALUE - 1)), "beyond the range of a long");
        mentions(assertThrows(SeqkException.ShapeMismatch.class,
                () -> Tensor.wrap(small, DType.BOOL, new long[]{1}, new long[]{1}, Long.MAX_VALUE)), "beyond the range of a long");
        mentions(assertThrows(SeqkException.ShapeMismatch.class,
                () -> Layout.contiguous(4).narrow(0, Long.MAX_VALUE, 2)), "narrow", "outside shape");
    }

    @Test
    void positionsOutsideTheShapeNameThemselves() {
        try (Tensor t = Tensor.allocate(DType.F32, 2, 3); Tensor empty = Tensor.allocate(DType.F32, 0, 3)) {
            mentions(assertThrows(SeqkException.IndexOutOfRange.class, () -> t.get(2, 0)), "[2, 0]", "[2, 3]");
            mentions(assertThrows(SeqkException.IndexOutOfRange.class, () -> t.getFlat(6)), "flat position 6", "[2, 3]");
            mentions(assertThrows(SeqkException.IndexOutOfRange.class, () -> empty.getFlat(0)), "flat position 0", "[0, 3]");
            mentions(assertThrows(SeqkException.ShapeMismatch.class, () -> t.get((long[]) null)), "index");
        }
    }
}
