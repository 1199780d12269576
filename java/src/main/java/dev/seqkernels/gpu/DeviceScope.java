package dev.seqkernels.gpu;

import dev.seqkernels.DType;
import dev.seqkernels.Tensor;

import java.util.ArrayList;
import java.util.List;

/** Device tensors that live and die together (one op call's buffers); closing the scope closes them all. */
public final class DeviceScope implements AutoCloseable {
    private final Driver driver;
    private final List<DeviceTensor> tensors = new ArrayList<>();

    public DeviceScope(Driver driver) {
        this.driver = driver;
    }

    public Driver driver() {
        return driver;
    }

    public DeviceTensor allocate(DType dtype, long... shape) {
        return keep(DeviceTensor.allocate(driver, dtype, shape));
    }

    /** Device memory set to zero bits (0.0 in every floating dtype). */
    public DeviceTensor zeros(DType dtype, long... shape) {
        DeviceTensor t = allocate(dtype, shape);
        driver.memset(t.pointer(), 0, Math.max(1, t.byteSize()));
        return t;
    }

    public DeviceTensor upload(Tensor host) {
        return keep(DeviceTensor.of(driver, host));
    }

    private DeviceTensor keep(DeviceTensor t) {
        tensors.add(t);
        return t;
    }

    @Override
    public void close() {
        for (int i = tensors.size() - 1; i >= 0; i--) {
            tensors.get(i).close();
        }
        tensors.clear();
    }
}
