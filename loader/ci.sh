#!/usr/bin/env bash
# Configures, builds and tests the loader in build/loader (relative to the repository root).
# The fixture step needs python3 with numpy and Pillow; with the project's Python package
# importable (pipeline, torch) it also builds the tiny project's bundle (~15 s, then cached).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build="$root/build/loader"

# VTEDGE_FIXTURE_BUNDLE is reset so that a value cached by an earlier manual configure does
# not leak into CI: the default fixture is the tiny project's bundle built by the pipeline.
cmake -S "$root/loader" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVTEDGE_FIXTURE_BUNDLE= "$@"
cmake --build "$build" -j2
ctest --test-dir "$build" --output-on-failure
