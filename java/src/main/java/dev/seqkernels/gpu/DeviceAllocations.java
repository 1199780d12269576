package dev.seqkernels.gpu;

import java.util.Map;
import java.util.concurrent.ConcurrentSkipListMap;

/**
 * The device allocations a GPU binding made, by start address: what {@link Driver#memoryInUse()}
 * sums, what {@link Driver#free} accepts, and what copies and memsets are checked against. A range
 * that starts inside one of them must end inside it too (a real driver does not always notice an
 * overrun: it would corrupt a neighbour or fault later). Pointers this binding did not allocate (a
 * framework's, another binding's) are not checked: the driver decides.
 */
public final class DeviceAllocations {
    private final String binding;
    private final ConcurrentSkipListMap<Long, Long> allocations = new ConcurrentSkipListMap<>(Long::compareUnsigned);

    public DeviceAllocations(String binding) {
        this.binding = binding;
    }

    public void add(long pointer, long bytes) {
        allocations.put(pointer, bytes);
    }

    /**
     * Claims an allocation for freeing and returns its size (add it back if the free fails); throws
     * when {@code pointer} is not the start of one. Claiming first means two threads cannot both free it.
     */
    public long remove(long pointer) {
        Long bytes = allocations.remove(pointer);
        if (bytes == null) {
            throw new DriverException(binding + " free: 0x" + Long.toHexString(pointer)
                    + " is not the start of a live allocation of this binding (freed already, or never allocated by it)");
        }
        return bytes;
    }

    public long inUse() {
        return allocations.values().stream().mapToLong(Long::longValue).sum();
    }

    /** Refuses [pointer, pointer + bytes) when it starts inside one of this binding's allocations and runs past its end. */
    public void checkRange(String call, String role, long pointer, long bytes) {
        if (bytes < 0) {
            throw new DriverException(binding + " " + call + ": negative size " + bytes);
        }
        Map.Entry<Long, Long> a = allocations.floorEntry(pointer);
        if (a == null) {
            return;
        }
        long offset = pointer - a.getKey();
        if (Long.compareUnsigned(offset, a.getValue()) < 0 && bytes > a.getValue() - offset) {
            throw new DriverException(binding + " " + call + ": the " + role + " range 0x" + Long.toHexString(pointer) + "..+"
                    + bytes + " runs past the end of the allocation at 0x" + Long.toHexString(a.getKey()) + " ("
                    + a.getValue() + " bytes)");
        }
    }
}
