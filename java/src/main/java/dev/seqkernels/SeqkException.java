package dev.seqkernels;

/** Base of every error seqkernels throws on purpose; the message names the argument at fault. */
public class SeqkException extends RuntimeException {
    public SeqkException(String message) {
        super(message);
    }

    public SeqkException(String message, Throwable cause) {
        super(message, cause);
    }

    /** A tensor argument has the wrong rank or extents. */
    public static final class ShapeMismatch extends SeqkException {
        public ShapeMismatch(String message) {
            super(message);
        }
    }

    /** A tensor argument has a dtype the op does not accept, or dtypes of related tensors differ. */
    public static final class DTypeMismatch extends SeqkException {
        public DTypeMismatch(String message) {
            super(message);
        }
    }

    /** An index or element position outside a tensor's shape. */
    public static final class IndexOutOfRange extends SeqkException {
        public IndexOutOfRange(String message) {
            super(message);
        }
    }

    /** A tensor was used after {@link Tensor#close()}. */
    public static final class TensorClosed extends SeqkException {
        public TensorClosed(String message) {
            super(message);
        }
    }

    /** A configuration value is out of range, non-finite, or inconsistent with another. */
    public static final class InvalidConfig extends SeqkException {
        public InvalidConfig(String message) {
            super(message);
        }
    }

    /** A backend name that is not known, or a known backend that is not available here. */
    public static final class BackendUnavailable extends SeqkException {
        public BackendUnavailable(String message) {
            super(message);
        }
    }

    /**
     * A file (or a file's config) is malformed: sizes or offsets that overflow or lie outside it, a
     * missing field, or a field of the wrong JSON type. The message names the file, the tensor or
     * field, and the reason.
     */
    public static final class MalformedFile extends SeqkException {
        public MalformedFile(String message) {
            super(message);
        }
    }

    /** A feature the chosen backend or file format does not support. */
    public static final class Unsupported extends SeqkException {
        public Unsupported(String message) {
            super(message);
        }
    }
}
