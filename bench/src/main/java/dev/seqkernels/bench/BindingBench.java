package dev.seqkernels.bench;

import dev.seqkernels.Backends;
import dev.seqkernels.gpu.Dim3;
import dev.seqkernels.gpu.Driver;
import dev.seqkernels.gpu.GpuBackend;
import dev.seqkernels.gpu.KernelArgs;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

import java.util.concurrent.TimeUnit;

/**
 * The Java side of one kernel launch through each binding, without kernel time: cuda/util.cu's
 * {@code launch_probe} does nothing, on one block of one thread.
 *
 * <ul>
 * <li>{@code packArguments}: building the seven-argument {@link KernelArgs} alone (the baseline:
 *     what every launch pays before the binding is involved).
 * <li>{@code launch}: packing plus the binding's launch call, not waiting for the kernel. On a GPU
 *     the launch is asynchronous, so this is host cost as long as the GPU retires the empty kernels
 *     faster than they are issued (a few microseconds each); a figure near the GPU's empty-kernel
 *     time means the launch queue was full. On emu the launch runs the kernel's one thread
 *     synchronously, so the figure includes starting a fiber.
 * <li>{@code launchAndWait}: launch then synchronize, the round trip a caller waiting on one small
 *     kernel pays.
 * </ul>
 * A binding that is not present fails its setup with the reason (JMH prints it and goes on).
 * Per-step launch cost times the number of launches per step bounds the recurrent ops at small
 * shapes: e.g. 3 launches x 5 us = 15 us per step, 15 ms for T = 1000, whatever the kernels do.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Fork(value = 1, jvmArgsAppend = "--enable-native-access=ALL-UNNAMED")
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
public class BindingBench {
    @Param({"emu", "panama", "jcuda"})
    public String binding;

    private Driver driver;
    private long probe;
    private long buffer;

    @Setup
    public void setUp() {
        driver = ((GpuBackend) Backends.byName(binding)).driver();
        probe = driver.function(driver.loadModule("util"), "launch_probe");
        buffer = driver.malloc(1024);
    }

    @TearDown
    public void tearDown() {
        driver.free(buffer);
    }

    private KernelArgs args() {
        return new KernelArgs().pointer(buffer).pointer(buffer + 64).pointer(buffer + 128).pointer(buffer + 192)
                .pointer(buffer + 256).i32(7).f32(0.5f);
    }

    @Benchmark
    public KernelArgs packArguments() {
        return args();
    }

    @Benchmark
    public void launch() {
        driver.launch(probe, Dim3.of(1), Dim3.of(1), 0, 0, args());
    }

    @Benchmark
    public void launchAndWait() {
        driver.launch(probe, Dim3.of(1), Dim3.of(1), 0, 0, args());
        driver.synchronize(0);
    }
}
