package dev.seqkernels.gpu;

import dev.seqkernels.Compare;
import dev.seqkernels.DType;
import dev.seqkernels.TestData;
import dev.seqkernels.Tensor;
import dev.seqkernels.gpu.kernels.LstmCellKernel;
import dev.seqkernels.gpu.kernels.RowSumKernel;
import dev.seqkernels.ops.Lstm;
import dev.seqkernels.ops.RecurrentCell;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.util.LinkedHashMap;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertTrue;

/** The first kernels ported through the emulator, checked from Java against the CPU reference. */
@PerBinding
class KernelPortTest {
    private final Driver driver = GpuTargets.driver();

    /**
     * The kernel takes the two gate pre-activations; the reference is the LSTM cell whose input
     * weights are the identity (x = gates_x + gates_h, W_hh = 0, no bias), so both compute the same
     * pointwise math from the same rounded inputs.
     */
    @ParameterizedTest(name = "{0} B={1} H={2}")
    @CsvSource({"F32, 3, 37", "F16, 3, 37", "BF16, 3, 37", "F32, 7, 59", "F16, 1, 1", "BF16, 5, 97"})
    void lstmCellForwardMatchesTheReference(DType dtype, int batch, int hidden) {
        TestData data = new TestData();
        Tensor gx = data.tensor(dtype, 2, batch, 4L * hidden);
        Tensor gh = data.tensor(dtype, 2, batch, 4L * hidden);
        Tensor c0 = data.tensor(dtype, 1, batch, hidden);
        Tensor h = Tensor.allocate(dtype, batch, hidden);
        Tensor c = Tensor.allocate(dtype, batch, hidden);
        try (DeviceTensor dGx = DeviceTensor.of(driver, gx); DeviceTensor dGh = DeviceTensor.of(driver, gh);
             DeviceTensor dC0 = DeviceTensor.of(driver, c0); DeviceTensor dH = DeviceTensor.allocate(driver, dtype, batch, hidden);
             DeviceTensor dC = DeviceTensor.allocate(driver, dtype, batch, hidden)) {
            new LstmCellKernel(driver).forward(dGx, dGh, dC0, dH, dC, 0);
            dH.copyTo(h);
            dC.copyTo(c);
        }
        int g = 4 * hidden;
        RecurrentCell cell = Lstm.builder().inputSize(g).hiddenSize(hidden).bias(false).backend("cpu").buildCell();
        double[] eye = new double[g * g];
        for (int i = 0; i < g; i++) {
            eye[i * g + i] = 1;
        }
        double[] sum = new double[batch * g];
        for (int i = 0; i < sum.length; i++) {
            sum[i] = gx.getFlat(i) + gh.getFlat(i);
        }
        Map<String, Tensor> params = new LinkedHashMap<>();
        params.put("weight_ih", Tensor.of(DType.F64, eye, g, g));
        params.put("weight_hh", Tensor.allocate(DType.F64, g, hidden));
        try (RecurrentCell.Result ref = cell.forward(params, Tensor.of(DType.F64, sum, batch, g), null, c0.to(DType.F64))) {
            Compare.Tolerance tol = Compare.tolerance(dtype);
            Compare.Result rh = Compare.compare(h.toDoubleArray(), ref.h().toDoubleArray(), tol);
            Compare.Result rc = Compare.compare(c.toDoubleArray(), ref.c().toDoubleArray(), tol);
            String tag = "lstm_cell_fwd " + dtype + " B=" + batch + " H=" + hidden + " " + GpuTargets.binding() + " " + data;
            assertTrue(rh.passes(tol), () -> tag + " h: " + rh);
            assertTrue(rc.passes(tol), () -> tag + " c: " + rc);
        }
    }

    @ParameterizedTest(name = "rows={0} cols={1}")
    @CsvSource({"37, 1025", "1, 1", "9, 31", "64, 96"})
    void warpShuffleRowSumMatchesTheReference(int rows, int cols) {
        TestData data = new TestData();
        Tensor x = data.tensor(DType.F32, 1, rows, cols);
        double[] expected = new double[rows];
        for (int r = 0; r < rows; r++) {
            for (int c = 0; c < cols; c++) {
                expected[r] += x.get(r, c);
            }
        }
        try (DeviceTensor dx = DeviceTensor.of(driver, x); DeviceTensor out = DeviceTensor.allocate(driver, DType.F32, rows)) {
            new RowSumKernel(driver).sum(dx, out, 0);
            Compare.Tolerance tol = Compare.tolerance(DType.F32);
            Compare.Result r = Compare.compare(out.toHost().toDoubleArray(), expected, tol);
            assertTrue(r.passes(tol), () -> "row_sum_f32 " + rows + "x" + cols + " " + GpuTargets.binding() + ": " + r + " " + data);
        }
    }
}
