package dev.seqkernels.bench;

import dev.seqkernels.DType;
import dev.seqkernels.Tensor;
import dev.seqkernels.gpu.CapturingDriver;
import dev.seqkernels.gpu.DeviceTensor;
import dev.seqkernels.gpu.Driver;
import dev.seqkernels.gpu.emu.EmuDriver;
import dev.seqkernels.gpu.kernels.RowSumKernel;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Optional;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The timing harness, its capture and replay, the floors' arithmetic, the JSON and the charts, on the emulator. */
class BenchTest {
    private final Driver emu = EmuDriver.instance();

    /** A replay re-issues the recorded launch: a poisoned output is computed again, and frees wait for close. */
    @Test
    void replayRecomputesAndFreesWaitForClose() {
        long before = emu.memoryInUse();
        Tensor x = Tensor.of(DType.F32, new double[]{1, 2, 3, 4, 5, 6}, 2, 3);
        float[] expected = {6, 15};
        try (CapturingDriver capture = new CapturingDriver(emu)) {
            DeviceTensor dx = DeviceTensor.of(capture, x);
            DeviceTensor out = DeviceTensor.allocate(capture, DType.F32, 2);
            new RowSumKernel(capture).sum(dx, out, 0);
            long outPointer = out.pointer();
            long inUse = emu.memoryInUse();
            dx.close();
            assertEquals(inUse, emu.memoryInUse(), "a free while recording is deferred");
            capture.stop();
            assertEquals(1, capture.launches());
            assertEquals(6 * 4, capture.hostCopyBytes(), "the upload of x, counted and not replayed");
            emu.memset(outPointer, 0xff, 8);
            capture.replay(0);
            Tensor back = Tensor.allocate(DType.F32, 2);
            emu.copyDeviceToHost(back.segment(), outPointer, 8);
            assertArrayEquals(new double[]{expected[0], expected[1]}, back.toDoubleArray());
            out.close();
        }
        assertEquals(before, emu.memoryInUse(), "close frees what the recorded work used");
    }

    @Test
    void replayingWhileRecordingIsRefused() {
        try (CapturingDriver capture = new CapturingDriver(emu)) {
            assertThrows(IllegalStateException.class, () -> capture.replay(0));
        }
    }

    /** The repetition policy on a GPU: few for slow cases, ten for the rest, more while cheap. */
    @Test
    void repetitionPolicyBoundsSlowCasesAndFillsTheBudgetForFastOnes() {
        Bench.Options gpu = new Bench.Options(3, 3, 10, 200, 300, 2000, 256L << 20);
        assertTrue(gpu.wantsMore(2, 9000), "always at least 3");
        assertTrue(!gpu.wantsMore(3, 2400), "3 repetitions of 800 ms are enough");
        assertTrue(gpu.wantsMore(5, 1000), "10 while under 2 s");
        assertTrue(gpu.wantsMore(10, 250), "more while under the 300 ms budget");
        assertTrue(!gpu.wantsMore(10, 400), "10 and over budget: done");
        assertTrue(!gpu.wantsMore(200, 1), "never above 200");
    }

    /** The suite's work counts, against the formulas written out by hand. */
    @Test
    void flopAndByteCountsFollowTheDocumentedFormulas() {
        BenchCase lstm = BenchSuite.recurrent("t", "lstm", 100, 8, 256, DType.BF16, "fwd");
        assertEquals(2.0 * 100 * 8 * (256 + 256) * 4 * 256, lstm.flops());
        double whh = 4.0 * 256 * 256 * 2;
        assertEquals(100 * whh + whh + 2.0 * 100 * 8 * 256 * 2, lstm.bytes());
        BenchCase lstmBoth = BenchSuite.recurrent("t", "lstm", 100, 8, 256, DType.BF16, "fwd+bwd");
        assertEquals(3 * lstm.flops(), lstmBoth.flops());
        BenchCase causal = BenchSuite.attention("t", 4, 16, 4096, 128, true, DType.F16, "fwd");
        assertEquals(4.0 * 4 * 16 * 4096 * 4096 * 128 / 2, causal.flops());
        assertEquals(3.5 * causal.flops(), BenchSuite.attention("t", 4, 16, 4096, 128, true, DType.F16, "fwd+bwd").flops());
        BenchCase decode = BenchSuite.decode("t", 2, 32, 8, 131072, 128, DType.BF16);
        assertEquals(2.0 * 2 * 8 * 131072 * 128 * 2 + 2.0 * 2 * 32 * 128 * 2, decode.bytes());
        BenchCase mha = BenchSuite.mha("t", 2, 4096, 2048, 16, true, DType.BF16, "fwd");
        double tokens = 2 * 4096;
        assertEquals(8 * tokens * 2048 * 2048 + 4.0 * 2 * 4096 * 4096 * 2048 / 2, mha.flops());
        assertEquals(4.0 * 2048 * 2048 * 2 + 10 * tokens * 2048 * 2, mha.bytes());
        BenchCase mhaBoth = BenchSuite.mha("t", 2, 4096, 2048, 16, true, DType.BF16, "fwd+bwd");
        assertEquals(3 * 8 * tokens * 2048 * 2048 + 3.5 * 4.0 * 2 * 4096 * 4096 * 2048 / 2, mhaBoth.flops());
        assertEquals(mha.bytes() + 4.0 * 2048 * 2048 * (2 + 4) + 20 * tokens * 2048 * 2, mhaBoth.bytes());
        assertEquals("mha B=2 L=4096 E=2048 H=16 causal=1 BF16 fwd", mha.key());
        assertEquals("lstm T=100 B=8 I=256 H=256 BF16 fwd", lstm.key());
    }

    @Test
    void suitesCoverTheIssuesGridsAndSkipOnlyWithAReason() {
        List<BenchCase> rnn = BenchSuite.cases("rnn");
        assertEquals(3 * 4 * 4 * 2 * 2 + 4 * 4 * 2 * 2 + 2 * 2 * 2 * 2 * 2, rnn.size(),
                "lstm: T x B x H x dtype x pass; gru at T=100; inference of both at T=100, B x H x dtype, plain and as one graph");
        assertEquals(16, rnn.stream().filter(c -> c.pass().equals("infer")).count());
        assertEquals(16, rnn.stream().filter(c -> c.pass().equals(BenchSuite.GRAPH_PASS)).count());
        assertTrue(rnn.stream().filter(c -> c.skip() != null).allMatch(c -> (long) c.get("T") * c.get("B") * c.get("H") > 1L << 27));
        List<BenchCase> attn = BenchSuite.cases("attn");
        assertEquals(6 * 2 * 2 * 3 * 2 + 4 + 2 * 2 * 2 * 3 * 2, attn.size(),
                "sdpa: L x D x causal x dtype x pass, decoding, mha: L x D x causal x dtype x pass");
        assertTrue(attn.stream().filter(c -> c.op().equals("sdpa")).allMatch(c -> c.get("B") * c.get("L") == 16384));
        assertTrue(attn.stream().filter(c -> c.op().equals("mha")).allMatch(c -> c.get("B") * c.get("L") == 8192 && c.get("E") == 2048));
        assertThrows(IllegalArgumentException.class, () -> BenchSuite.cases("nope"));
    }

    /**
     * Every smoke case is timed on the emulator, its statistics ordered and its floor the documented
     * maximum; recurrent rows say what a step costs and how the step loop ran.
     */
    @Test
    void smokeSuiteTimesEveryOpOnTheEmulator() {
        Bench bench = new Bench(emu, Bench.Options.forDriver(emu), Bench.Peaks.measure(emu));
        for (BenchCase c : BenchSuite.cases("smoke")) {
            BenchRow r = bench.run(c);
            assertTrue(r.timed(), () -> c.key() + ": " + r.note());
            assertTrue(r.reps() >= 2 && r.p10Ms() <= r.medianMs() && r.medianMs() <= r.p90Ms(), r::toString);
            double floor = Math.max(c.flops() / bench.peaks().flopsPerSecond(c.dtype()), c.bytes() / bench.peaks().bytesPerSecond()) * 1e3;
            assertEquals(floor, r.floorMs(), floor * 1e-12);
            if (c.op().equals("lstm") || c.op().equals("gru")) {
                String floorPerStep = String.format(java.util.Locale.ROOT, "%.4g MB at the floor", c.bytes() / c.get("T") / 1e6);
                assertTrue(r.note().contains(floorPerStep), () -> floorPerStep + " in " + r.note());
            }
            if (c.pass().equals(BenchSuite.GRAPH_PASS)) {  // the whole forward captured once: a call is one launch, counted
                assertTrue(r.note().startsWith("1 graph launch(es) and 0 other device call(s) per call"), r::note);
                continue;
            }
            assertTrue(r.note().contains("launches"), r::note);
            if (c.op().equals("lstm")) {  // F32 at batch 2: the persistent kernels (forward, and backward), no step loop
                String persistent = "0 graph launch(es) of 0 node(s), " + (c.pass().equals("fwd+bwd") ? 2 : 1) + " cooperative launch(es)";
                assertTrue(r.note().contains("; per step (" + c.pass() + "): ") && r.note().endsWith(persistent), () -> persistent + " in " + r.note());
            } else if (c.op().equals("gru")) {  // BF16, H = 8, batch 17: the fused step, one graph of the GEMM and one kernel per step
                assertTrue(r.note().endsWith("1 graph launch(es) of 2 node(s), 0 cooperative launch(es)"), r::note);
            } else {
                assertTrue(!r.note().contains("per step"), r::note);
            }
        }
    }

    @Test
    void aCaseThatCannotRunSaysWhyInsteadOfStoppingTheRun() {
        Bench bench = new Bench(emu, Bench.Options.forDriver(emu), Bench.Peaks.measure(emu));
        BenchCase huge = new BenchCase("t", "sdpa", Map.of("B", 1, "H", 1, "L", 8, "D", 300, "causal", 0), DType.F32, "fwd", 1, 1, null);
        BenchRow r = bench.run(huge);
        assertTrue(!r.timed() && r.note().startsWith("failed: "), r::note);
        BenchRow skipped = bench.run(BenchSuite.recurrent("t", "lstm", 1000, 256, 2048, DType.F32, "fwd"));
        assertTrue(!skipped.timed() && skipped.note().startsWith("skipped: "), skipped::note);
    }

    @Test
    void jsonRoundTripsAndComparisonTakesTheFastestPeer(@TempDir Path dir) throws Exception {
        BenchRow ours = row("k1", "seqkernels-emu", 2.0);
        BenchRow slowPeer = row("k1", "torch-sdpa-math", 8.0);
        BenchRow fastPeer = row("k1", "torch-sdpa-flash", 3.0);
        BenchRow untimedPeer = row("k1", "torch-sdpa-cudnn", 0.0);
        BenchReport mine = new BenchReport("dev", "emu", "2026-11-22", "seqk bench", null, List.of(ours, row("k2", "seqkernels-emu", 1)));
        Path file = dir.resolve("ours.json");
        mine.write(file);
        assertEquals(mine, BenchReport.read(file));
        List<BenchReport.Comparison> c = BenchReport.compare(mine.rows(), List.of(slowPeer, untimedPeer, fastPeer));
        assertEquals(1, c.size(), "k2 has no peer");
        assertEquals("torch-sdpa-flash", c.get(0).bestPeer().impl());
        assertEquals(1.5, c.get(0).speedup(), 1e-12);
        Files.writeString(dir.resolve("bad.json"), "{\"device\": \"x\"}");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> BenchReport.read(dir.resolve("bad.json")));
        assertTrue(e.getMessage().contains("no \"rows\""), e::getMessage);
    }

    @Test
    void chartsAreWrittenAsPngAndSvg(@TempDir Path dir) throws Exception {
        Bench bench = new Bench(emu, Bench.Options.forDriver(emu), Bench.Peaks.measure(emu));
        List<BenchRow> rows = BenchSuite.cases("smoke").stream().filter(c -> c.op().equals("sdpa")).map(bench::run).toList();
        BenchReport report = new BenchReport("dev", "emu", "2026-11-22", "seqk bench", bench.peaks(), rows);
        List<Path> files = BenchCharts.write(report, Optional.empty(), dir);
        assertTrue(files.contains(dir.resolve("roofline.png")) && files.contains(dir.resolve("roofline.svg")), files::toString);
        for (Path f : files) {
            byte[] head = Files.readAllBytes(f);
            if (f.toString().endsWith(".png")) {
                assertEquals((byte) 0x89, head[0]);
                assertEquals('P', head[1]);
            } else {
                assertTrue(new String(head).contains("<svg"), f::toString);
            }
        }
    }

    @Test
    void benchWithoutAGpuNamesTheEmulatorAndRefusesTheCpu() throws Exception {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        PrintStream ps = new PrintStream(out, true);
        IllegalArgumentException cpu = assertThrows(IllegalArgumentException.class,
                () -> BenchCommand.run(List.of("--backend", "cpu"), ps, ps));
        assertTrue(cpu.getMessage().contains("panama, jcuda or emu"), cpu::getMessage);
        IllegalArgumentException same = assertThrows(IllegalArgumentException.class,
                () -> BenchCommand.run(List.of("--backend", "cpu-same-precision"), ps, ps));
        assertTrue(same.getMessage().contains("panama, jcuda or emu"), same::getMessage);
        int rc = BenchCommand.run(List.of("--backend", "emu", "--suite", "smoke", "--filter", "decode"), ps, ps);
        assertEquals(0, rc, out::toString);
        assertTrue(out.toString().contains("decode B=1 H=4 Hkv=2 Lq=1 Lk=64 D=8 BF16 fwd"), out::toString);
        assertNotEquals(-1, out.toString().indexOf("peaks: bandwidth"));
    }

    private static BenchRow row(String key, String impl, double ms) {
        return new BenchRow(key, "sdpa", Map.of("L", 16), "F16", "fwd", impl, ms, ms, ms, ms > 0 ? 3 : 0, 1e9, 1e6, 0.5, "flops", "");
    }
}
