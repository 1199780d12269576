package dev.seqkernels.io;

import com.google.protobuf.DynamicMessage;
import dev.seqkernels.Backends;
import dev.seqkernels.Compare;
import dev.seqkernels.DType;
import dev.seqkernels.Tensor;
import dev.seqkernels.io.onnx.OnnxProto;
import dev.seqkernels.io.onnx.OnnxRecurrent;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * ONNX's own node tests for LSTM, GRU and RNN (Debian's libonnx-testdata, installed by
 * tools/install-test-deps.sh, which ./seqk test runs): every test data set of every such node test
 * runs through our ops on the CPU reference and on the GPU path (emulator), and matches ONNX's
 * expected float32 outputs.
 */
class OnnxConformanceTest {
    static final Path NODE_TESTS = Path.of("/usr/share/libonnx-testdata/data/node");

    static List<Path> recurrentNodeTests() throws IOException {
        assertTrue(Files.isDirectory(NODE_TESTS), NODE_TESTS + " is missing: install Debian's libonnx-testdata "
                + "(tools/install-test-deps.sh does it; ./seqk test runs that)");
        try (Stream<Path> s = Files.list(NODE_TESTS)) {
            return s.filter(p -> p.getFileName().toString().matches("test_(lstm|gru|rnn|simple_rnn)_.*")).sorted().toList();
        }
    }

    @Test
    void allRecurrentNodeTestsArePresent() throws IOException {
        // libonnx-testdata 1.12: 4 LSTM, 4 GRU, 1 RNN (seq_length) and 3 simple RNN node tests.
        List<Path> found = recurrentNodeTests();
        assertEquals(12, found.size(), () -> "found " + found);
    }

    static java.util.stream.Stream<org.junit.jupiter.params.provider.Arguments> testsAndBackends() throws IOException {
        return recurrentNodeTests().stream().flatMap(t -> java.util.stream.Stream.of("cpu", "emu")
                .map(b -> org.junit.jupiter.params.provider.Arguments.of(t, b)));
    }

    @ParameterizedTest(name = "{0} on {1}")
    @MethodSource("testsAndBackends")
    void matchesOnnxExpectedOutputs(Path testDir, String backend) throws IOException {
        DynamicMessage model = OnnxProto.parse(OnnxProto.MODEL, Files.readAllBytes(testDir.resolve("model.onnx")));
        DynamicMessage graph = (DynamicMessage) OnnxProto.get(model, "graph");
        List<DynamicMessage> nodes = OnnxProto.messages(graph, "node");
        assertEquals(1, nodes.size(), "a node test has one node");
        List<String> inputs = names(graph, "input");
        List<String> outputs = names(graph, "output");
        assertTrue(!outputs.isEmpty(), testDir + ": the graph declares no outputs to compare");
        List<Path> dataSets;
        try (Stream<Path> s = Files.list(testDir)) {
            dataSets = s.filter(p -> p.getFileName().toString().startsWith("test_data_set_")).sorted().toList();
        }
        assertTrue(!dataSets.isEmpty(), testDir + " has no test data set");
        for (Path set : dataSets) {
            Map<String, Tensor> values = new HashMap<>();
            for (int i = 0; i < inputs.size(); i++) {
                values.put(inputs.get(i), readTensor(set.resolve("input_" + i + ".pb")));
            }
            Map<String, Tensor> actual = OnnxRecurrent.run(nodes.get(0), values, Backends.byName(backend));
            for (int i = 0; i < outputs.size(); i++) {
                Tensor expected = readTensor(set.resolve("output_" + i + ".pb"));
                Tensor got = actual.get(outputs.get(i));
                String what = testDir.getFileName() + "/" + set.getFileName() + " output " + outputs.get(i) + " on " + backend;
                assertTrue(got != null, what + " was not produced");
                assertArrayEquals(expected.shape(), got.shape(), what + " shape");
                Compare.Result r = Compare.compare(got.toDoubleArray(), expected.toDoubleArray(), Compare.tolerance(DType.F32));
                assertTrue(r.passes(Compare.tolerance(DType.F32)), () -> what + ": " + r);
            }
        }
    }

    private static List<String> names(DynamicMessage graph, String field) {
        List<String> out = new ArrayList<>();
        for (DynamicMessage v : OnnxProto.messages(graph, field)) {
            out.add((String) OnnxProto.get(v, "name"));
        }
        return out;
    }

    private static Tensor readTensor(Path pb) throws IOException {
        return OnnxProto.toTensor(OnnxProto.parse(OnnxProto.TENSOR, Files.readAllBytes(pb)));
    }
}
