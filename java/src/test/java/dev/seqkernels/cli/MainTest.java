package dev.seqkernels.cli;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

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
}
