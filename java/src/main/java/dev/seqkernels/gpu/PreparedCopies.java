package dev.seqkernels.gpu;

import dev.seqkernels.Backend;
import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.Tensor;

import java.util.HashMap;
import java.util.Map;
import java.util.function.ToLongFunction;

/**
 * A GPU backend's copies of an op's parameters: an F32 copy of each, by parameter name, and for
 * some a copy in a 16-bit dtype (W_ih, W_hh and W_hr of a 16-bit recurrent op, every parameter of
 * a 16-bit multi-head attention: their GEMMs multiply 16-bit operands on tensor cores). Both are exact conversions of the op-dtype values, so an
 * update writes the F32 copy from the values and derives the 16-bit one from it. Closing frees them.
 */
final class PreparedCopies implements Backend.PreparedParams {
    private final Driver driver;
    private final Object owner;
    private final DeviceCasts casts;
    private final DeviceScope scope;
    private final Map<String, DeviceTensor> f32 = new HashMap<>();
    private final Map<String, DeviceTensor> narrow = new HashMap<>();

    /** owner: the GPU path that made them (calls refuse copies made by another); utilFunction: cuda/util.cu's kernels by name. */
    PreparedCopies(Driver driver, Object owner, ToLongFunction<String> utilFunction) {
        this.driver = driver;
        this.owner = owner;
        this.casts = new DeviceCasts(driver, utilFunction);
        this.scope = new DeviceScope(driver);
    }

    Object owner() {
        return owner;
    }

    /** Uploads parameter {@code name}'s F32 copy. */
    DeviceTensor putF32(String name, Tensor values) {
        DeviceTensor t = scope.upload(values, DType.F32);
        f32.put(name, t);
        return t;
    }

    /** Uploads parameter {@code name}'s copy in a 16-bit dtype too. */
    void putNarrow(String name, Tensor values, DType dtype) {
        narrow.put(name, scope.upload(values, dtype));
    }

    /** The copy of {@code name} in {@code dtype}, or null when there is none. */
    DeviceTensor get(String name, DType dtype) {
        return dtype == DType.F32 ? f32.get(name) : narrow.get(name) != null && narrow.get(name).dtype() == dtype ? narrow.get(name) : null;
    }

    @Override
    public void update(String name, Tensor values) {
        DeviceTensor master = master(name);
        try (Tensor converted = values.to(DType.F32)) {
            master.copyFrom(converted);
        }
        DeviceTensor n = narrow.get(name);
        if (n != null) {
            try (Tensor converted = values.to(n.dtype())) {
                n.copyFrom(converted);
            }
        }
    }

    @Override
    public void update(String name, DeviceTensor values, long stream) {
        if (values.driver() != driver) {
            throw new SeqkException.InvalidConfig("prepared weights: the values of '" + name + "' are device memory of another driver ("
                    + values.driver().name() + ", the weights are on " + driver.name() + ")");
        }
        DeviceTensor master = master(name);
        casts.gather(values, master, stream);
        DeviceTensor copy = narrow.get(name);
        if (copy != null) {
            casts.fromF32(master, copy, stream);
        }
    }

    private DeviceTensor master(String name) {
        DeviceTensor t = f32.get(name);
        if (t == null) {
            throw new IllegalStateException("prepared weights hold no copy of " + name + ": prepare() and update() disagree");
        }
        return t;
    }

    @Override
    public void close() {
        scope.close();
    }
}
