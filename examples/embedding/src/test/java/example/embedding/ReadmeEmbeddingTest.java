package example.embedding;

import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The README's embedding example is this module's code: every line of the README's java block in
 * "Embedding it in a Java project" (comment-only lines aside) appears in EmbeddingExample.java, in
 * the same order, so the example the README shows is the one the build runs.
 */
class ReadmeEmbeddingTest {
    @Test
    void theReadmesExampleIsTheOneThatRuns() throws IOException {
        Path root = Path.of(System.getProperty("seqkernels.root", "../.."));
        List<String> readme = Files.readAllLines(root.resolve("README.md"));
        int section = readme.indexOf("## Embedding it in a Java project");
        assertTrue(section >= 0, "the README has its embedding section");
        int start = -1;
        for (int i = section; i < readme.size() && start < 0; i++) {
            if (readme.get(i).equals("```java")) {
                start = i + 1;
            }
        }
        assertTrue(start > 0, "the embedding section has a java block");
        List<String> shown = new ArrayList<>();
        for (int i = start; !readme.get(i).equals("```"); i++) {
            String line = readme.get(i).strip();
            if (!line.isEmpty() && !line.startsWith("//")) {
                shown.add(line);
            }
        }
        assertFalse(shown.isEmpty());
        List<String> source = Files.readAllLines(root.resolve("examples/embedding/src/main/java/example/embedding/EmbeddingExample.java"))
                .stream().map(String::strip).toList();
        int at = 0;
        for (String line : shown) {
            int found = source.subList(at, source.size()).indexOf(line);
            assertTrue(found >= 0, "README line not in EmbeddingExample.java (after line " + at + "): " + line);
            at += found + 1;
        }
    }
}
