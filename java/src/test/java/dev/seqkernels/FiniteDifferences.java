package dev.seqkernels;

import java.util.function.DoubleSupplier;

import static org.junit.jupiter.api.Assertions.fail;

/** Central finite differences in float64 against an analytic gradient, element by element. */
public final class FiniteDifferences {
    private static final double EPS = 1e-6;
    /** Central differences have O(eps^2) truncation and O(1e-16/eps) rounding error: 1e-6 relative is ample. */
    private static final double TOLERANCE = 1e-6;

    private FiniteDifferences() {
    }

    /**
     * Perturbs every element of {@code wrt} (an F64 tensor the loss reads) by +-eps and checks
     * (loss(+) - loss(-)) / 2eps against {@code analytic} at the same position.
     */
    public static void check(String what, Tensor wrt, Tensor analytic, DoubleSupplier loss) {
        double[] an = analytic.toDoubleArray();
        double scale = 1;
        for (double a : an) {
            scale = Math.max(scale, Math.abs(a));
        }
        for (int i = 0; i < an.length; i++) {
            double x = wrt.getFlat(i);
            wrt.setFlat(i, x + EPS);
            double up = loss.getAsDouble();
            wrt.setFlat(i, x - EPS);
            double down = loss.getAsDouble();
            wrt.setFlat(i, x);
            double fd = (up - down) / (2 * EPS);
            if (!(Math.abs(fd - an[i]) <= TOLERANCE * scale)) {
                fail(what + "[" + i + "]: analytic " + an[i] + " vs finite difference " + fd + " (gradient scale " + scale + ")");
            }
        }
    }

    /** sum(a * b) over all elements; a null tensor contributes zero. */
    public static double dot(Tensor a, Tensor b) {
        if (a == null || b == null) {
            return 0;
        }
        double[] x = a.toDoubleArray();
        double[] y = b.toDoubleArray();
        double s = 0;
        for (int i = 0; i < x.length; i++) {
            s += x[i] * y[i];
        }
        return s;
    }
}
