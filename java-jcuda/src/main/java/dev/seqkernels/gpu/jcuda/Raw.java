package dev.seqkernels.gpu.jcuda;

import jcuda.NativePointerObject;
import jcuda.Pointer;

import java.lang.reflect.Field;

/**
 * Raw addresses in and out of JCuda's pointer objects, which keep theirs private: how a device
 * pointer or stream handed over as a {@code long} (by a framework or the panama binding) becomes a
 * JCuda object and back.
 */
final class Raw {
    private static final Field NATIVE;
    private static final Field OFFSET;

    static {
        try {
            NATIVE = NativePointerObject.class.getDeclaredField("nativePointer");
            NATIVE.setAccessible(true);
            OFFSET = Pointer.class.getDeclaredField("byteOffset");
            OFFSET.setAccessible(true);
        } catch (ReflectiveOperationException e) {
            throw new ExceptionInInitializerError("JCuda's pointer classes changed: " + e);
        }
    }

    private Raw() {
    }

    static <T extends NativePointerObject> T at(T object, long address) {
        try {
            NATIVE.setLong(object, address);
            return object;
        } catch (IllegalAccessException e) {
            throw new IllegalStateException(e);
        }
    }

    static long address(NativePointerObject object) {
        try {
            long base = NATIVE.getLong(object);
            return object instanceof Pointer ? base + OFFSET.getLong(object) : base;
        } catch (IllegalAccessException e) {
            throw new IllegalStateException(e);
        }
    }
}
