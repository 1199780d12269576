package dev.seqkernels.gpu;

import dev.seqkernels.Backend;
import dev.seqkernels.SeqkException;

/** The checks every device entry point (DeviceAttention, DeviceRecurrent, DeviceMultiHeadAttention) makes, written once. */
final class DeviceArguments {
    private DeviceArguments() {
    }

    /** The op's backend as a GPU backend, or an InvalidConfig naming the op and where it runs instead. */
    static GpuBackend gpuBackend(String op, Backend backend) {
        if (!(backend instanceof GpuBackend gpu)) {
            throw new SeqkException.InvalidConfig(op + ": device tensors need the op on a GPU backend (emu, panama or jcuda);"
                    + " this one runs on " + backend.name());
        }
        return gpu;
    }

    /** A required device tensor: given, open, and memory of the op's driver. */
    static void check(String op, String name, DeviceTensor t, GpuBackend backend) {
        if (t == null) {
            throw new SeqkException.ShapeMismatch(op + ": argument '" + name + "' is required");
        }
        if (t.isClosed()) {
            throw new SeqkException.TensorClosed(op + ": argument '" + name + "' " + t + " is closed");
        }
        if (t.driver() != backend.driver()) {
            String there = t.driver().name();
            String here = backend.driver().name();
            throw new SeqkException.InvalidConfig(op + ": argument '" + name + "' lives on " + (there.equals(here)
                    ? "another " + there + " driver object than the op's (a device tensor belongs to the Driver that allocated"
                      + " or wrapped it: make it through the op's backend's driver)"
                    : there + ", but the op runs on " + here + " (device tensors do not move between bindings)"));
        }
    }

    /** An optional gradient: when given, checked as {@link #check} does, and shaped and typed like {@code of} (named {@code ofName}). */
    static void like(String op, String name, DeviceTensor t, DeviceTensor of, String ofName, GpuBackend backend) {
        if (t == null) {
            return;
        }
        check(op, name, t, backend);
        if (!java.util.Arrays.equals(t.shape(), of.shape()) || t.dtype() != of.dtype()) {
            throw new SeqkException.ShapeMismatch(op + ": argument '" + name + "' is " + t.dtype() + java.util.Arrays.toString(t.shape())
                    + ", expected " + ofName + "'s " + of.dtype() + java.util.Arrays.toString(of.shape()));
        }
    }
}
