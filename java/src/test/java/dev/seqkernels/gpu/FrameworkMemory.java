package dev.seqkernels.gpu;

import dev.seqkernels.Tensor;

import java.util.ArrayList;
import java.util.List;

/**
 * A framework's device memory in tests: raw allocations filled from host tensors by plain driver
 * calls and wrapped without a copy, freed together by {@link #free}.
 */
final class FrameworkMemory {
    private final Driver driver;
    private final List<Long> allocations = new ArrayList<>();

    FrameworkMemory(Driver driver) {
        this.driver = driver;
    }

    private long upload(Tensor contiguous) {
        long bytes = contiguous.numel() * contiguous.dtype().byteSize();
        long pointer = driver.malloc(bytes);
        allocations.add(pointer);
        driver.copyHostToDevice(pointer, contiguous.segment(), bytes);
        return pointer;
    }

    /** The host tensor's values in its own layout, seen through {@code through}'s driver. */
    DeviceTensor contiguous(Driver through, Tensor host) {
        return DeviceTensor.wrap(through, upload(host), host.dtype(), host.shape(), host.strides());
    }

    /** The host tensor's values stored with its two leading dimensions swapped and seen through strides in its shape (a strided input). */
    DeviceTensor swapped(Driver through, Tensor host) {
        try (Tensor swapped = host.permute(1, 0, 2).contiguous()) {
            long[] s = swapped.strides();
            return DeviceTensor.wrap(through, upload(swapped), host.dtype(), host.shape(), new long[]{s[1], s[0], s[2]});
        }
    }

    void free() {
        allocations.forEach(driver::free);
        allocations.clear();
    }
}
