package dev.seqkernels.gpu;

import org.junit.jupiter.api.extension.AfterEachCallback;
import org.junit.jupiter.api.extension.BeforeEachCallback;
import org.junit.jupiter.api.extension.ExtensionContext;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * Over the stand-in driver, a test passes only if the driver saw no misuse while it ran: no
 * destroyed or foreign handle or pointer, no kernel argument outside device memory, no entry point
 * the stand-in lacks. A real GPU might survive such a call silently, or crash later.
 */
public final class StandInMisuseCheck implements BeforeEachCallback, AfterEachCallback {
    @Override
    public void beforeEach(ExtensionContext context) {
        StandIn.loaded().ifPresent(StandIn::takeMisuse);
    }

    @Override
    public void afterEach(ExtensionContext context) {
        StandIn.loaded().ifPresent(s -> assertEquals("", s.takeMisuse(),
                "the stand-in driver saw misuse during " + context.getDisplayName()));
    }
}
