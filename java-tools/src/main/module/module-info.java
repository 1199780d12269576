/**
 * seqkernels' tools: the command line ({@code seqk}), the golden runner, ONNX and safetensors
 * import, and the benchmark harness with its charts. Not needed to embed the ops.
 */
module dev.seqkernels.tools {
    requires dev.seqkernels;
    requires com.fasterxml.jackson.databind;
    requires com.google.protobuf;
    requires org.knowm.xchart;
    requires java.desktop;

    exports dev.seqkernels.cli;
    // Jackson reads and writes the JSON records of parity (cli) and the benchmarks (bench) by reflection.
    opens dev.seqkernels.cli to com.fasterxml.jackson.databind;
    opens dev.seqkernels.bench to com.fasterxml.jackson.databind;
}
