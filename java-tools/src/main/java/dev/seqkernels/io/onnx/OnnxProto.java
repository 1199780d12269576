package dev.seqkernels.io.onnx;

import com.google.protobuf.ByteString;
import com.google.protobuf.DescriptorProtos.DescriptorProto;
import com.google.protobuf.DescriptorProtos.FieldDescriptorProto;
import com.google.protobuf.DescriptorProtos.FieldDescriptorProto.Label;
import com.google.protobuf.DescriptorProtos.FieldDescriptorProto.Type;
import com.google.protobuf.DescriptorProtos.FileDescriptorProto;
import com.google.protobuf.Descriptors;
import com.google.protobuf.DynamicMessage;
import com.google.protobuf.InvalidProtocolBufferException;
import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.Tensor;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.List;

/**
 * Reads ONNX protobuf files with protobuf-java's {@link DynamicMessage}, over the part of ONNX's
 * schema (onnx.proto, proto2) that seqkernels needs: ModelProto, GraphProto, NodeProto,
 * AttributeProto, TensorProto, ValueInfoProto. Field numbers are ONNX's; fields not declared here
 * are kept as unknown fields and ignored.
 */
public final class OnnxProto {
    private static final Descriptors.FileDescriptor FILE = build();

    public static final Descriptors.Descriptor MODEL = FILE.findMessageTypeByName("ModelProto");
    public static final Descriptors.Descriptor GRAPH = FILE.findMessageTypeByName("GraphProto");
    public static final Descriptors.Descriptor NODE = FILE.findMessageTypeByName("NodeProto");
    public static final Descriptors.Descriptor ATTRIBUTE = FILE.findMessageTypeByName("AttributeProto");
    public static final Descriptors.Descriptor TENSOR = FILE.findMessageTypeByName("TensorProto");

    /** ONNX TensorProto.DataType values we read. */
    private static final int FLOAT = 1;
    private static final int INT32 = 6;
    private static final int INT64 = 7;
    private static final int DOUBLE = 11;

    /** The most elements a tensor read here may hold: its values pass through one double[]. */
    public static final long MAX_ELEMENTS = Integer.MAX_VALUE - 8;

    private OnnxProto() {
    }

    private static Descriptors.FileDescriptor build() {
        FileDescriptorProto file = FileDescriptorProto.newBuilder()
                .setName("seqkernels_onnx_subset.proto").setPackage("onnx").setSyntax("proto2")
                .addMessageType(message("ModelProto",
                        scalar("ir_version", 1, Type.TYPE_INT64),
                        nested("graph", 7, "GraphProto", false)))
                .addMessageType(message("GraphProto",
                        nested("node", 1, "NodeProto", true),
                        scalar("name", 2, Type.TYPE_STRING),
                        nested("initializer", 5, "TensorProto", true),
                        nested("input", 11, "ValueInfoProto", true),
                        nested("output", 12, "ValueInfoProto", true)))
                .addMessageType(message("NodeProto",
                        repeated("input", 1, Type.TYPE_STRING),
                        repeated("output", 2, Type.TYPE_STRING),
                        scalar("name", 3, Type.TYPE_STRING),
                        scalar("op_type", 4, Type.TYPE_STRING),
                        nested("attribute", 5, "AttributeProto", true),
                        scalar("domain", 7, Type.TYPE_STRING)))
                .addMessageType(message("AttributeProto",
                        scalar("name", 1, Type.TYPE_STRING),
                        scalar("f", 2, Type.TYPE_FLOAT),
                        scalar("i", 3, Type.TYPE_INT64),
                        scalar("s", 4, Type.TYPE_BYTES),
                        nested("t", 5, "TensorProto", false),
                        repeated("floats", 7, Type.TYPE_FLOAT),
                        repeated("ints", 8, Type.TYPE_INT64),
                        repeated("strings", 9, Type.TYPE_BYTES),
                        scalar("type", 20, Type.TYPE_INT32)))
                .addMessageType(message("TensorProto",
                        repeated("dims", 1, Type.TYPE_INT64),
                        scalar("data_type", 2, Type.TYPE_INT32),
                        repeated("float_data", 4, Type.TYPE_FLOAT),
                        repeated("int32_data", 5, Type.TYPE_INT32),
                        repeated("int64_data", 7, Type.TYPE_INT64),
                        scalar("name", 8, Type.TYPE_STRING),
                        scalar("raw_data", 9, Type.TYPE_BYTES),
                        repeated("double_data", 10, Type.TYPE_DOUBLE)))
                .addMessageType(message("ValueInfoProto",
                        scalar("name", 1, Type.TYPE_STRING)))
                .build();
        try {
            return Descriptors.FileDescriptor.buildFrom(file, new Descriptors.FileDescriptor[0]);
        } catch (Descriptors.DescriptorValidationException e) {
            throw new IllegalStateException("the ONNX schema subset is malformed", e);
        }
    }

    private static DescriptorProto message(String name, FieldDescriptorProto... fields) {
        return DescriptorProto.newBuilder().setName(name).addAllField(List.of(fields)).build();
    }

    private static FieldDescriptorProto scalar(String name, int number, Type type) {
        return FieldDescriptorProto.newBuilder().setName(name).setNumber(number).setType(type)
                .setLabel(Label.LABEL_OPTIONAL).build();
    }

    private static FieldDescriptorProto repeated(String name, int number, Type type) {
        return FieldDescriptorProto.newBuilder().setName(name).setNumber(number).setType(type)
                .setLabel(Label.LABEL_REPEATED).build();
    }

    private static FieldDescriptorProto nested(String name, int number, String typeName, boolean repeated) {
        return FieldDescriptorProto.newBuilder().setName(name).setNumber(number).setType(Type.TYPE_MESSAGE)
                .setTypeName(".onnx." + typeName).setLabel(repeated ? Label.LABEL_REPEATED : Label.LABEL_OPTIONAL).build();
    }

    public static DynamicMessage parse(Descriptors.Descriptor type, byte[] bytes) {
        if (type == null) {
            throw new SeqkException.ShapeMismatch("OnnxProto.parse: argument 'type' is required");
        }
        if (bytes == null) {
            throw new SeqkException.ShapeMismatch("OnnxProto.parse: argument 'bytes' is required");
        }
        try {
            return DynamicMessage.parseFrom(type, bytes);
        } catch (InvalidProtocolBufferException e) {
            throw new SeqkException.Unsupported("not a valid ONNX " + type.getName() + ": " + e.getMessage());
        }
    }

    public static Object get(DynamicMessage m, String field) {
        return m.getField(m.getDescriptorForType().findFieldByName(field));
    }

    @SuppressWarnings("unchecked")
    public static List<DynamicMessage> messages(DynamicMessage m, String field) {
        return (List<DynamicMessage>) get(m, field);
    }

    @SuppressWarnings("unchecked")
    public static List<String> strings(DynamicMessage m, String field) {
        return (List<String>) get(m, field);
    }

    /**
     * A TensorProto as a tensor: FLOAT -> F32, DOUBLE -> F64, INT32/INT64 -> I64. Its dims must be
     * non-negative and hold at most {@link #MAX_ELEMENTS} elements (one Java array), and its data
     * (raw_data, or else the typed list) must hold exactly that many elements.
     */
    public static Tensor toTensor(DynamicMessage t) {
        if (t == null) {
            throw new SeqkException.ShapeMismatch("OnnxProto.toTensor: argument 't' is required");
        }
        String name = (String) get(t, "name");
        @SuppressWarnings("unchecked")
        long[] dims = ((List<Long>) get(t, "dims")).stream().mapToLong(Long::longValue).toArray();
        for (long d : dims) {
            if (d < 0) {
                throw new SeqkException.ShapeMismatch("ONNX tensor '" + name + "' has a negative extent in dims "
                        + Arrays.toString(dims));
            }
        }
        long n;
        try {
            n = Tensor.numel(dims);
        } catch (SeqkException.ShapeMismatch overflow) {
            n = Long.MAX_VALUE;
        }
        if (n > MAX_ELEMENTS) {
            throw new SeqkException.Unsupported("ONNX tensor '" + name + "' with dims " + Arrays.toString(dims)
                    + " has more than the " + MAX_ELEMENTS + " elements this reader holds");
        }
        int type = (Integer) get(t, "data_type");
        DType dtype;
        int width;
        String listField;
        switch (type) {
            case FLOAT -> {
                dtype = DType.F32;
                width = 4;
                listField = "float_data";
            }
            case DOUBLE -> {
                dtype = DType.F64;
                width = 8;
                listField = "double_data";
            }
            case INT32 -> {
                dtype = DType.I64;
                width = 4;
                listField = "int32_data";
            }
            case INT64 -> {
                dtype = DType.I64;
                width = 8;
                listField = "int64_data";
            }
            default -> throw new SeqkException.Unsupported("ONNX tensor '" + name + "' has data_type " + type
                    + "; supported: FLOAT, DOUBLE, INT32, INT64");
        }
        byte[] raw = ((ByteString) get(t, "raw_data")).toByteArray();
        List<?> list = (List<?>) get(t, listField);
        double[] values = new double[(int) n];
        if (raw.length > 0) {
            if (raw.length != n * width) {
                throw new SeqkException.ShapeMismatch("ONNX tensor '" + name + "' has " + raw.length
                        + " raw_data bytes, expected " + n * width + " for dims " + Arrays.toString(dims));
            }
            ByteBuffer le = ByteBuffer.wrap(raw).order(ByteOrder.LITTLE_ENDIAN);
            for (int i = 0; i < n; i++) {
                values[i] = switch (type) {
                    case FLOAT -> le.getFloat(4 * i);
                    case DOUBLE -> le.getDouble(8 * i);
                    case INT32 -> le.getInt(4 * i);
                    default -> le.getLong(8 * i);
                };
            }
        } else {
            if (list.size() != n) {
                throw new SeqkException.ShapeMismatch("ONNX tensor '" + name + "' has no raw_data and " + list.size()
                        + " " + listField + " values, expected " + n + " for dims " + Arrays.toString(dims));
            }
            for (int i = 0; i < n; i++) {
                values[i] = ((Number) list.get(i)).doubleValue();
            }
        }
        return Tensor.of(dtype, values, dims);
    }
}
