package dev.seqkernels.ops;

import dev.seqkernels.SeqkException;

/**
 * A gate activation from ONNX's list for recurrent ops, with its alpha/beta. Defaults for alpha and
 * beta are those of the ONNX operator of the same name.
 */
public record Activation(Kind kind, double alpha, double beta) {

    public enum Kind {
        SIGMOID("Sigmoid"), TANH("Tanh"), RELU("Relu"), HARD_SIGMOID("HardSigmoid"), AFFINE("Affine"),
        LEAKY_RELU("LeakyRelu"), THRESHOLDED_RELU("ThresholdedRelu"), SCALED_TANH("ScaledTanh"), ELU("Elu"),
        SOFTSIGN("Softsign"), SOFTPLUS("Softplus");

        private final String onnxName;

        Kind(String onnxName) {
            this.onnxName = onnxName;
        }

        public String onnxName() {
            return onnxName;
        }
    }

    public static final Activation SIGMOID = of(Kind.SIGMOID);
    public static final Activation TANH = of(Kind.TANH);
    public static final Activation RELU = of(Kind.RELU);

    public Activation {
        if (!Double.isFinite(alpha) || !Double.isFinite(beta)) {
            throw new SeqkException.InvalidConfig("activation " + kind.onnxName + " needs finite alpha and beta, got "
                    + alpha + ", " + beta);
        }
    }

    /** The activation with ONNX's default alpha and beta. */
    public static Activation of(Kind kind) {
        return switch (kind) {
            case HARD_SIGMOID -> new Activation(kind, 0.2, 0.5);
            case AFFINE -> new Activation(kind, 1.0, 0.0);
            case LEAKY_RELU -> new Activation(kind, 0.01, 0.0);
            case THRESHOLDED_RELU, ELU -> new Activation(kind, 1.0, 0.0);
            case SCALED_TANH -> new Activation(kind, 1.0, 1.0);
            default -> new Activation(kind, 0.0, 0.0);
        };
    }

    /** By ONNX name (case-insensitive), ONNX default alpha/beta. */
    public static Activation byOnnxName(String name) {
        for (Kind k : Kind.values()) {
            if (k.onnxName.equalsIgnoreCase(name)) {
                return of(k);
            }
        }
        throw new SeqkException.Unsupported("unknown recurrent activation '" + name + "'");
    }

    public double apply(double x) {
        return switch (kind) {
            case SIGMOID -> x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
            case TANH -> Math.tanh(x);
            case RELU -> Math.max(0, x);
            case HARD_SIGMOID -> Math.max(0, Math.min(1, alpha * x + beta));
            case AFFINE -> alpha * x + beta;
            case LEAKY_RELU -> x >= 0 ? x : alpha * x;
            case THRESHOLDED_RELU -> x <= alpha ? 0 : x; // a NaN input stays NaN, as in every other activation
            case SCALED_TANH -> alpha * Math.tanh(beta * x);
            case ELU -> x >= 0 ? x : alpha * (Math.exp(x) - 1);
            case SOFTSIGN -> x / (1 + Math.abs(x));
            case SOFTPLUS -> x > 0 ? x + Math.log1p(Math.exp(-x)) : Math.log1p(Math.exp(x));
        };
    }

    /** d apply(x) / dx; at the kinks of piecewise functions, the derivative of the right-hand piece. */
    public double derivative(double x) {
        return switch (kind) {
            case SIGMOID -> {
                double s = apply(x);
                yield s * (1 - s);
            }
            case TANH -> {
                double t = Math.tanh(x);
                yield 1 - t * t;
            }
            case RELU -> x > 0 ? 1 : 0;
            case HARD_SIGMOID -> {
                double y = alpha * x + beta;
                yield y > 0 && y < 1 ? alpha : 0;
            }
            case AFFINE -> alpha;
            case LEAKY_RELU -> x >= 0 ? 1 : alpha;
            case THRESHOLDED_RELU -> x > alpha ? 1 : 0;
            case SCALED_TANH -> {
                double t = Math.tanh(beta * x);
                yield alpha * beta * (1 - t * t);
            }
            case ELU -> x >= 0 ? 1 : alpha * Math.exp(x);
            case SOFTSIGN -> {
                double d = 1 + Math.abs(x);
                yield 1 / (d * d);
            }
            case SOFTPLUS -> x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
        };
    }
}
