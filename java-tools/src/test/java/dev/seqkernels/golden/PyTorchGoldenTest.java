package dev.seqkernels.golden;

import dev.seqkernels.Backends;
import dev.seqkernels.DType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Set;
import java.util.stream.Collectors;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Every committed PyTorch golden, outputs and gradients, on the CPU reference at relative L2 <= 1e-10. */
class PyTorchGoldenTest {
    static Path casesDir() {
        return Path.of(System.getProperty("seqkernels.root", "..")).resolve("tools/golden/cases");
    }

    static List<Path> cases() throws IOException {
        try (Stream<Path> s = Files.list(casesDir())) {
            return s.filter(p -> p.toString().endsWith(".safetensors")).sorted().toList();
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void passesOnCpu(Path file) {
        GoldenCase.Outcome o = GoldenCase.run(file, Backends.byName("cpu"), DType.F64);
        assertTrue(o.pass(), () -> file.getFileName() + " on cpu/F64: " + o.reason());
        assertTrue(o.outRelL2() <= 1e-10 && o.gradRelL2() <= 1e-10, () -> file.getFileName() + ": " + o);
    }

    /** Every golden through the GPU path on the emulator, stored in F32 (GPU paths have no F64). */
    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void passesOnTheEmulator(Path file) {
        GoldenCase.Outcome o = GoldenCase.run(file, Backends.byName("emu"), DType.F32);
        assertTrue(o.pass(), () -> file.getFileName() + " on emu/F32: " + o.reason());
    }

    static Stream<Arguments> casesIn16Bits() throws IOException {
        return cases().stream().flatMap(f -> Stream.of(Arguments.of(f, DType.BF16), Arguments.of(f, DType.F16)));
    }

    /**
     * Every golden through the GPU path on the emulator in 16 bits (the tensor-core attention
     * kernels among them), judged as DESIGN.md section 6 says: the dtype's relative L2 limit against
     * PyTorch's values, and FlashAttention's 2x rule against the same-precision CPU reference.
     */
    @ParameterizedTest(name = "{0} {1}")
    @MethodSource("casesIn16Bits")
    void passesOnTheEmulatorIn16BitsByTheTwoTimesRule(Path file, DType dtype) {
        GoldenCase.Outcome o = GoldenCase.run(file, Backends.byName("emu"), dtype);
        assertTrue(o.pass(), () -> file.getFileName() + " on emu/" + dtype + ": " + o.reason());
    }

    @Test
    void everyOpIsCovered() throws IOException {
        Set<String> ops = cases().stream().map(p -> GoldenCase.run(p, Backends.byName("cpu"), DType.F64).op())
                .collect(Collectors.toSet());
        assertEquals(Set.of("rnn", "lstm", "gru", "rnn_cell", "lstm_cell", "gru_cell", "sdpa", "mha"), ops);
    }
}
