package dev.seqkernels.cpu;

/**
 * y = x W^T + b over rows, and its backward, summing as {@link Precision#fma} says (exactly for the
 * oracle). x [N][in], W [out][in], b [out] or null.
 */
final class Linear {
    private Linear() {
    }

    record Grads(double[] dx, double[] dw, double[] db) {
    }

    static double[] forward(double[] x, double[] w, double[] b, int rows, int in, int out, Precision pr) {
        double[] y = new double[rows * out];
        for (int r = 0; r < rows; r++) {
            for (int o = 0; o < out; o++) {
                double s = b == null ? 0 : b[o];
                for (int k = 0; k < in; k++) {
                    s = pr.fma(x[r * in + k], w[o * in + k], s);
                }
                y[r * out + o] = s;
            }
        }
        return y;
    }

    static Grads backward(double[] dy, double[] x, double[] w, int rows, int in, int out, Precision pr) {
        double[] dx = new double[rows * in];
        double[] dw = new double[out * in];
        double[] db = new double[out];
        for (int r = 0; r < rows; r++) {
            for (int o = 0; o < out; o++) {
                double g = dy[r * out + o];
                db[o] = pr.sum(db[o], g);
                for (int k = 0; k < in; k++) {
                    dx[r * in + k] = pr.fma(g, w[o * in + k], dx[r * in + k]);
                    dw[o * in + k] = pr.fma(g, x[r * in + k], dw[o * in + k]);
                }
            }
        }
        return new Grads(dx, dw, db);
    }
}
