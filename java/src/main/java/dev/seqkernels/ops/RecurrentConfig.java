package dev.seqkernels.ops;

import dev.seqkernels.SeqkException;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Everything that fixes the math of a recurrent op. Built through {@link Lstm#builder()},
 * {@link Gru#builder()} or {@link Rnn#builder()}, which validate it.
 *
 * @param activations per-direction activation lists in ONNX order (LSTM f,g,h; GRU f,g; RNN f):
 *                    {@code activations.get(d)} is direction d's list
 * @param projSize    LSTM projection size (PyTorch {@code proj_size}); 0 for none
 * @param clip        ONNX cell clip applied to every gate pre-activation; +infinity for none
 * @param allowTf32   whether the GPU path may round F32 operands of its GEMMs to TF32 (see
 *                    {@link RecurrentOp.Builder#allowTf32}); off by default
 */
public record RecurrentConfig(CellType cell, int inputSize, int hiddenSize, int numLayers, Direction direction,
                              boolean batchFirst, boolean bias, int projSize, boolean linearBeforeReset,
                              boolean peepholes, boolean inputForget, double clip,
                              List<List<Activation>> activations, boolean allowTf32) {

    public RecurrentConfig {
        positive("inputSize", inputSize);
        positive("hiddenSize", hiddenSize);
        positive("numLayers", numLayers);
        if (projSize < 0 || projSize > 0 && (cell != CellType.LSTM || projSize >= hiddenSize)) {
            throw new SeqkException.InvalidConfig("projSize must be 0, or (LSTM only) in 1.." + (hiddenSize - 1)
                    + " (less than hiddenSize, as PyTorch requires); got " + projSize + " for " + cell);
        }
        int state = projSize > 0 ? projSize : hiddenSize;
        if ((long) direction.count() * state > Integer.MAX_VALUE || (long) direction.count() * numLayers > Integer.MAX_VALUE) {
            throw new SeqkException.InvalidConfig("the output size (" + direction.count() + " directions x " + state
                    + ") and the state slots (" + numLayers + " layers x " + direction.count()
                    + " directions) must each fit an int; " + (projSize > 0 ? "projSize" : "hiddenSize") + " or numLayers is too large");
        }
        if ((peepholes || inputForget) && cell != CellType.LSTM) {
            throw new SeqkException.InvalidConfig("peepholes and inputForget exist only for LSTM, not " + cell);
        }
        if (Double.isNaN(clip) || clip <= 0) {
            throw new SeqkException.InvalidConfig("clip must be positive (or +infinity for none); got " + clip);
        }
        if (activations.size() != direction.count()) {
            throw new SeqkException.InvalidConfig("activations must give one list per direction (" + direction.count()
                    + "), got " + activations.size());
        }
        for (List<Activation> perDirection : activations) {
            if (perDirection.size() != cell.activationCount()) {
                throw new SeqkException.InvalidConfig(cell + " takes " + cell.activationCount()
                        + " activations per direction, got " + perDirection);
            }
        }
        activations = activations.stream().map(List::copyOf).toList();
    }

    private static void positive(String name, int v) {
        if (v <= 0) {
            throw new SeqkException.InvalidConfig(name + " must be positive, got " + v);
        }
    }

    public int numDirections() {
        return direction.count();
    }

    /** Size of the recurrent state h and of each direction's output: projSize if set, else hiddenSize. */
    public int stateSize() {
        return projSize > 0 ? projSize : hiddenSize;
    }

    /** Feature size of the op's output: directions x state size. */
    public int outputSize() {
        return numDirections() * stateSize();
    }

    public int layerInputSize(int layer) {
        return layer == 0 ? inputSize : outputSize();
    }

    /** PyTorch's name suffix for layer {@code layer} and direction slot {@code d}: {@code l0}, {@code l1_reverse}. */
    public String suffix(int layer, int d) {
        return "l" + layer + (direction == Direction.BIDIRECTIONAL && d == 1 ? "_reverse" : "");
    }

    /**
     * Every parameter by its PyTorch name, with its shape, in PyTorch's order. ONNX peepholes (not a
     * PyTorch parameter) are {@code weight_peephole_l<k>[_reverse]} of shape [3*hiddenSize], gates i,f,o.
     */
    public Map<String, long[]> parameterShapes() {
        Map<String, long[]> shapes = new LinkedHashMap<>();
        long g = (long) cell.gates() * hiddenSize;
        for (int layer = 0; layer < numLayers; layer++) {
            for (int d = 0; d < numDirections(); d++) {
                String s = suffix(layer, d);
                shapes.put("weight_ih_" + s, new long[]{g, layerInputSize(layer)});
                shapes.put("weight_hh_" + s, new long[]{g, stateSize()});
                if (bias) {
                    shapes.put("bias_ih_" + s, new long[]{g});
                    shapes.put("bias_hh_" + s, new long[]{g});
                }
                if (projSize > 0) {
                    shapes.put("weight_hr_" + s, new long[]{projSize, hiddenSize});
                }
                if (peepholes) {
                    shapes.put("weight_peephole_" + s, new long[]{3L * hiddenSize});
                }
            }
        }
        return shapes;
    }
}
