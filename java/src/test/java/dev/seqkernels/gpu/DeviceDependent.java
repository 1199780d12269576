package dev.seqkernels.gpu;

import org.junit.jupiter.api.Tag;

import java.lang.annotation.ElementType;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;

/**
 * A test (class or method) whose kernel choices or launch limits depend on the device: Maven runs
 * these once more on the emulator reporting a T4 ({@code emu-as-sm75}, {@code seqkernels.emu.device=sm_75}),
 * where what a T4 never picks must skip by name and everything else must hold.
 */
@Target({ElementType.TYPE, ElementType.METHOD})
@Retention(RetentionPolicy.RUNTIME)
@Tag("device-dependent")
public @interface DeviceDependent {
}
