package dev.seqkernels.gpu;

import dev.seqkernels.DType;
import dev.seqkernels.SeqkException;
import dev.seqkernels.Tensor;
import dev.seqkernels.TestData;
import dev.seqkernels.ops.Attention;
import org.junit.jupiter.api.Test;

import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;

import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Another thread closes an op's input while the op converts and uploads it: the op either finishes
 * or throws a SeqkException, and the closing thread either closes or is told the tensor is in use;
 * never a fault in native code. jcuda too: JCuda takes raw addresses, which the JDK cannot keep
 * alive for the call, so the upload holds the tensor ({@code Tensor.hold}) while it copies.
 */
@PerBinding
class ConcurrentCloseTest {
    @Test
    void closingAnInputDuringAnOpIsACleanError() throws InterruptedException {
        TestData data = new TestData();
        Attention sdpa = Attention.builder().backend(GpuTargets.backend()).build();
        AtomicInteger clean = new AtomicInteger();
        for (int i = 0; i < 40; i++) {
            DType dt = i % 2 == 0 ? DType.F32 : DType.F16;
            // A strided q is gathered element by element on the host, a contiguous one is copied
            // whole by the driver: a close can land in either.
            Tensor q = i % 4 < 2 ? data.tensor(dt, 1, 1, 2, 128, 32) : data.tensor(dt, 1, 1, 128, 2, 32).permute(0, 2, 1, 3);
            Tensor kv = data.tensor(dt, 1, 1, 2, 128, 32);
            int delayMicros = ThreadLocalRandom.current().nextInt(1500);
            AtomicReference<Throwable> closerFailure = new AtomicReference<>();
            Thread closer = Thread.ofPlatform().start(() -> {
                long until = System.nanoTime() + delayMicros * 1000L;
                while (System.nanoTime() < until) {
                    Thread.onSpinWait();
                }
                try {
                    q.close();
                } catch (SeqkException inUse) {
                    if (!inUse.getMessage().contains("cannot be closed while another thread uses it")) {
                        closerFailure.set(inUse);
                    }
                } catch (Throwable t) {
                    closerFailure.set(t);
                }
            });
            try (var r = sdpa.forward(Attention.inputs(q, kv, kv))) {
                assertTrue(r.out().size(2) == 128);
            } catch (SeqkException expected) {
                clean.incrementAndGet();
            }
            // The JDK stops an access to an arena being closed by installing an asynchronous
            // exception, which also sets the accessing thread's interrupt flag (HotSpot's
            // install_async_exception); that flag is the JDK's, not a request to stop, so it is cleared.
            Thread.interrupted();
            closer.join();
            assertNull(closerFailure.get(), () -> "the closing thread failed: " + closerFailure.get());
            q.close();
            kv.close();
        }
        System.out.println("ConcurrentCloseTest: " + clean.get() + " of 40 calls saw their input closed and failed cleanly");
    }
}
