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
}
