package dev.seqkernels.gpu;

import dev.seqkernels.DType;
import dev.seqkernels.TestData;
import dev.seqkernels.Tensor;
import dev.seqkernels.gpu.emu.EmuDriver;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Kernels with deliberate bugs (cuda/selftest.cu) that the emulator's checking must report with
 * the kernel, block and thread, where hardware would read stale data, corrupt memory or hang. The
 * self-tests of the features themselves run through every binding in {@link PrimitivesSelfTest}.
 */
class EmulatorFeatureTest {
    private final EmuDriver emu = EmuDriver.instance();
    private final long module = emu.loadModule("selftest");
    private final TestData data = new TestData();

    private long fn(String name) {
        return emu.function(module, name);
    }

    /**
     * ldmatrix's shared-memory wavefronts: selftest_cp_async_ldmatrix_mma_f16 loads A's four
     * matrices from rows 32 bytes apart (two rows in each 16-byte bank group: 2 wavefronts each)
     * and B's two from rows 16 bytes apart (conflict-free: 1 each).
     */
    @Test
    void ldmatrixWavefrontsCountBankConflicts() {
        emu.takeLdmatrixCounts();
        try (DeviceTensor a = DeviceTensor.allocate(emu, DType.F16, 16 * 16); DeviceTensor b = DeviceTensor.allocate(emu, DType.F16, 16 * 8);
             DeviceTensor c = DeviceTensor.allocate(emu, DType.F32, 16 * 8); DeviceTensor d = DeviceTensor.allocate(emu, DType.F32, 16 * 8)) {
            emu.memset(a.pointer(), 0, 512);
            emu.memset(b.pointer(), 0, 256);
            emu.memset(c.pointer(), 0, 512);
            emu.launch(fn("selftest_cp_async_ldmatrix_mma_f16"), Dim3.of(1), Dim3.of(32), 0, 0,
                    new KernelArgs().pointer(a.pointer()).pointer(b.pointer()).pointer(c.pointer()).pointer(d.pointer()));
        }
        EmuDriver.LdmatrixCounts counts = emu.takeLdmatrixCounts();
        assertEquals(new EmuDriver.LdmatrixCounts(2, 6, 4 * 2 + 2), counts);
        assertEquals(10.0 / 6, counts.wavefrontsPerMatrix(), 1e-12);
        assertEquals(new EmuDriver.LdmatrixCounts(0, 0, 0), emu.takeLdmatrixCounts(), "counting starts anew");
    }

    /** A missing __syncthreads between a shared write and another thread's read is a race, named with both threads and lines. */
    @Test
    void aMissingBarrierIsReportedAsARace() {
        int n = 64;
        try (DeviceTensor dIn = DeviceTensor.of(emu, data.tensor(DType.F32, 1, n));
             DeviceTensor dOut = DeviceTensor.allocate(emu, DType.F32, n)) {
            var e = assertThrows(DriverException.class, () -> emu.launch(fn("selftest_reverse_no_barrier_f32"), Dim3.of(1),
                    Dim3.of(n), n * 4, 0, new KernelArgs().pointer(dIn.pointer()).pointer(dOut.pointer())));
            String m = e.getMessage();
            assertTrue(m.contains("race on dynamic shared memory") && m.contains("kernel selftest_reverse_no_barrier_f32 block (0,0,0)")
                    && m.split("selftest\\.cu:", -1).length >= 3 && m.contains("no __syncthreads"), m);
        }
    }

    @Test
    void aBarrierSomeThreadsNeverReachIsReported() {
        try (DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, 32)) {
            var e = assertThrows(DriverException.class, () -> emu.launch(fn("selftest_divergent_barrier"), Dim3.of(1),
                    Dim3.of(32), 0, 0, new KernelArgs().pointer(out.pointer())));
            assertTrue(e.getMessage().contains("selftest_divergent_barrier")
                    && e.getMessage().contains("__syncthreads reached by 16 of 32 threads; 16 exited"), e.getMessage());
        }
    }

    @Test
    void anOutOfBoundsWriteIsReportedWithBlockAndThread() {
        int n = 100;
        try (DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, n)) {
            var e = assertThrows(DriverException.class, () -> emu.launch(fn("selftest_write_past_end"), Dim3.of(4),
                    Dim3.of(32), 0, 0, new KernelArgs().pointer(out.pointer()).i32(n).i32(2).i32(5)));
            assertTrue(e.getMessage().contains("kernel selftest_write_past_end block (2,0,0) thread (5,0,0)")
                    && e.getMessage().contains("writes 4 bytes") && e.getMessage().contains("outside every device allocation")
                    && e.getMessage().contains("selftest.cu:"), e.getMessage());
        }
    }

    /**
     * A write outside an allocation that the access checks cannot see (made by code without their
     * hooks) still fails the launch: the guard zones before and after every device allocation are
     * checked after each thread runs. Past the end at byte offset 72 (the third float past 16) and
     * 12 bytes before the start, both inside whole 8-byte words of the guards.
     */
    @Test
    void aWriteTheChecksCannotSeeIsCaughtByTheGuards() {
        int n = 16;
        try (DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, n)) {
            var e = assertThrows(DriverException.class, () -> emu.launch(fn("selftest_unseen_write_outside"), Dim3.of(1),
                    Dim3.of(4), 0, 0, new KernelArgs().pointer(out.pointer()).i32(n + 2)));
            assertTrue(e.getMessage().contains("thread (0,0,0)")
                    && e.getMessage().contains("wrote past the end of device allocation") && e.getMessage().contains("(64 bytes), at byte offset 72"),
                    e.getMessage());
        }
        try (DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, n)) {
            var e = assertThrows(DriverException.class, () -> emu.launch(fn("selftest_unseen_write_outside"), Dim3.of(1),
                    Dim3.of(4), 0, 0, new KernelArgs().pointer(out.pointer()).i32(-3)));
            assertTrue(e.getMessage().contains("wrote 12 bytes before the start of device allocation"), e.getMessage());
        }
    }

    @Test
    void aSharedMemoryOverflowIsReportedWithTheThread() {
        try (DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, 16)) {
            var e = assertThrows(DriverException.class, () -> emu.launch(fn("selftest_shared_overflow"), Dim3.of(1),
                    Dim3.of(16), 16 * 4, 0, new KernelArgs().pointer(out.pointer())));
            assertTrue(e.getMessage().contains("thread (3,0,0)") && e.getMessage().contains("dynamic shared memory (64 bytes)"),
                    e.getMessage());
        }
    }

    /** A device name the emulator does not model is refused by name (and nothing else reads the property after the first load). */
    @Test
    void anUnknownDeviceIsRefusedByName() {
        String before = System.getProperty(EmuDriver.DEVICE_PROPERTY);
        DeviceProperties loaded = emu.properties();
        System.setProperty(EmuDriver.DEVICE_PROPERTY, "sm_80");
        try {
            var e = assertThrows(DriverException.class, EmuDriver::reportedDevice);
            assertTrue(e.getMessage().contains("must be sm_90 or sm_75, not 'sm_80'"), e.getMessage());
        } finally {
            if (before == null) {
                System.clearProperty(EmuDriver.DEVICE_PROPERTY);
            } else {
                System.setProperty(EmuDriver.DEVICE_PROPERTY, before);
            }
        }
        assertEquals(loaded, emu.properties(), "the loaded emulator keeps the device it was loaded with");
    }

    /** The multiprocessor count is taken from its property, and a count the emulator cannot report is refused by name. */
    @Test
    void theMultiprocessorCountFollowsItsProperty() {
        String before = System.getProperty(EmuDriver.MULTIPROCESSORS_PROPERTY);
        try {
            System.setProperty(EmuDriver.MULTIPROCESSORS_PROPERTY, "7");
            assertEquals(7, EmuDriver.reportedDevice().multiprocessors());
            for (String bad : new String[] {"0", "265", "four"}) {
                System.setProperty(EmuDriver.MULTIPROCESSORS_PROPERTY, bad);
                var e = assertThrows(DriverException.class, EmuDriver::reportedDevice);
                assertTrue(e.getMessage().contains("must be a count from 1 to 264, not '" + bad + "'"), e.getMessage());
            }
        } finally {
            if (before == null) {
                System.clearProperty(EmuDriver.MULTIPROCESSORS_PROPERTY);
            } else {
                System.setProperty(EmuDriver.MULTIPROCESSORS_PROPERTY, before);
            }
        }
    }

    /**
     * On the emulated T4: blocks per multiprocessor held to 16, to 1,024 threads (rounded up to whole
     * warps) and to 64 KB of shared memory.
     */
    @Test
    @DeviceDependent
    void theEmulatedT4sOccupancyLimits() {
        org.junit.jupiter.api.Assumptions.assumeTrue(emu.properties().computeMajor() == 7,
                "skipped: the T4's limits, and this emulator reports " + emu.properties().name());
        long f = fn("selftest_reverse_f32");
        assertEquals(16, emu.maxActiveBlocksPerMultiprocessor(f, 32, 0), "16 blocks at most");
        assertEquals(16, emu.maxActiveBlocksPerMultiprocessor(f, 33, 0), "33 threads take two warps: 1,024 / 64");
        assertEquals(2, emu.maxActiveBlocksPerMultiprocessor(f, 512, 0), "1,024 threads");
        assertEquals(1, emu.maxActiveBlocksPerMultiprocessor(f, 128, 40 * 1024), "64 KB of shared memory");
        assertEquals(3, emu.maxActiveBlocksPerMultiprocessor(f, 128, 20 * 1024), "64 KB of shared memory");
    }

    /**
     * An exception escaping a thread (the emulator's bad_alloc) ends the launch with an error naming
     * the thread and the exception, copied without allocating; the emulator runs the next launch
     * (the same kernel on two threads, neither of which throws).
     */
    @Test
    void anExceptionEscapingAThreadEndsTheLaunchWithAnError() {
        try (DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, 8)) {
            var e = assertThrows(DriverException.class, () -> emu.launch(fn("selftest_exception_in_a_thread"), Dim3.of(1),
                    Dim3.of(8), 0, 0, new KernelArgs().pointer(out.pointer())));
            assertTrue(e.getMessage().contains("thread (2,0,0)") && e.getMessage().contains("an exception escaped the kernel's thread: ")
                    && e.getMessage().contains("bad_alloc"), e.getMessage());
            try (Tensor after = out.toHost()) {  // round-robin: threads 0 and 1 ran to the end, the launch stopped at thread 2
                assertEquals(1.0, after.getFlat(1));
                assertTrue(Double.isNaN(after.getFlat(3)) || after.getFlat(3) == 0, "thread 3 never ran: " + after.getFlat(3));
            }
            emu.memset(out.pointer(), 0, 8 * 4);
            emu.launch(fn("selftest_exception_in_a_thread"), Dim3.of(1), Dim3.of(2), 0, 0, new KernelArgs().pointer(out.pointer()));
            assertEquals(1.0, out.toHost().getFlat(1), "two threads, none throws: the launch runs");
        }
    }

    @Test
    void aShuffleNamingExitedLanesIsReported() {
        try (DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, 32)) {
            var e = assertThrows(DriverException.class, () -> emu.launch(fn("selftest_shuffle_with_exited_lanes"), Dim3.of(1),
                    Dim3.of(32), 0, 0, new KernelArgs().pointer(out.pointer())));
            assertTrue(e.getMessage().contains("exited without reaching it"), e.getMessage());
        }
    }

    @Test
    @DeviceDependent
    void launchShapesAndArgumentsAreValidated() {
        try (DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, 32)) {
            long f = fn("selftest_atomic_count");
            var tooMany = assertThrows(DriverException.class, () -> emu.launch(f, Dim3.of(1), Dim3.of(1025), 0, 0,
                    new KernelArgs().pointer(out.pointer())));
            assertTrue(tooMany.getMessage().contains("exceeds the limits"), tooMany.getMessage());
            var smem = assertThrows(DriverException.class, () -> emu.launch(f, Dim3.of(1), Dim3.of(32), 300_000, 0,
                    new KernelArgs().pointer(out.pointer())));
            assertTrue(smem.getMessage().contains("maximum of " + emu.properties().sharedMemoryPerBlockOptin()), smem.getMessage());
            var arity = assertThrows(DriverException.class, () -> emu.launch(f, Dim3.of(1), Dim3.of(32), 0, 0,
                    new KernelArgs().pointer(out.pointer()).i32(3)));
            assertTrue(arity.getMessage().contains("takes 1 parameters, 2 were passed"), arity.getMessage());
            var unknown = assertThrows(DriverException.class, () -> emu.function(module, "no_such_kernel"));
            assertTrue(unknown.getMessage().contains("no_such_kernel"), unknown.getMessage());
        }
    }

    @Test
    void theEmulatorKeepsWorkingAfterAReportedError() {
        aBarrierSomeThreadsNeverReachIsReported();
        int n = 33;
        Tensor in = data.tensor(DType.F32, 1, n);
        try (DeviceTensor dIn = DeviceTensor.of(emu, in); DeviceTensor dOut = DeviceTensor.allocate(emu, DType.F32, n)) {
            emu.launch(fn("selftest_reverse_f32"), Dim3.of(1), Dim3.of(n), n * 4, 0,
                    new KernelArgs().pointer(dIn.pointer()).pointer(dOut.pointer()));
            assertEquals(in.getFlat(n - 1), dOut.toHost().getFlat(0), "a launch after the reported error runs normally");
        }
    }

    @Test
    void readingBeforeTheCpAsyncWaitIsReported() {
        try (DeviceTensor in = DeviceTensor.of(emu, data.tensor(DType.F32, 1, 128));
             DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, 32)) {
            var e = assertThrows(DriverException.class, () -> emu.launch(fn("selftest_cp_async_missing_wait"), Dim3.of(1),
                    Dim3.of(32), 128 * 4, 0, new KernelArgs().pointer(in.pointer()).pointer(out.pointer())));
            assertTrue(e.getMessage().contains("a cp.async destination it has not waited for") && e.getMessage().contains("selftest.cu:"),
                    e.getMessage());
        }
    }

    @Test
    void aGridSyncSomeBlocksNeverReachIsReported() {
        try (DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, 4)) {
            var e = assertThrows(DriverException.class, () -> emu.launchCooperative(
                    emu.function(module, "selftest_grid_sync_divergent"), Dim3.of(4), Dim3.of(32), 0, 0,
                    new KernelArgs().pointer(out.pointer())));
            assertTrue(e.getMessage().contains("grid sync reached by 3 of 4 blocks"), e.getMessage());
        }
    }

    @Test
    void gridSyncOutsideACooperativeLaunchIsAnError() {
        try (DeviceTensor a = DeviceTensor.allocate(emu, DType.F32, 2); DeviceTensor b = DeviceTensor.allocate(emu, DType.F32, 2)) {
            var e = assertThrows(DriverException.class, () -> emu.launch(emu.function(module, "selftest_grid_sync"),
                    Dim3.of(2), Dim3.of(32), 0, 0, new KernelArgs().pointer(a.pointer()).pointer(b.pointer())));
            assertTrue(e.getMessage().contains("grid sync outside a cooperative launch"), e.getMessage());
        }
    }

    /** A flag barrier's launch over `blocks` blocks of 32 threads: the waits short of their targets by `shortBy`, with or without releases. */
    private void flagBarrier(int blocks, int shortBy, boolean release, boolean cooperative) {
        try (DeviceTensor scratch = DeviceTensor.allocate(emu, DType.F32, blocks); DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, blocks);
             DeviceTensor arrivals = DeviceTensor.allocate(emu, DType.I32, 1)) {
            emu.memsetAsync(arrivals.pointer(), 0, 4, 0);
            KernelArgs args = new KernelArgs().pointer(scratch.pointer()).pointer(out.pointer()).pointer(arrivals.pointer())
                    .i32(shortBy).i32(release ? 1 : 0);
            if (cooperative) {
                emu.launchCooperative(fn("selftest_flag_barrier"), Dim3.of(blocks), Dim3.of(32), 0, 0, args);
            } else {
                emu.launch(fn("selftest_flag_barrier"), Dim3.of(blocks), Dim3.of(32), 0, 0, args);
            }
            Tensor o = out.toHost();
            Tensor s = scratch.toHost();
            for (int b = 0; b < blocks; b++) {
                assertEquals((b + 1) % blocks + 1, o.getFlat(b), "block " + b + " read its neighbour's slot after round 1");
                assertEquals(-(b + 1), s.getFlat(b), "block " + b + "'s slot after round 2");
            }
        }
    }

    /**
     * A wait one arrival short lets a block read a neighbour's slot before that neighbour's release:
     * reported as a race whatever the OS threads' timing (the acquire orders only the releases up to
     * the first that met its target), under every schedule. The full target passes under every
     * schedule of the blocks' threads, with the values the exchange must give.
     */
    @Test
    void aFlagWaitShortOfItsTargetIsARace() {
        for (EmuDriver.Schedule schedule : EmuDriver.Schedule.values()) {
            emu.setSchedule(schedule, 7, false);
            try {
                flagBarrier(6, 0, true, true);
            } finally {
                emu.setSchedule(EmuDriver.Schedule.ROUND_ROBIN, 0, false);
            }
        }
        for (EmuDriver.Schedule schedule : EmuDriver.Schedule.values()) {
            emu.setSchedule(schedule, 7, false);
            try {
                var e = assertThrows(DriverException.class, () -> flagBarrier(6, 1, true, true), schedule.name());
                assertTrue(e.getMessage().contains("race on global memory") && e.getMessage().contains("nor a flag release")
                        && e.getMessage().contains("selftest.cu:"), e.getMessage());
            } finally {
                emu.setSchedule(EmuDriver.Schedule.ROUND_ROBIN, 0, false);
            }
        }
    }

    @Test
    void flagWaitsNoReleaseMeetsAreADeadlock() {
        var e = assertThrows(DriverException.class, () -> flagBarrier(3, 0, false, true));
        assertTrue(e.getMessage().contains("deadlock: no block can run (3 wait at flags, 0 at the grid sync, 0 ended)")
                && e.getMessage().contains("to reach 3 (it holds 0)") && e.getMessage().contains("selftest.cu:"), e.getMessage());
    }

    /** With checking off the board keeps no history (no ordering to record): the barrier still orders the exchange. */
    @Test
    void aFlagBarrierRunsWithCheckingOff() {
        emu.setChecking(false);
        try {
            flagBarrier(6, 0, true, true);
        } finally {
            emu.setChecking(true);
        }
    }

    @Test
    void aFlagWordStoredToBetweenReleasesIsReported() {
        try (DeviceTensor arrivals = DeviceTensor.allocate(emu, DType.I32, 1)) {
            emu.memsetAsync(arrivals.pointer(), 0, 4, 0);
            var e = assertThrows(DriverException.class, () -> emu.launchCooperative(fn("selftest_flag_word_stored"), Dim3.of(1),
                    Dim3.of(32), 0, 0, new KernelArgs().pointer(arrivals.pointer())));
            assertTrue(e.getMessage().contains("the word changed since the launch's last release of it"), e.getMessage());
        }
    }

    @Test
    void flagsOutsideACooperativeLaunchAreAnError() {
        var e = assertThrows(DriverException.class, () -> flagBarrier(2, 0, true, false));
        assertTrue(e.getMessage().contains("a flag release outside a cooperative launch"), e.getMessage());
    }

    /** The launch's error, which must name the kernel and carry every fragment given. */
    private String reported(String kernel, Dim3 grid, Dim3 block, int shared, KernelArgs args, String... fragments) {
        var e = assertThrows(DriverException.class, () -> emu.launch(fn(kernel), grid, block, shared, 0, args));
        String m = e.getMessage();
        assertTrue(m.contains("kernel " + kernel), m);
        for (String f : fragments) {
            assertTrue(m.contains(f), () -> "'" + f + "' is not in: " + m);
        }
        return m;
    }

    /** Lanes of one warp exchanging through shared memory need a __syncwarp: without it, a race; with it, none. */
    @Test
    void aWarpExchangeWithoutSyncwarpIsARace() {
        try (DeviceTensor in = DeviceTensor.of(emu, data.tensor(DType.F32, 1, 32)); DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, 32)) {
            reported("selftest_warp_exchange_f32", Dim3.of(1), Dim3.of(32), 0,
                    new KernelArgs().pointer(in.pointer()).pointer(out.pointer()).i32(0), "race on a static shared array", "selftest.cu:");
            emu.launch(fn("selftest_warp_exchange_f32"), Dim3.of(1), Dim3.of(32), 0, 0,
                    new KernelArgs().pointer(in.pointer()).pointer(out.pointer()).i32(1));
            assertEquals(in.toHost().getFlat(1), out.toHost().getFlat(0), "with __syncwarp, lane 0 reads lane 1's value");
        }
    }

    @Test
    void blocksWritingOneGlobalWordRace() {
        try (DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, 1)) {
            reported("selftest_blocks_write_one_word", Dim3.of(3), Dim3.of(32), 0, new KernelArgs().pointer(out.pointer()),
                    "write-after-write race on global memory", "another block, no grid sync between", "selftest.cu:");
        }
    }

    @Test
    void aMisalignedVectorLoadIsReported() {
        try (DeviceTensor in = DeviceTensor.of(emu, data.tensor(DType.F32, 1, 200)); DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, 32)) {
            reported("selftest_misaligned_vector_load", Dim3.of(1), Dim3.of(32), 0,
                    new KernelArgs().pointer(in.pointer()).pointer(out.pointer()), "reads 16 bytes", "not 16-byte aligned", "selftest.cu:");
        }
    }

    @Test
    void lanesMeetingAtACollectiveWithDifferentMasksAreReported() {
        try (DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, 32)) {
            reported("selftest_collective_masks_disagree", Dim3.of(1), Dim3.of(32), 0, new KernelArgs().pointer(out.pointer()),
                    "different masks");
        }
    }

    @Test
    void aBarrierReachedFromTwoSitesIsReported() {
        try (DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, 32)) {
            reported("selftest_barrier_from_two_sites", Dim3.of(1), Dim3.of(32), 0, new KernelArgs().pointer(out.pointer()),
                    "__syncthreads reached from two sites", "selftest.cu:");
        }
    }

    /** The bug a missing end-of-tile barrier makes: a cp.async refills a buffer another warp still reads. */
    @Test
    void aCpAsyncIntoABufferBeingReadIsARace() {
        emu.setSchedule(EmuDriver.Schedule.ROUND_ROBIN, 0, false);  // warp 0 reads before warp 1 issues: the race is write-after-read
        try (DeviceTensor in = DeviceTensor.of(emu, data.tensor(DType.F32, 1, 128)); DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, 32)) {
            reported("selftest_cp_async_refills_a_buffer_being_read", Dim3.of(1), Dim3.of(64), 128 * 4,
                    new KernelArgs().pointer(in.pointer()).pointer(out.pointer()), "write-after-read race on dynamic shared memory",
                    "selftest.cu:");
        }
    }

    private KernelArgs inOut(DeviceTensor in, DeviceTensor out) {
        return new KernelArgs().pointer(in.pointer()).pointer(out.pointer());
    }

    /** Only a __syncwarp naming both lanes orders their accesses: two partial ones that do not, or a shuffle, leave a race. */
    @Test
    void onlyASyncwarpNamingBothLanesOrdersTheirAccesses() {
        try (DeviceTensor in = DeviceTensor.of(emu, data.tensor(DType.F32, 1, 32)); DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, 32)) {
            reported("selftest_warp_orderings", Dim3.of(1), Dim3.of(32), 0, inOut(in, out).i32(0),
                    "read-after-write race on a static shared array", "thread 0 reads", "thread 2 wrote");
            reported("selftest_warp_orderings", Dim3.of(1), Dim3.of(32), 0, inOut(in, out).i32(2),
                    "read-after-write race on a static shared array", "thread 0 reads", "thread 2 wrote");
            for (int ordered : new int[] {1, 3, 4}) {
                emu.launch(fn("selftest_warp_orderings"), Dim3.of(1), Dim3.of(32), 0, 0, inOut(in, out).i32(ordered));
                assertEquals(in.toHost().getFlat(2), out.toHost().getFlat(0), "mode " + ordered);
            }
        }
    }

    /** A write races with the latest unsynced read of another lane, however well the earlier reads are ordered. */
    @Test
    void aWriteAfterALateReadIsARace() {
        emu.setSchedule(EmuDriver.Schedule.REVERSE, 0, false);  // lane 2 reads before lane 0 writes (round-robin: after)
        try (DeviceTensor in = DeviceTensor.of(emu, data.tensor(DType.F32, 1, 32)); DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, 32)) {
            reported("selftest_write_after_a_late_read", Dim3.of(1), Dim3.of(32), 0, inOut(in, out).i32(0),
                    "write-after-read race on a static shared array", "thread 0 writes", "thread 2 read");
            emu.launch(fn("selftest_write_after_a_late_read"), Dim3.of(1), Dim3.of(32), 0, 0, inOut(in, out).i32(1));
            assertEquals(in.toHost().getFlat(0), out.toHost().getFlat(2));
            emu.launch(fn("selftest_write_after_a_late_read"), Dim3.of(1), Dim3.of(32), 0, 0, inOut(in, out).i32(2));
            assertEquals(in.toHost().getFlat(0), out.toHost().getFlat(1), "lane 1's read, ordered by the second __syncwarp");
        } finally {
            emu.setSchedule(EmuDriver.Schedule.ROUND_ROBIN, 0, false);
        }
    }

    @Test
    void aCpAsyncDestinationWrittenBeforeTheWaitIsReported() {
        try (DeviceTensor in = DeviceTensor.of(emu, data.tensor(DType.F32, 1, 128)); DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, 32)) {
            reported("selftest_cp_async_destination_overwritten", Dim3.of(1), Dim3.of(32), 128 * 4, inOut(in, out).i32(0),
                    "writes dynamic shared memory", "a cp.async destination it has not waited for", "selftest.cu:");
            emu.launch(fn("selftest_cp_async_destination_overwritten"), Dim3.of(1), Dim3.of(32), 128 * 4, 0, inOut(in, out).i32(1));
            assertEquals(in.toHost().getFlat(1), out.toHost().getFlat(0), "written after the wait, the copy has landed");
        }
    }

    /** An overrun of dynamic shared memory lands in a red zone, not in the static array after it. */
    @Test
    void anOverrunOfDynamicSharedMemoryNextToAStaticArrayIsReported() {
        try (DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, 16)) {
            reported("selftest_dynamic_overrun_next_to_a_static_array", Dim3.of(1), Dim3.of(16), 64, new KernelArgs().pointer(out.pointer()),
                    "thread 0 writes 4 bytes of shared memory", "outside the dynamic shared memory (64 bytes) and every static shared array");
        }
    }

    /** Neighbouring bytes written by different threads share a shadow granule but are no race. */
    @Test
    void neighbouringBytesWrittenByTwoThreadsAreNoRace() {
        try (DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, 64)) {
            emu.launch(fn("selftest_neighbouring_bytes"), Dim3.of(1), Dim3.of(64), 0, 0, new KernelArgs().pointer(out.pointer()));
            Tensor got = out.toHost();
            for (int t = 0; t < 64; t++) {
                assertEquals(t ^ 1, got.getFlat(t), "out[" + t + "]");
            }
        }
    }

    /** Collectives over part of a warp: disjoint masks at one site, and half the warp one collective behind. */
    @Test
    void collectivesOverPartOfTheWarpExchangeTheRightValues() {
        Tensor a = data.tensor(DType.F32, 1, 32);
        try (DeviceTensor in = DeviceTensor.of(emu, a); DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, 32)) {
            for (EmuDriver.Schedule schedule : EmuDriver.Schedule.values()) {
                emu.setSchedule(schedule, 5, false);
                emu.launch(fn("selftest_partial_collectives"), Dim3.of(1), Dim3.of(32), 0, 0, inOut(in, out));
                float[] b = new float[32], c = new float[32];
                for (int l = 0; l < 32; l++) {
                    b[l] = (float) a.getFlat(l) + (float) a.getFlat(l ^ 2);
                }
                for (int l = 0; l < 32; l++) {
                    c[l] = l >= 16 ? b[l] + b[l ^ 1] : b[l];
                }
                Tensor got = out.toHost();
                for (int l = 0; l < 32; l++) {
                    assertEquals(c[l] + c[l ^ 16], got.getFlat(l), schedule + ": out[" + l + "]");
                }
            }
        } finally {
            emu.setSchedule(EmuDriver.Schedule.ROUND_ROBIN, 0, false);
        }
    }

    /** A plain reset of a counter others increment atomically needs a barrier: atomics commute only with atomics. */
    @Test
    void aPlainWriteUnorderedWithAtomicsIsARace() {
        try (DeviceTensor out = DeviceTensor.allocate(emu, DType.I32, 1)) {
            for (EmuDriver.Schedule schedule : new EmuDriver.Schedule[] {EmuDriver.Schedule.ROUND_ROBIN, EmuDriver.Schedule.REVERSE}) {
                emu.setSchedule(schedule, 0, false);
                reported("selftest_counter_reset_unordered", Dim3.of(1), Dim3.of(64), 0, new KernelArgs().pointer(out.pointer()).i32(0),
                        "race on a static shared array", "atomically", "selftest.cu:");
                emu.launch(fn("selftest_counter_reset_unordered"), Dim3.of(1), Dim3.of(64), 0, 0, new KernelArgs().pointer(out.pointer()).i32(1));
                assertEquals(64, out.toHost().getFlat(0), schedule.toString());
            }
            reported("selftest_global_counter_reset_unordered", Dim3.of(4), Dim3.of(32), 0, new KernelArgs().pointer(out.pointer()),
                    "race on global memory", "another block, no grid sync between", "atomically");
        } finally {
            emu.setSchedule(EmuDriver.Schedule.ROUND_ROBIN, 0, false);
        }
    }

    /** A cp.async reads its source until its thread waits: another thread's write to the source in that window races. */
    @Test
    void aCpAsyncSourceWrittenBeforeTheWaitIsARace() {
        try (DeviceTensor in = DeviceTensor.of(emu, data.tensor(DType.F32, 1, 32)); DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, 32)) {
            reported("selftest_cp_async_source_overwritten", Dim3.of(1), Dim3.of(32), 64, inOut(in, out).i32(0),
                    "write-after-read race on global memory", "thread 1 writes", "thread 0 read", "selftest.cu:");
            for (int mode = 1; mode <= 2; mode++) {
                try (DeviceTensor fresh = DeviceTensor.of(emu, data.tensor(DType.F32, 1, 32))) {
                    emu.launch(fn("selftest_cp_async_source_overwritten"), Dim3.of(1), Dim3.of(32), 64, 0, inOut(fresh, out).i32(mode));
                    assertEquals(fresh.toHost().getFlat(1), out.toHost().getFlat(5), "mode " + mode + ": the copy landed before buf was read");
                }
            }
        }
    }

    /** Clean twins: own byte flags rewritten around a shuffle; many readers ordered before a write; one helper under two masks. */
    @Test
    void orderedAccessesAndHelperCollectivesAreNoError() {
        try (DeviceTensor in = DeviceTensor.of(emu, data.tensor(DType.F32, 1, 32)); DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, 32)) {
            for (EmuDriver.Schedule schedule : EmuDriver.Schedule.values()) {
                emu.setSchedule(schedule, 3, false);
                emu.launch(fn("selftest_own_byte_flags"), Dim3.of(1), Dim3.of(32), 0, 0, new KernelArgs().pointer(out.pointer()));
                Tensor flags = out.toHost();
                for (int l = 0; l < 32; l++) {
                    assertEquals(1.0, flags.getFlat(l), schedule + ": flag " + l);
                }
                emu.launch(fn("selftest_many_readers_then_a_write"), Dim3.of(1), Dim3.of(32), 0, 0, inOut(in, out));
                Tensor read = out.toHost();
                for (int l = 0; l < 4; l++) {
                    assertEquals(in.toHost().getFlat(0), read.getFlat(l), schedule + ": read " + l);
                }
                emu.launch(fn("selftest_helper_under_two_masks"), Dim3.of(1), Dim3.of(32), 0, 0, new KernelArgs().pointer(out.pointer()));
                Tensor v = out.toHost();
                for (int l = 0; l < 32; l++) {
                    assertEquals(l < 4 ? 3.0 : l, v.getFlat(l), schedule + ": lane " + l);
                }
            }
        } finally {
            emu.setSchedule(EmuDriver.Schedule.ROUND_ROBIN, 0, false);
        }
    }

    /** With the checks off, collectives still meet by line and mask: partial-mask kernels run the same. */
    @Test
    void partialCollectivesRunWithTheChecksOff() {
        emu.setChecking(false);
        try {
            collectivesOverPartOfTheWarpExchangeTheRightValues();
        } finally {
            emu.setChecking(true);
        }
    }

    /** A thread's own write to the source of a cp.async it has not waited for, and a cp.async from shared memory, are reported. */
    @Test
    void cpAsyncSourcesAreChecked() {
        try (DeviceTensor in = DeviceTensor.of(emu, data.tensor(DType.F32, 1, 32)); DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, 32)) {
            double first = in.toHost().getFlat(0);
            reported("selftest_cp_async_source_written_by_its_thread", Dim3.of(1), Dim3.of(32), 64, inOut(in, out).i32(0),
                    "thread 0 writes 4 bytes", "the source of a cp.async it has not waited for", "selftest.cu:");
            reported("selftest_cp_async_from_shared", Dim3.of(1), Dim3.of(32), 64, inOut(in, out).i32(0),
                    "a cp.async from shared memory", "must be global memory", "selftest.cu:");
            emu.launch(fn("selftest_cp_async_from_shared"), Dim3.of(1), Dim3.of(32), 64, 0, inOut(in, out).i32(1));
            assertEquals(first, out.toHost().getFlat(0));
            assertEquals(1.0, out.toHost().getFlat(1), "staging[7], written by thread 7 before the barrier");
            emu.launch(fn("selftest_cp_async_source_written_by_its_thread"), Dim3.of(1), Dim3.of(32), 64, 0, inOut(in, out).i32(1));
            assertEquals(first, out.toHost().getFlat(0), "written after the wait, the copy read the source first");
        }
    }

    /** An overrun of one static array lands in the gap before the next, not in it. */
    @Test
    void anOverrunOfAStaticArrayIsReported() {
        try (DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, 16)) {
            reported("selftest_static_array_overrun", Dim3.of(1), Dim3.of(16), 0, new KernelArgs().pointer(out.pointer()),
                    "thread 0 writes 4 bytes of shared memory", "outside the dynamic shared memory (0 bytes) and every static shared array");
        }
    }

    /** A __syncthreads orders a block's own accesses only: another block's atomic after it still races with the read before it. */
    @Test
    void aBarrierDoesNotOrderAccessesOfOtherBlocks() {
        try (DeviceTensor g = DeviceTensor.allocate(emu, DType.F32, 1); DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, 1)) {
            reported("selftest_read_then_atomics_of_other_blocks", Dim3.of(2), Dim3.of(32), 0,
                    new KernelArgs().pointer(g.pointer()).pointer(out.pointer()), "race on global memory", "block 0 thread 1 read it at selftest.cu:",
                    "no grid sync between");
            emu.memset(g.pointer(), 0, 4);
            emu.launch(fn("selftest_read_then_atomics_of_other_blocks"), Dim3.of(1), Dim3.of(32), 0, 0,
                    new KernelArgs().pointer(g.pointer()).pointer(out.pointer()));
            assertEquals(1.0, g.toHost().getFlat(0), "one block: the barrier orders the read before the add");
        }
    }

    /** Atomics after a read that a __syncwarp orders are no race (a float atomicAdd loads, then compares and swaps). */
    @Test
    void atomicsAfterAnOrderedReadAreNoRace() {
        try (DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, 2)) {
            emu.launch(fn("selftest_atomics_after_an_ordered_read"), Dim3.of(1), Dim3.of(32), 0, 0, new KernelArgs().pointer(out.pointer()));
            assertEquals(0.0, out.toHost().getFlat(0));
            assertEquals(3.0, out.toHost().getFlat(1));
        }
    }

    /** The same buggy kernels run silently with the checks off: the checks, not luck, find them. */
    @Test
    void theChecksCanBeTurnedOff() {
        try (DeviceTensor out = DeviceTensor.allocate(emu, DType.F32, 1)) {
            emu.setChecking(false);
            emu.launch(fn("selftest_blocks_write_one_word"), Dim3.of(3), Dim3.of(32), 0, 0, new KernelArgs().pointer(out.pointer()));
        } finally {
            emu.setChecking(true);
        }
    }
}
