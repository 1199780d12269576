package dev.seqkernels.gpu;

import dev.seqkernels.bench.Bench;
import dev.seqkernels.bench.BenchCase;
import dev.seqkernels.bench.BenchRow;
import dev.seqkernels.bench.BenchSuite;
import dev.seqkernels.cli.MainAccess;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The tools over the stand-in driver: `seqk info` names it as a stand-in, and the benchmark
 * harness loads the modules once however many cases run.
 */
@PerBinding
class StandInToolsTest {
    private StandIn standIn;

    @BeforeEach
    void overTheStandIn() {
        standIn = GpuTargets.standIn().orElse(null);
        assumeTrue(standIn != null, () -> "skipped: the " + GpuTargets.binding() + " binding does not run over the stand-in driver");
    }

    @Test
    void infoNamesTheStandIn() {
        String info = MainAccess.run("info");
        assertTrue(info.contains(GpuTargets.binding() + " ") && info.contains("stand-in driver") && info.contains("not a GPU"), info);
    }

    /** `seqk bench` runs every case on a new backend over one driver: the modules are loaded once for all of them. */
    @Test
    void benchmarkCasesShareTheModules() {
        Driver d = GpuTargets.driver();
        Bench bench = new Bench(d, Bench.Options.forDriver(d), Bench.Peaks.measure(d));
        int before = -1;
        for (BenchCase c : BenchSuite.cases("smoke")) {
            BenchRow row = bench.run(c);
            assertTrue(row.note() == null || !row.note().startsWith("failed"), row::toString);
            if (before < 0) {
                before = standIn.moduleCount();
            }
            assertEquals(before, standIn.moduleCount(), "modules loaded after case " + c.key());
        }
    }

}
