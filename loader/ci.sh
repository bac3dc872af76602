#!/usr/bin/env bash
# Configures, builds and tests the loader in build/loader (relative to the repository root).
# The fixture step needs python3 with numpy and Pillow (the project's Python environment).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build="$root/build/loader"

cmake -S "$root/loader" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@"
cmake --build "$build" -j2
ctest --test-dir "$build" --output-on-failure
