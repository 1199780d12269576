package dev.seqkernels.io;

import com.google.protobuf.ByteString;
import com.google.protobuf.Descriptors;
import com.google.protobuf.DynamicMessage;
import dev.seqkernels.Backends;
import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.Tensor;
import dev.seqkernels.cli.MainAccess;
import dev.seqkernels.golden.GoldenCase;
import dev.seqkernels.io.onnx.OnnxProto;
import dev.seqkernels.io.onnx.OnnxRecurrent;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Broken and hostile inputs (issue 16, "Files"): each is one clear {@link SeqkException} naming the
 * file or argument, the tensor and the reason, never an OutOfMemoryError, a wrapped size or a bare
 * NullPointerException; the golden runner turns each into one FAIL line.
 */
class BadFileTest {
    @TempDir
    Path dir;

    /** A safetensors file with {@code header} as its JSON header (length field {@code headerLength}) and {@code data}. */
    private Path safetensors(String name, long headerLength, String header, byte[] data) throws IOException {
        byte[] h = header.getBytes(StandardCharsets.UTF_8);
        ByteBuffer b = ByteBuffer.allocate(8 + h.length + data.length).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(headerLength).put(h).put(data);
        Path file = dir.resolve(name);
        Files.write(file, b.array());
        return file;
    }

    private Path safetensors(String name, String header, byte[] data) throws IOException {
        return safetensors(name, header.getBytes(StandardCharsets.UTF_8).length, header, data);
    }

    private static void assertClearError(Executable call, String... words) {
        assertClearError(SeqkException.class, call, words);
    }

    private static void assertClearError(Class<? extends SeqkException> type, Executable call, String... words) {
        SeqkException e = assertThrows(type, call);
        for (String w : words) {
            assertTrue(e.getMessage().contains(w), () -> "'" + w + "' missing from: " + e.getMessage());
        }
    }

    private static void assertBadFile(Path file, String... words) {
        assertClearError(SeqkException.MalformedFile.class, () -> Safetensors.read(file).close(), words);
        assertClearError(SeqkException.MalformedFile.class, () -> Safetensors.read(file).close(),
                file.getFileName().toString());
    }

    // ---- safetensors ----

    @Test
    void aThreeGigabyteFileIsMappedNotReadWhole() throws IOException {
        long big = 3L << 30;
        String header = "{\"small\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]},"
                + "\"big\":{\"dtype\":\"F32\",\"shape\":[" + (big / 4) + "],\"data_offsets\":[16," + (16 + big) + "]}}";
        byte[] small = new byte[16];
        ByteBuffer.wrap(small).order(ByteOrder.LITTLE_ENDIAN).putDouble(1.5).putDouble(-2.25);
        Path file = safetensors("big.safetensors", header, small);
        long headerEnd = Files.size(file);
        try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "rw")) {
            // Sparse: the 3 GB of zeros take no disk and are never touched by this test.
            f.setLength(headerEnd + big);
        }
        try (Safetensors.Contents c = Safetensors.read(file)) {
            assertArrayEquals(new double[]{1.5, -2.25}, c.require("small").toDoubleArray());
            assertArrayEquals(new long[]{big / 4}, c.require("big").shape());
            assertEquals(0.0, c.require("big").getFlat(big / 4 - 1));
        }
    }

    @Test
    void aHeaderLengthNear2To63IsRejectedNotWrapped() throws IOException {
        Path file = safetensors("hlen.safetensors", Long.MAX_VALUE - 3, "{}", new byte[0]);
        assertBadFile(file, "header length", String.valueOf(Long.MAX_VALUE - 3));
    }

    @Test
    void offsetsNear2To63AreRejectedNotWrapped() throws IOException {
        // end - begin wraps to exactly the 8 bytes the shape needs.
        String header = "{\"t\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[9223372036854775800,9223372036854775808]}}";
        assertBadFile(safetensors("offsets.safetensors", header, new byte[8]), "'t'", "data_offsets");
        // Both fit a long, but dataStart + end wraps negative.
        header = "{\"t\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[9223372036854775799,9223372036854775807]}}";
        assertBadFile(safetensors("offsets2.safetensors", header, new byte[8]), "'t'", "data_offsets");
    }

    @Test
    void missingDataOffsetsAreAClearError() throws IOException {
        String header = "{\"t\":{\"dtype\":\"F64\",\"shape\":[1]}}";
        assertBadFile(safetensors("nooffsets.safetensors", header, new byte[8]), "'t'", "data_offsets");
    }

    @Test
    void aShapeWhoseProductOverflowsIsAClearError() throws IOException {
        String header = "{\"t\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,0]}}";
        assertBadFile(safetensors("overflow.safetensors", header, new byte[0]), "'t'", "shape");
    }

    @Test
    void headerFieldsOfTheWrongJsonTypeAreClearErrors() throws IOException {
        assertBadFile(safetensors("shape.safetensors", "{\"t\":{\"dtype\":\"F64\",\"shape\":\"[1]\",\"data_offsets\":[0,8]}}",
                new byte[8]), "'t'", "shape");
        assertBadFile(safetensors("dim.safetensors", "{\"t\":{\"dtype\":\"F64\",\"shape\":[1.5],\"data_offsets\":[0,8]}}",
                new byte[8]), "'t'", "shape");
        assertBadFile(safetensors("dtype.safetensors", "{\"t\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,8]}}",
                new byte[8]), "'t'", "dtype");
        assertBadFile(safetensors("meta.safetensors", "{\"__metadata__\":{\"config\":{\"op\":\"lstm\"}}}", new byte[0]),
                "__metadata__", "config");
        assertBadFile(safetensors("array.safetensors", "[1,2]", new byte[0]), "JSON object");
    }

    @Test
    void i32WrittenIsI32Read() throws IOException {
        Path file = dir.resolve("i32.safetensors");
        try (Tensor t = Tensor.of(DType.I32, new double[]{3, -7, 2147483647}, 3)) {
            Safetensors.write(file, Map.of("lengths", t), Map.of());
        }
        try (Safetensors.Contents c = Safetensors.read(file)) {
            assertEquals(DType.I32, c.require("lengths").dtype());
            assertArrayEquals(new double[]{3, -7, 2147483647}, c.require("lengths").toDoubleArray());
        }
    }

    // ---- golden config ----

    private Path golden(String config) throws IOException {
        Path file = dir.resolve("case.safetensors");
        Safetensors.write(file, Map.of(), Map.of("config", config));
        return file;
    }

    @Test
    void aConfigFieldOfTheWrongJsonTypeIsOneFail() throws IOException {
        GoldenCase.Outcome o = GoldenCase.run(golden("{\"op\":\"lstm\",\"input_size\":\"4\",\"hidden_size\":3}"),
                Backends.byName("cpu"), DType.F64);
        assertFalse(o.pass());
        assertTrue(o.reason().contains("'input_size'") && o.reason().contains("integer"), o.reason());
        o = GoldenCase.run(golden("{\"op\":\"rnn\",\"input_size\":4,\"hidden_size\":3,\"lengths\":[4294967297]}"),
                Backends.byName("cpu"), DType.F64);
        assertTrue(o.reason().contains("'lengths'"), o.reason());
        o = GoldenCase.run(golden("{\"op\":\"mha\",\"embed_dim\":4,\"num_heads\":2,\"bias\":\"yes\"}"),
                Backends.byName("cpu"), DType.F64);
        assertTrue(o.reason().contains("'bias'") && o.reason().contains("boolean"), o.reason());
    }

    @Test
    void aMissingConfigFieldIsOneFail() throws IOException {
        GoldenCase.Outcome o = GoldenCase.run(golden("{\"op\":\"gru\",\"hidden_size\":3}"), Backends.byName("cpu"), DType.F64);
        assertFalse(o.pass());
        assertTrue(o.reason().contains("'input_size'") && o.reason().contains("missing"), o.reason());
    }

    @Test
    void theCliPrintsOneFailLinePerBadFileAndGoesOn() throws IOException {
        Path sub = Files.createDirectory(dir.resolve("cases"));
        Files.move(safetensors("a.safetensors", Long.MAX_VALUE - 3, "{}", new byte[0]), sub.resolve("a.safetensors"));
        Files.move(safetensors("b.safetensors", "{\"t\":{\"dtype\":\"F64\",\"shape\":[1]}}", new byte[8]),
                sub.resolve("b.safetensors"));
        String out = MainAccess.run("golden", "--backend", "cpu", sub.toString());
        assertTrue(out.startsWith("exit 1"), out);
        assertTrue(out.lines().anyMatch(l -> l.startsWith("FAIL") && l.contains("a.safetensors") && l.contains("header length")), out);
        assertTrue(out.lines().anyMatch(l -> l.startsWith("FAIL") && l.contains("b.safetensors") && l.contains("data_offsets")), out);
        assertTrue(out.contains("0 passed, 2 failed"), out);
    }

    // ---- ONNX ----

    private static DynamicMessage onnxTensor(String name, int dataType, List<Long> dims, byte[] raw, List<Float> floats) {
        Descriptors.Descriptor t = OnnxProto.TENSOR;
        DynamicMessage.Builder b = DynamicMessage.newBuilder(t)
                .setField(t.findFieldByName("name"), name)
                .setField(t.findFieldByName("data_type"), dataType)
                .setField(t.findFieldByName("dims"), dims);
        if (raw != null) {
            b.setField(t.findFieldByName("raw_data"), ByteString.copyFrom(raw));
        }
        if (floats != null) {
            b.setField(t.findFieldByName("float_data"), floats);
        }
        return b.build();
    }

    @Test
    void onnxTensorWithShortDataIsAClearError() {
        assertClearError(() -> OnnxProto.toTensor(onnxTensor("W", 1, List.of(2L, 3L), new byte[8], null)), "'W'", "raw");
        assertClearError(() -> OnnxProto.toTensor(onnxTensor("R", 1, List.of(2L, 3L), null, List.of(1f, 2f))),
                "'R'", "float_data");
    }

    @Test
    void onnxTensorWithNegativeOrHugeDimsIsAClearError() {
        assertClearError(() -> OnnxProto.toTensor(onnxTensor("W", 1, List.of(-1L, 3L), new byte[0], null)), "'W'", "-1");
        assertClearError(() -> OnnxProto.toTensor(onnxTensor("B", 1, List.of(1L << 31), new byte[0], null)),
                "'B'", "2147483648");
    }

    @Test
    void onnxParseOfNullNamesTheArgument() {
        assertClearError(() -> OnnxProto.parse(OnnxProto.MODEL, null), "bytes");
        assertClearError(() -> OnnxProto.parse(null, new byte[0]), "type");
    }

    private static DynamicMessage lstmNode(long hiddenSize) {
        Descriptors.Descriptor a = OnnxProto.ATTRIBUTE;
        DynamicMessage hidden = DynamicMessage.newBuilder(a).setField(a.findFieldByName("name"), "hidden_size")
                .setField(a.findFieldByName("i"), hiddenSize).build();
        Descriptors.Descriptor n = OnnxProto.NODE;
        return DynamicMessage.newBuilder(n).setField(n.findFieldByName("op_type"), "LSTM")
                .setField(n.findFieldByName("input"), List.of("X", "W", "R"))
                .setField(n.findFieldByName("output"), List.of("Y"))
                .setField(n.findFieldByName("attribute"), List.of(hidden)).build();
    }

    private static Map<String, Tensor> lstmValues(long[] wShape) {
        int h = 3;
        int in = 2;
        return Map.of("X", Tensor.allocate(DType.F32, 1, 1, in), "W", Tensor.allocate(DType.F32, wShape),
                "R", Tensor.allocate(DType.F32, 1, 4 * h, h));
    }

    @Test
    void onnxHiddenSizeBeyondIntIsRejectedNotTruncated() {
        long hidden = (1L << 32) + 3;
        assertClearError(() -> OnnxRecurrent.run(lstmNode(hidden), lstmValues(new long[]{1, 12, 2}), Backends.byName("cpu")),
                "'hidden_size'", String.valueOf(hidden));
    }

    @Test
    void onnxWeightsOfTheWrongRankAreAClearError() {
        assertClearError(() -> OnnxRecurrent.run(lstmNode(3), lstmValues(new long[]{12, 2}), Backends.byName("cpu")),
                "'W'", "rank");
    }
}
