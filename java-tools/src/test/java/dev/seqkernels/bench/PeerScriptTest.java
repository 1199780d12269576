package dev.seqkernels.bench;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * bench/peers/torch_bench.py on the CPU (Debian's python3-torch, installed by
 * tools/install-test-deps.sh): it reads {@code seqk bench --list}, and what it writes is read by
 * {@code seqk bench --compare} and joins our rows case by case.
 */
class PeerScriptTest {
    private static final Path ROOT = Path.of(System.getProperty("seqkernels.root", ".."));
    private static final String PYTHON = "/usr/bin/python3";

    @Test
    void peerRowsJoinOursThroughCompare(@TempDir Path dir) throws Exception {
        assumeTrue(torchPresent(), "no PyTorch for " + PYTHON + " (tools/install-test-deps.sh installs python3-torch)");
        ByteArrayOutputStream listing = new ByteArrayOutputStream();
        PrintStream ps = new PrintStream(listing, true);
        assertEquals(0, BenchCommand.run(List.of("--suite", "smoke", "--filter", "F32", "--list"), ps, ps));
        Path cases = dir.resolve("cases.json");
        Files.writeString(cases, listing.toString());
        Path peers = dir.resolve("peers.json");
        Process p = new ProcessBuilder(PYTHON, ROOT.resolve("bench/peers/torch_bench.py").toString(), "--cases", cases.toString(),
                "--out", peers.toString(), "--device", "cpu", "--min-reps", "2").redirectErrorStream(true).start();
        String log = new String(p.getInputStream().readAllBytes());
        assertTrue(p.waitFor(120, TimeUnit.SECONDS), "torch_bench.py did not finish: " + log);
        assertEquals(0, p.exitValue(), log);

        BenchReport peer = BenchReport.read(peers);
        assertTrue(peer.binding().startsWith("torch "), peer::binding);
        assertTrue(peer.rows().stream().anyMatch(r -> r.impl().equals("torch-cpu") && r.timed()), log);
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        PrintStream o = new PrintStream(out, true);
        int rc = BenchCommand.run(List.of("--backend", "emu", "--suite", "smoke", "--filter", "F32", "--compare", peers.toString()),
                o, o);
        assertEquals(0, rc, out::toString);
        String text = out.toString();
        assertTrue(text.contains("fastest peer"), text);
        // Every F32 smoke case has a timed peer row on the CPU, so each appears in the comparison.
        for (String key : List.of("lstm T=3 B=2 I=8 H=8 F32 fwd", "lstm T=3 B=2 I=8 H=8 F32 fwd+bwd",
                "sdpa B=1 H=2 L=16 D=8 causal=1 F32 fwd", "mha B=1 L=8 E=16 H=2 causal=1 F32 fwd+bwd")) {
            assertTrue(text.lines().anyMatch(l -> l.startsWith(key) && l.contains("torch-") && l.endsWith("x")), key + "\n" + text);
        }
    }

    private static boolean torchPresent() throws Exception {
        if (!Files.isExecutable(Path.of(PYTHON))) {
            return false;
        }
        Process p = new ProcessBuilder(PYTHON, "-c", "import torch").redirectErrorStream(true).start();
        p.getInputStream().readAllBytes();
        return p.waitFor(60, TimeUnit.SECONDS) && p.exitValue() == 0;
    }
}
