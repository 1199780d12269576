package dev.seqkernels.io;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.Tensor;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The safetensors format: an 8-byte little-endian header length, a JSON header naming each tensor's
 * dtype, shape and byte range, then the raw little-endian data. {@code __metadata__} is a map of
 * strings.
 */
public final class Safetensors {
    private static final ObjectMapper JSON = new ObjectMapper();

    private Safetensors() {
    }

    /** A file's tensors (owned copies, in file order) and its string metadata. */
    public record Contents(Map<String, Tensor> tensors, Map<String, String> metadata) implements AutoCloseable {
        public Tensor require(String name) {
            Tensor t = tensors.get(name);
            if (t == null) {
                throw new SeqkException.ShapeMismatch("safetensors: tensor '" + name + "' is missing");
            }
            return t;
        }

        @Override
        public void close() {
            tensors.values().forEach(Tensor::close);
        }
    }

    public static Contents read(Path file) throws IOException {
        byte[] bytes = Files.readAllBytes(file);
        if (bytes.length < 8) {
            throw new IOException(file + ": too short for a safetensors file");
        }
        long headerLen = ByteBuffer.wrap(bytes, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        if (headerLen < 2 || 8 + headerLen > bytes.length) {
            throw new IOException(file + ": header length " + headerLen + " does not fit a file of " + bytes.length + " bytes");
        }
        JsonNode header = JSON.readTree(new String(bytes, 8, (int) headerLen, StandardCharsets.UTF_8));
        long dataStart = 8 + headerLen;
        Map<String, Tensor> tensors = new LinkedHashMap<>();
        Map<String, String> metadata = new LinkedHashMap<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = header.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            if (e.getKey().equals("__metadata__")) {
                e.getValue().fields().forEachRemaining(m -> metadata.put(m.getKey(), m.getValue().asText()));
                continue;
            }
            JsonNode info = e.getValue();
            DType dtype = dtypeOf(file, e.getKey(), info.path("dtype").asText());
            JsonNode shapeNode = info.path("shape");
            long[] shape = new long[shapeNode.size()];
            for (int i = 0; i < shape.length; i++) {
                shape[i] = shapeNode.get(i).asLong();
            }
            long begin = info.path("data_offsets").get(0).asLong();
            long end = info.path("data_offsets").get(1).asLong();
            long expected = Tensor.numel(shape) * dtype.byteSize();
            if (end - begin != expected || dataStart + end > bytes.length || begin < 0) {
                throw new IOException(file + ": tensor '" + e.getKey() + "' byte range [" + begin + ", " + end
                        + ") does not match " + dtype + java.util.Arrays.toString(shape) + " or the file size");
            }
            Tensor t = Tensor.allocate(dtype, shape);
            MemorySegment.copy(MemorySegment.ofArray(bytes), ValueLayout.JAVA_BYTE, dataStart + begin,
                    t.segment(), ValueLayout.JAVA_BYTE, 0, expected);
            tensors.put(e.getKey(), t);
        }
        return new Contents(tensors, metadata);
    }

    /** Writes the tensors (any strides; stored contiguous) and metadata. */
    public static void write(Path file, Map<String, Tensor> tensors, Map<String, String> metadata) throws IOException {
        ObjectNode header = JSON.createObjectNode();
        if (!metadata.isEmpty()) {
            ObjectNode meta = header.putObject("__metadata__");
            metadata.forEach(meta::put);
        }
        long offset = 0;
        for (var e : tensors.entrySet()) {
            Tensor t = e.getValue();
            ObjectNode info = header.putObject(e.getKey());
            info.put("dtype", t.dtype().name().equals("BOOL") ? "BOOL" : t.dtype().name());
            var shape = info.putArray("shape");
            for (long s : t.shape()) {
                shape.add(s);
            }
            long size = t.numel() * t.dtype().byteSize();
            info.putArray("data_offsets").add(offset).add(offset + size);
            offset += size;
        }
        byte[] headerBytes = JSON.writeValueAsBytes(header);
        int pad = (8 - headerBytes.length % 8) % 8;
        ByteBuffer out = ByteBuffer.allocate((int) (8 + headerBytes.length + pad + offset)).order(ByteOrder.LITTLE_ENDIAN);
        out.putLong(headerBytes.length + pad).put(headerBytes);
        for (int i = 0; i < pad; i++) {
            out.put((byte) ' ');
        }
        for (Tensor t : tensors.values()) {
            try (Tensor contiguous = Tensor.allocate(t.dtype(), t.shape())) {
                contiguous.copyFrom(t.toDoubleArray());
                out.put(contiguous.segment().asSlice(0, t.numel() * t.dtype().byteSize()).asByteBuffer());
            }
        }
        Files.write(file, out.array());
    }

    private static DType dtypeOf(Path file, String name, String s) throws IOException {
        return switch (s) {
            case "F64" -> DType.F64;
            case "F32" -> DType.F32;
            case "F16" -> DType.F16;
            case "BF16" -> DType.BF16;
            case "I64" -> DType.I64;
            case "BOOL" -> DType.BOOL;
            default -> throw new IOException(file + ": tensor '" + name + "' has dtype " + s
                    + ", expected one of F64, F32, F16, BF16, I64, BOOL");
        };
    }
}
