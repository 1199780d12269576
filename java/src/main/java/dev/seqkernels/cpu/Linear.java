package dev.seqkernels.cpu;

/** y = x W^T + b over rows, in double, and its backward. x [N][in], W [out][in], b [out] or null. */
final class Linear {
    private Linear() {
    }

    record Grads(double[] dx, double[] dw, double[] db) {
    }

    static double[] forward(double[] x, double[] w, double[] b, int rows, int in, int out) {
        double[] y = new double[rows * out];
        for (int r = 0; r < rows; r++) {
            for (int o = 0; o < out; o++) {
                double s = b == null ? 0 : b[o];
                for (int k = 0; k < in; k++) {
                    s += x[r * in + k] * w[o * in + k];
                }
                y[r * out + o] = s;
            }
        }
        return y;
    }

    static Grads backward(double[] dy, double[] x, double[] w, int rows, int in, int out) {
        double[] dx = new double[rows * in];
        double[] dw = new double[out * in];
        double[] db = new double[out];
        for (int r = 0; r < rows; r++) {
            for (int o = 0; o < out; o++) {
                double g = dy[r * out + o];
                db[o] += g;
                for (int k = 0; k < in; k++) {
                    dx[r * in + k] += g * w[o * in + k];
                    dw[o * in + k] += g * x[r * in + k];
                }
            }
        }
        return new Grads(dx, dw, db);
    }
}
