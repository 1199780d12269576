#!/usr/bin/env bash
# Installs what the test suite reads from the system: Debian's libonnx-testdata (the ONNX node
# tests for LSTM, GRU and RNN) and python3-torch (bench/peers/torch_bench.py is checked on the CPU,
# and tools/golden/make_goldens.py uses it). Does nothing when both are present.
set -euo pipefail
ONNX_NODE_DIR=/usr/share/libonnx-testdata/data/node
have_onnx() { [ -d "$ONNX_NODE_DIR/test_lstm_defaults" ]; }
have_torch() { /usr/bin/python3 -c 'import torch' >/dev/null 2>&1; }
have_onnx && have_torch && exit 0

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  echo "install-test-deps: the tests need Debian's libonnx-testdata and python3-torch;" >&2
  echo "install-test-deps: run as root, or: sudo apt-get install libonnx-testdata python3-torch" >&2
  exit 2
fi
echo "install-test-deps: installing libonnx-testdata python3-torch ..." >&2
"${SUDO[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends libonnx-testdata python3-torch >/dev/null
have_onnx || { echo "install-test-deps: libonnx-testdata installed but $ONNX_NODE_DIR is missing" >&2; exit 2; }
have_torch || { echo "install-test-deps: python3-torch installed but /usr/bin/python3 cannot import torch" >&2; exit 2; }
