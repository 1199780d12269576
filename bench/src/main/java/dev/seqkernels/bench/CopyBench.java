package dev.seqkernels.bench;

import dev.seqkernels.Backends;
import dev.seqkernels.gpu.Driver;
import dev.seqkernels.gpu.GpuBackend;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.concurrent.TimeUnit;

/**
 * Host-to-device copy of {@code bytes} from the three places a caller's data can be, per binding:
 * <ul>
 * <li>{@code hostMemcpy} (baseline): a host-to-host copy of the same bytes, the cost no copy path
 *     can go under on this machine's memory;
 * <li>{@code heapArray}: a Java float[]: it must first be copied to native memory (a heap array
 *     cannot be handed to the driver), then copied over;
 * <li>{@code nativeSegment}: a MemorySegment in ordinary (pageable) native memory: one copy, which
 *     the driver stages through its own pinned buffer;
 * <li>{@code pinnedSegment}: page-locked memory from {@link Driver#allocHost}: an asynchronous copy
 *     the GPU's copy engine reads directly, then a synchronize.
 * </ul>
 * GB/s = bytes / time. On a PCIe 5.0 x16 host the pinned path's ceiling is about 50-55 GB/s and
 * pageable copies reach roughly half of it; on emu all three are memcpy.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Fork(value = 1, jvmArgsAppend = "--enable-native-access=ALL-UNNAMED")
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
public class CopyBench {
    @Param({"emu", "panama", "jcuda"})
    public String binding;

    @Param({"4096", "1048576", "67108864"})
    public int bytes;

    private Driver driver;
    private Arena arena;
    private float[] heap;
    private MemorySegment staging;
    private MemorySegment nativeSegment;
    private MemorySegment hostCopy;
    private MemorySegment pinned;
    private long device;

    @Setup(Level.Trial)
    public void setUp() {
        driver = ((GpuBackend) Backends.byName(binding)).driver();
        arena = Arena.ofShared();
        heap = new float[bytes / 4];
        java.util.Arrays.fill(heap, 0.25f);
        staging = arena.allocate(bytes, 64);
        nativeSegment = arena.allocate(bytes, 64);
        hostCopy = arena.allocate(bytes, 64);
        nativeSegment.fill((byte) 1);
        pinned = driver.allocHost(bytes);
        pinned.fill((byte) 1);
        device = driver.malloc(bytes);
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        driver.free(device);
        driver.freeHost(pinned);
        arena.close();
    }

    @Benchmark
    public void hostMemcpy() {
        MemorySegment.copy(nativeSegment, 0, hostCopy, 0, bytes);
    }

    @Benchmark
    public void heapArray() {
        MemorySegment.copy(heap, 0, staging, ValueLayout.JAVA_FLOAT, 0, heap.length);
        driver.copyHostToDevice(device, staging, bytes);
    }

    @Benchmark
    public void nativeSegment() {
        driver.copyHostToDevice(device, nativeSegment, bytes);
    }

    @Benchmark
    public void pinnedSegment() {
        driver.copyHostToDeviceAsync(device, pinned, bytes, 0);
        driver.synchronize(0);
    }
}
