package dev.seqkernels.cli;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

class MainTest {
    private final ByteArrayOutputStream out = new ByteArrayOutputStream();
    private final ByteArrayOutputStream err = new ByteArrayOutputStream();

    private int run(String... args) {
        return Main.run(args, new PrintStream(out, true), new PrintStream(err, true));
    }

    @Test
    void goldenRunsEveryCommittedCase() {
        assertEquals(0, run("golden", "--backend", "cpu"), err::toString);
        assertTrue(out.toString().contains("28 passed, 0 failed"), out::toString);
    }

    /** In 16 bits the table says which judge it applies and shows the share of the 2x rule's allowance each case used. */
    @Test
    void goldenIn16BitsJudgesByTheTwoTimesRule() {
        assertEquals(0, run("golden", "--backend", "cpu", "--dtype", "BF16"), err::toString);
        String table = out.toString();
        assertTrue(table.lines().findFirst().orElse("").contains("judged by the 2x rule against cpu-same-precision"), table);
        assertTrue(table.contains(" used ") && table.contains("28 passed, 0 failed"), table);
        String lstm = table.lines().filter(l -> l.endsWith("lstm_odd_T97_H37.safetensors")).findFirst().orElseThrow();
        assertTrue(lstm.matches("PASS .* 0\\.\\d\\d +lstm_odd_T97_H37\\.safetensors"), lstm);
        out.reset();
        assertEquals(0, run("golden", "--backend", "cpu", "--dtype", "F32"));
        assertFalse(out.toString().contains("2x rule") || out.toString().contains(" used "), out::toString);
    }

    @Test
    void goldenExitsOneOnAFailure(@TempDir Path dir) throws Exception {
        Path broken = dir.resolve("broken.safetensors");
        Files.write(broken, new byte[]{1, 2, 3});
        assertEquals(1, run("golden", broken.toString()));
        assertTrue(out.toString().contains("FAIL") && out.toString().contains("0 passed, 1 failed"), out::toString);
    }

    @Test
    void usageErrorsExitTwo() {
        assertEquals(2, run("frobnicate"));
        assertEquals(2, run("golden", "--backend", "nope"));
        assertTrue(err.toString().contains("unknown backend 'nope'"), err::toString);
        assertEquals(2, run("golden", "--dtype", "I64"));
        assertEquals(2, run("golden", "/no/such/dir"));
    }

    @Test
    void infoListsBackendsAndReasons() {
        assertEquals(0, run("info"));
        String s = out.toString();
        assertTrue(s.contains("auto selects: " + dev.seqkernels.Backends.byName("auto").name()) && s.contains("panama")
                && s.contains("jcuda") && s.contains("emu"), s);
    }

    private static final List<String> COMMANDS = List.of("info", "golden", "parity", "bench", "jmh", "report", "dist", "test");

    @Test
    void everyCommandAnswersHelpWithItsUsageAlone() {
        for (String command : COMMANDS) {
            for (String flag : List.of("--help", "-h")) {
                out.reset();
                err.reset();
                assertEquals(0, run(command, flag), () -> command + " " + flag + ": " + err);
                String s = out.toString();
                assertTrue(s.startsWith("usage: seqk\n  " + command), () -> command + " " + flag + " printed: " + s);
                for (String other : COMMANDS) {
                    assertTrue(other.equals(command) || !s.contains("\n  " + other + " "), () -> command + " " + flag
                            + " printed another command's usage: " + s);
                }
                assertEquals("", err.toString(), command + " " + flag);
            }
        }
        out.reset();
        assertEquals(0, run("golden", "--backend", "cpu", "--help"));
        assertFalse(out.toString().contains("passed"), "--help ran nothing: " + out);
    }

    @Test
    void theOverviewListsEveryCommandAndTheVersionIsOneLine() {
        assertEquals(0, run("--help"));
        for (String command : COMMANDS) {
            assertTrue(out.toString().contains("\n  " + command + " "), () -> command + " missing from: " + out);
        }
        out.reset();
        assertEquals(0, run("--version"));
        assertTrue(out.toString().matches("seqkernels \\S.*\\R"), out::toString);
        assertEquals(2, run());
        assertTrue(err.toString().startsWith("usage: seqk"), "no command: the usage on stderr");
    }

    /** A usage error is exactly one line on stderr, exit 2, and names what was wrong. */
    private void oneLineError(String mention, String... args) {
        out.reset();
        err.reset();
        assertEquals(2, run(args), () -> String.join(" ", args) + ": " + out + err);
        String e = err.toString();
        assertEquals(1, e.lines().count(), () -> String.join(" ", args) + ": not one line: " + e);
        assertTrue(e.contains(mention), () -> String.join(" ", args) + ": '" + e.strip() + "' does not name " + mention);
    }

    @Test
    void usageErrorsAreOneLineNamingTheFlag() {
        oneLineError("frobnicate", "frobnicate");
        oneLineError("--bogus", "info", "--bogus");
        oneLineError("--bogus", "golden", "--bogus");
        oneLineError("--bogus", "parity", "--bogus");
        oneLineError("--bogus", "bench", "--bogus");
        oneLineError("--seed", "parity", "--seed", "abc");
        oneLineError("abc", "parity", "--seed", "abc");
        oneLineError("--backend needs a value", "golden", "--backend");
        oneLineError("./seqk dist", "dist");
    }

    @Test
    void goldenRefusesF64OnAGpuBackendUpFront() {
        assumeTrue(dev.seqkernels.gpu.emu.EmuDriver.libraryPresent(), "the emulator library is not built");
        oneLineError("F64", "golden", "--backend", "emu", "--dtype", "F64");
        assertFalse(out.toString().contains("FAIL"), out::toString);
    }

    @Test
    void infoPrintsTheSummaryAndTheKernelTableOnRequest() {
        assertEquals(0, run("info"));
        String summary = out.toString();
        assertTrue(summary.lines().findFirst().orElse("").startsWith("seqkernels "), summary);
        assertFalse(summary.contains(" regs "), "no per-kernel table without --kernels: " + summary);
        out.reset();
        assertEquals(0, run("info", "--kernels"));
        assumeTrue(dev.seqkernels.gpu.KernelReport.load().built(), "kernels not built (no nvcc): no table to show");
        assertTrue(out.toString().contains(" regs "), out::toString);
        assertTrue(out.toString().startsWith(summary.lines().findFirst().orElseThrow()), "the summary comes first");
        for (String kernel : List.of("attn_fwd_tc64_bf16 ", "attn_fwd_tc64_nobias_bf16 ", "attn_fwd_decode_tc128_bf16 ",
                "attn_bwd_dq_tc64_bf16 ", "attn_bwd_dkdv_tc128_nobias_bf16 ")) {
            String tc = out.toString().lines().filter(l -> l.contains(kernel)).findFirst().orElseThrow();
            assertTrue(tc.matches(".* main loop: \\d+ mma, \\d+\\.\\d PTX/mma; ldmatrix \\d\\.\\d\\d wavefronts/matrix \\(emu\\)"), tc);
        }
        String v1 = out.toString().lines().filter(l -> l.contains("attn_fwd_bf16 ")).findFirst().orElseThrow();
        assertFalse(v1.contains("main loop"), "a SIMT kernel has no mma: " + v1);
    }

    /**
     * The launcher's test summary (tools/test-summary.awk) on a canned Maven log: executions,
     * their totals, every [ERROR] line and the outcome reach the console; INFO lines and the
     * tests' own output do not.
     */
    @Test
    void theTestSummaryKeepsTotalsAndErrorsOnly() throws Exception {
        String log = """
                [INFO] Scanning for projects...
                [INFO] --- surefire:3.2.5:test (default-test) @ seqkernels ---
                [INFO] Running dev.seqkernels.FooTest
                a test's own output
                WARNING: sun.misc.Unsafe::objectFieldOffset has been called
                [ERROR] Tests run: 3, Failures: 1, Errors: 0, Skipped: 0, Time elapsed: 0.1 s <<< FAILURE! -- in dev.seqkernels.FooTest
                [INFO] Results:
                [INFO]
                [ERROR] Failures:
                [ERROR]   FooTest.bar:12 expected: <1> but was: <2>
                [ERROR] Tests run: 3, Failures: 1, Errors: 0, Skipped: 0
                [INFO] --- surefire:3.2.5:test (standin-panama) @ seqkernels ---
                [INFO] Results:
                [WARNING] Tests run: 5, Failures: 0, Errors: 0, Skipped: 2
                [INFO] BUILD FAILURE
                [INFO] Total time:  01:02 min
                """;
        Process p = new ProcessBuilder("awk", "-f", Main.projectRoot().resolve("tools/test-summary.awk").toString())
                .redirectErrorStream(true).start();
        try (var in = p.getOutputStream()) {
            in.write(log.getBytes(java.nio.charset.StandardCharsets.UTF_8));
        }
        String summary = new String(p.getInputStream().readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
        assertEquals(0, p.waitFor(), summary);
        assertEquals("""
                seqk test: seqkernels default-test ...
                [ERROR] Tests run: 3, Failures: 1, Errors: 0, Skipped: 0, Time elapsed: 0.1 s <<< FAILURE! -- in dev.seqkernels.FooTest
                [ERROR] Failures:
                [ERROR]   FooTest.bar:12 expected: <1> but was: <2>
                seqk test: seqkernels default-test: Tests run: 3, Failures: 1, Errors: 0, Skipped: 0
                seqk test: seqkernels standin-panama ...
                seqk test: seqkernels standin-panama: Tests run: 5, Failures: 0, Errors: 0, Skipped: 2
                seqk test: BUILD FAILURE
                seqk test: Total time:  01:02 min
                """, summary);
    }
}
