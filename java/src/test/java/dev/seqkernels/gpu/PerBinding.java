package dev.seqkernels.gpu;

import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.extension.ExtendWith;

import java.lang.annotation.ElementType;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;

/**
 * A test class that runs through the binding under test ({@link GpuTargets}): emu in the main
 * test run, panama and jcuda over the stand-in driver in their own runs (Maven's surefire
 * executions select this tag), the real driver on a GPU host. Over the stand-in, every test must
 * also leave no misuse behind ({@link StandInMisuseCheck}).
 */
@Target(ElementType.TYPE)
@Retention(RetentionPolicy.RUNTIME)
@Tag("per-binding")
@ExtendWith(StandInMisuseCheck.class)
public @interface PerBinding {
}
