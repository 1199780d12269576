package dev.seqkernels.gpu;

import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Proxy;
import java.util.Map;
import java.util.Set;

/** A Driver for tests that tells a listener of each call (name and arguments) and then passes it on to another. */
final class RecordingDriver {
    /** The stream argument of each Driver call that takes one, by position. */
    static final Map<String, Integer> STREAM_ARGUMENT = Map.of("launch", 4, "launchCooperative", 4, "memsetAsync", 3,
            "copyHostToDeviceAsync", 3, "copyDeviceToHostAsync", 3, "copyDeviceToDeviceAsync", 3, "recordEvent", 1, "gemm", 1,
            "launchGraph", 1, "waitEvent", 0);
    /** Driver calls that wait for the device (or free, which may): none may happen inside a device-resident call. */
    static final Set<String> WAITING = Set.of("copyHostToDevice", "copyDeviceToHost", "copyDeviceToDevice", "memset", "synchronize",
            "free", "freeHost", "destroyStream", "destroyEvent", "destroyGraph");

    /** Hears a call before it is passed on; args is empty for calls without arguments. */
    interface Listener {
        void heard(String method, Object[] args) throws Exception;
    }

    private RecordingDriver() {
    }

    /** {@code real}, recording in names the name of every kernel function it resolves. */
    static Driver recordingFunctions(Driver real, java.util.List<String> names) {
        return around(real, (method, args) -> {
            if (method.equals("function")) {
                names.add((String) args[1]);
            }
        });
    }

    /** {@code real} seen through a listener (a distinct Driver object that owns nothing itself). */
    static Driver around(Driver real, Listener listener) {
        return (Driver) Proxy.newProxyInstance(Driver.class.getClassLoader(), new Class<?>[]{Driver.class}, (proxy, method, args) -> {
            listener.heard(method.getName(), args == null ? new Object[0] : args);
            try {
                return method.invoke(real, args);
            } catch (InvocationTargetException e) {
                throw e.getCause();
            }
        });
    }

    /** {@code real} reporting other device properties (another GPU's limits) and passing every other call on. */
    static Driver reporting(Driver real, DeviceProperties properties) {
        return (Driver) Proxy.newProxyInstance(Driver.class.getClassLoader(), new Class<?>[]{Driver.class}, (proxy, method, args) -> {
            if (method.getName().equals("properties")) {
                return properties;
            }
            try {
                return method.invoke(real, args);
            } catch (InvocationTargetException e) {
                throw e.getCause();
            }
        });
    }

    /** The stream a call was issued on, or null for calls that take none. */
    static Long streamOf(String method, Object[] args) {
        Integer at = STREAM_ARGUMENT.get(method);
        return at == null ? null : (Long) args[at];
    }
}
