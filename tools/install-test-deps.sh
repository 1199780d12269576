#!/usr/bin/env bash
# Installs what the test suite reads from the system: Debian's libonnx-testdata (the ONNX node
# tests for LSTM, GRU and RNN). Does nothing when it is already present.
set -euo pipefail
ONNX_NODE_DIR=/usr/share/libonnx-testdata/data/node
[ -d "$ONNX_NODE_DIR/test_lstm_defaults" ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  echo "install-test-deps: the tests need Debian's libonnx-testdata ($ONNX_NODE_DIR);" >&2
  echo "install-test-deps: run as root, or: sudo apt-get install libonnx-testdata" >&2
  exit 2
fi
echo "install-test-deps: installing libonnx-testdata ..." >&2
"${SUDO[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq libonnx-testdata >/dev/null
[ -d "$ONNX_NODE_DIR/test_lstm_defaults" ] || { echo "install-test-deps: libonnx-testdata installed but $ONNX_NODE_DIR is missing" >&2; exit 2; }
