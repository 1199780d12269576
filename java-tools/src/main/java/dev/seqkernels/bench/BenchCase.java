package dev.seqkernels.bench;

import com.fasterxml.jackson.annotation.JsonProperty;
import dev.seqkernels.DType;

import java.util.LinkedHashMap;
import java.util.Map;
import java.util.stream.Collectors;

/**
 * One benchmark shape: an op ({@code lstm}, {@code gru}, {@code sdpa}, {@code decode}), its sizes,
 * storage dtype and pass ({@code infer}, {@code fwd} or {@code fwd+bwd}: recurrent ops only for
 * {@code infer}, the forward keeping nothing for backward), with the work it must do at least: the
 * flops and the bytes that bound it from below (see {@link BenchSuite} for the formulas). The key
 * joins our rows with the peers' ({@code bench/peers/torch_bench.py}).
 */
public record BenchCase(String suite, String op, Map<String, Integer> shape, DType dtype, String pass, double flops,
                        double bytes, String skip) {
    public BenchCase {
        shape = java.util.Collections.unmodifiableMap(new LinkedHashMap<>(shape));
    }

    public String shapeText() {
        return shape.entrySet().stream().map(e -> e.getKey() + "=" + e.getValue()).collect(Collectors.joining(" "));
    }

    /** "op shape dtype pass", e.g. "lstm T=100 B=8 I=256 H=256 BF16 fwd"; in the JSON of --list. */
    @JsonProperty("key")
    public String key() {
        return op + " " + shapeText() + " " + dtype + " " + pass;
    }

    public int get(String name) {
        Integer v = shape.get(name);
        if (v == null) {
            throw new IllegalArgumentException(op + " case has no size " + name + ": " + shapeText());
        }
        return v;
    }

    public boolean backward() {
        return pass.equals("fwd+bwd");
    }
}
