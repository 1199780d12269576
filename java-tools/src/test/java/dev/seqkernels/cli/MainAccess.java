package dev.seqkernels.cli;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;

/** The command line for tests in other packages: runs `seqk ARGS` in this JVM and returns what it printed. */
public final class MainAccess {
    private MainAccess() {
    }

    public static String run(String... args) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        int rc = Main.run(args, new PrintStream(out, true), new PrintStream(out, true));
        return "exit " + rc + "\n" + out;
    }
}
