package dev.seqkernels.ops;

/** The recurrent cell; {@link #gates()} is the number of H-sized row blocks in weight_ih/weight_hh. */
public enum CellType {
    RNN(1, 1), LSTM(4, 3), GRU(3, 2);

    private final int gates;
    private final int activationCount;

    CellType(int gates, int activationCount) {
        this.gates = gates;
        this.activationCount = activationCount;
    }

    public int gates() {
        return gates;
    }

    /** Activations per direction, as ONNX counts them (LSTM f,g,h; GRU f,g; RNN f). */
    public int activationCount() {
        return activationCount;
    }
}
