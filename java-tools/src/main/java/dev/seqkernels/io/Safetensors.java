package dev.seqkernels.io;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.Tensor;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The safetensors format: an 8-byte little-endian header length, a JSON header naming each tensor's
 * dtype, shape and byte range, then the raw little-endian data. {@code __metadata__} is a map of
 * strings.
 *
 * <p>{@link #read} maps the file instead of loading it: a file of any size costs address space, not
 * heap, and only the pages of the tensors actually read are touched. Every size and offset in the
 * header is checked without overflow against the file; a malformed file is one
 * {@link SeqkException.MalformedFile} naming the file, the tensor and the reason.
 */
public final class Safetensors {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final ValueLayout.OfLong LENGTH = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    /** The reference implementation's limit (safetensors' MAX_HEADER_SIZE); the header is the one part read onto the heap. */
    private static final long MAX_HEADER_BYTES = 100_000_000;
    /** A ByteBuffer view holds at most 2 GiB, so tensor data is written in slices of 1 GiB. */
    private static final long WRITE_CHUNK = 1 << 30;

    private Safetensors() {
    }

    /**
     * A file's tensors (in file order) and its string metadata. The tensors are read-only views of
     * the file's mapping, valid until {@link #close()}; copy one (e.g. {@link Tensor#to}) to change it
     * or to keep it longer.
     */
    public static final class Contents implements AutoCloseable {
        private final Path file;
        private final Map<String, Tensor> tensors;
        private final Map<String, String> metadata;
        private final Arena mapping;

        private Contents(Path file, Map<String, Tensor> tensors, Map<String, String> metadata, Arena mapping) {
            this.file = file;
            this.tensors = tensors;
            this.metadata = metadata;
            this.mapping = mapping;
        }

        public Map<String, Tensor> tensors() {
            return tensors;
        }

        public Map<String, String> metadata() {
            return metadata;
        }

        public Tensor require(String name) {
            Tensor t = tensors.get(name);
            if (t == null) {
                throw new SeqkException.ShapeMismatch(file + ": tensor '" + name + "' is missing");
            }
            return t;
        }

        /** Unmaps the file; its tensors become unusable. */
        @Override
        public void close() {
            tensors.values().forEach(Tensor::close);
            mapping.close();
        }
    }

    public static Contents read(Path file) throws IOException {
        Arena mapping = Arena.ofShared();
        try {
            MemorySegment bytes;
            try (FileChannel channel = FileChannel.open(file, StandardOpenOption.READ)) {
                bytes = channel.map(FileChannel.MapMode.READ_ONLY, 0, channel.size(), mapping);
            }
            return parse(file, bytes, mapping);
        } catch (IOException | RuntimeException e) {
            mapping.close();
            throw e;
        }
    }

    private static Contents parse(Path file, MemorySegment bytes, Arena mapping) {
        long size = bytes.byteSize();
        if (size < 8) {
            throw bad(file, "is " + size + " bytes, too short for the 8-byte header length");
        }
        long headerLen = bytes.get(LENGTH, 0);
        // Compared with size - 8, not 8 + headerLen with size: a length near 2^63 would wrap.
        if (headerLen < 2 || headerLen > size - 8 || headerLen > MAX_HEADER_BYTES) {
            throw bad(file, "header length " + headerLen + " does not fit a file of " + size
                    + " bytes (at most " + MAX_HEADER_BYTES + ")");
        }
        JsonNode header;
        try {
            header = JSON.readTree(bytes.asSlice(8, headerLen).toArray(ValueLayout.JAVA_BYTE));
        } catch (IOException e) {
            throw bad(file, "header is not valid JSON: " + e.getMessage());
        }
        if (header == null || !header.isObject()) {
            throw bad(file, "header is not a JSON object");
        }
        long dataStart = 8 + headerLen;
        long dataLen = size - dataStart;
        Map<String, Tensor> tensors = new LinkedHashMap<>();
        Map<String, String> metadata = new LinkedHashMap<>();
        for (Map.Entry<String, JsonNode> e : header.properties()) {
            String name = e.getKey();
            JsonNode info = e.getValue();
            if (name.equals("__metadata__")) {
                if (!info.isObject()) {
                    throw bad(file, "__metadata__ is not a JSON object");
                }
                for (Map.Entry<String, JsonNode> kv : info.properties()) {
                    if (!kv.getValue().isTextual()) {
                        throw bad(file, "__metadata__ '" + kv.getKey() + "' is " + kv.getValue().getNodeType()
                                + ", not a string");
                    }
                    metadata.put(kv.getKey(), kv.getValue().textValue());
                }
                continue;
            }
            if (!info.isObject()) {
                throw badTensor(file, name, "entry is " + info.getNodeType() + ", not a JSON object");
            }
            JsonNode dtypeNode = info.path("dtype");
            if (!dtypeNode.isTextual()) {
                throw badTensor(file, name, "dtype is " + dtypeNode.getNodeType() + ", not a string");
            }
            DType dtype = dtypeOf(file, name, dtypeNode.textValue());
            long[] shape = longs(file, name, info.path("shape"), "shape", -1);
            long expected;
            try {
                expected = Tensor.byteSize(dtype, shape);
            } catch (SeqkException.ShapeMismatch overflow) {
                throw badTensor(file, name, "shape " + Arrays.toString(shape) + " of " + dtype
                        + " holds more bytes than a long counts");
            }
            long[] offsets = longs(file, name, info.path("data_offsets"), "data_offsets", 2);
            long begin = offsets[0];
            long end = offsets[1];
            if (begin > end || end > dataLen || end - begin != expected) {
                throw badTensor(file, name, "data_offsets [" + begin + ", " + end + ") do not hold " + dtype
                        + Arrays.toString(shape) + " (" + expected + " bytes) within the " + dataLen + " data bytes");
            }
            tensors.put(name, Tensor.wrap(bytes.asSlice(dataStart + begin, expected), dtype, shape));
        }
        return new Contents(file, tensors, metadata, mapping);
    }

    /** A JSON array of non-negative integers that fit a long ({@code count} of them, or any number when -1). */
    private static long[] longs(Path file, String tensor, JsonNode node, String field, int count) {
        if (node.isMissingNode()) {
            throw badTensor(file, tensor, field + " is missing");
        }
        if (!node.isArray() || (count >= 0 && node.size() != count)) {
            throw badTensor(file, tensor, field + " is " + node + ", not an array of "
                    + (count >= 0 ? count + " " : "") + "non-negative integers");
        }
        long[] r = new long[node.size()];
        for (int i = 0; i < r.length; i++) {
            JsonNode v = node.get(i);
            if (!v.isIntegralNumber() || !v.canConvertToLong() || v.longValue() < 0) {
                throw badTensor(file, tensor, field + " " + node + ": element " + i + " is not a non-negative integer below 2^63");
            }
            r[i] = v.longValue();
        }
        return r;
    }

    private static SeqkException.MalformedFile bad(Path file, String reason) {
        return new SeqkException.MalformedFile(file + ": " + reason);
    }

    private static SeqkException.MalformedFile badTensor(Path file, String tensor, String reason) {
        return new SeqkException.MalformedFile(file + ": tensor '" + tensor + "': " + reason);
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
            // Our DType names are safetensors' dtype names.
            info.put("dtype", t.dtype().name());
            var shape = info.putArray("shape");
            for (long s : t.shape()) {
                shape.add(s);
            }
            long size = Tensor.byteSize(t.dtype(), t.shape());
            info.putArray("data_offsets").add(offset).add(offset + size);
            offset += size;
        }
        byte[] headerBytes = JSON.writeValueAsBytes(header);
        // Padded with spaces so that the data starts 8-aligned, as the reference writer does.
        int pad = (8 - headerBytes.length % 8) % 8;
        ByteBuffer head = ByteBuffer.allocate(8 + headerBytes.length + pad).order(ByteOrder.LITTLE_ENDIAN);
        head.putLong(headerBytes.length + pad).put(headerBytes);
        while (head.hasRemaining()) {
            head.put((byte) ' ');
        }
        // Streamed tensor by tensor: the file may exceed the 2 GiB a byte array or ByteBuffer holds.
        try (FileChannel out = FileChannel.open(file, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                StandardOpenOption.TRUNCATE_EXISTING)) {
            writeFully(out, head.flip());
            for (Tensor t : tensors.values()) {
                try (Tensor contiguous = Tensor.allocate(t.dtype(), t.shape())) {
                    contiguous.copyFrom(t.toDoubleArray());
                    MemorySegment data = contiguous.segment().asSlice(0, t.numel() * t.dtype().byteSize());
                    for (long at = 0; at < data.byteSize(); at += WRITE_CHUNK) {
                        writeFully(out, data.asSlice(at, Math.min(WRITE_CHUNK, data.byteSize() - at)).asByteBuffer());
                    }
                }
            }
        }
    }

    private static void writeFully(FileChannel out, ByteBuffer b) throws IOException {
        while (b.hasRemaining()) {
            out.write(b);
        }
    }

    private static DType dtypeOf(Path file, String name, String s) {
        return switch (s) {
            case "F64" -> DType.F64;
            case "F32" -> DType.F32;
            case "F16" -> DType.F16;
            case "BF16" -> DType.BF16;
            case "I64" -> DType.I64;
            case "I32" -> DType.I32;
            case "BOOL" -> DType.BOOL;
            default -> throw new SeqkException.Unsupported(file + ": tensor '" + name + "' has dtype " + s
                    + ", expected one of F64, F32, F16, BF16, I64, I32, BOOL");
        };
    }
}
