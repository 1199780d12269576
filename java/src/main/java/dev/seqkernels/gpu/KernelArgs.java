package dev.seqkernels.gpu;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;

/**
 * A kernel's arguments in order, packed the way {@code cuLaunchKernel} takes them: an array of
 * pointers, each to one argument's value. Device pointers are 8 bytes; ints and floats 4.
 */
public final class KernelArgs {
    /** One argument: its kind and bits (a pointer, an int, a float's raw bits...), or a struct's 8-byte words. */
    public record Arg(Kind kind, long bits, long[] words) {
    }

    public enum Kind {
        POINTER(8), INT(4), LONG(8), FLOAT(4), STRUCT(0);

        private final int bytes;

        Kind(int bytes) {
            this.bytes = bytes;
        }

        public int bytes() {
            return bytes;
        }
    }

    private final List<Arg> args = new ArrayList<>();

    public KernelArgs pointer(long devicePtr) {
        args.add(new Arg(Kind.POINTER, devicePtr, null));
        return this;
    }

    public KernelArgs i32(int v) {
        args.add(new Arg(Kind.INT, v, null));
        return this;
    }

    public KernelArgs i64(long v) {
        args.add(new Arg(Kind.LONG, v, null));
        return this;
    }

    public KernelArgs f32(float v) {
        args.add(new Arg(Kind.FLOAT, Float.floatToRawIntBits(v), null));
        return this;
    }

    /**
     * A struct passed by value whose fields are all 8 bytes (long long, double, pointers), in
     * declaration order: such a struct has no padding, so its bytes are exactly these words.
     */
    public KernelArgs struct(long... words) {
        args.add(new Arg(Kind.STRUCT, 0, words.clone()));
        return this;
    }

    /** An independent copy, for recording a launch whose caller may go on appending. */
    public KernelArgs copy() {
        KernelArgs c = new KernelArgs();
        c.args.addAll(args);
        return c;
    }

    public List<Arg> args() {
        return List.copyOf(args);
    }

    public int size() {
        return args.size();
    }

    /** Bytes of argument i as packed: 8 for pointers and longs, 4 for ints and floats, 8 per struct word. */
    public long bytes(int i) {
        Arg a = args.get(i);
        return a.kind() == Kind.STRUCT ? 8L * a.words().length : a.kind().bytes();
    }

    /**
     * Checks these arguments against the kernel's parameter sizes as the driver knows them (from
     * the module's PTX): a count or a size that differs would make the kernel read other bytes
     * than the ones passed, so it is refused here, before the launch. {@code parameterSizes} null
     * means the driver cannot tell (a driver older than CUDA 12.4), and nothing is checked.
     */
    public void check(String binding, String kernel, long[] parameterSizes) {
        if (parameterSizes == null) {
            return;
        }
        if (parameterSizes.length != args.size()) {
            throw new DriverException(binding + " launch of " + kernel + ": the kernel takes " + parameterSizes.length
                    + " parameters, " + args.size() + " were passed");
        }
        for (int i = 0; i < args.size(); i++) {
            if (bytes(i) != parameterSizes[i]) {
                throw new DriverException(binding + " launch of " + kernel + ": parameter " + i + " is " + parameterSizes[i]
                        + " bytes in the kernel, but a " + args.get(i).kind() + " of " + bytes(i) + " bytes was passed");
            }
        }
    }

    /** The void** array (and the values it points to), allocated in {@code arena}. */
    public MemorySegment pack(Arena arena) {
        MemorySegment pointers = arena.allocate(ValueLayout.ADDRESS, Math.max(1, args.size()));
        for (int i = 0; i < args.size(); i++) {
            Arg a = args.get(i);
            MemorySegment value = arena.allocate(8L * (a.words() == null ? 1 : Math.max(1, a.words().length)), 8);
            if (a.kind() == Kind.STRUCT) {
                MemorySegment.copy(a.words(), 0, value, ValueLayout.JAVA_LONG, 0, a.words().length);
            } else if (a.kind().bytes() == 8) {
                value.set(ValueLayout.JAVA_LONG, 0, a.bits());
            } else {
                value.set(ValueLayout.JAVA_INT, 0, (int) a.bits());
            }
            pointers.setAtIndex(ValueLayout.ADDRESS, i, value);
        }
        return pointers;
    }
}
