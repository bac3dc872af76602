#!/usr/bin/env python3
"""vt_infer exit codes and one-line errors.  usage: test_cli.py VT_INFER FIXTURES WITH_TRT"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

VT_INFER, FIXTURES, WITH_TRT = sys.argv[1], Path(sys.argv[2]), sys.argv[3] in ("1", "ON", "TRUE")
BUNDLE = FIXTURES / "bundle"          # the pipeline-made bundle when the pipeline imports
SYNTHETIC = FIXTURES / "synthetic"    # the hand-made one (an engine entry, a build plan)
IMAGE = FIXTURES / "images" / "rgb_large.jpg"
failures = 0


def run(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([VT_INFER, *map(str, args)], capture_output=True, text=True, timeout=120)


def expect(name: str, proc: subprocess.CompletedProcess, code: int | None, stderr_has: str = "",
           stdout_has: str = "", one_line: bool = True) -> None:
    global failures
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    problems = []
    if code is None and proc.returncode == 0:
        problems.append("exit code 0, expected non-zero")
    if code is not None and proc.returncode != code:
        problems.append(f"exit code {proc.returncode}, expected {code}")
    if stderr_has and stderr_has not in proc.stderr:
        problems.append(f"stderr lacks {stderr_has!r}")
    if stdout_has and stdout_has not in proc.stdout:
        problems.append(f"stdout lacks {stdout_has!r}")
    if one_line and proc.returncode != 0 and len(lines) != 1:
        problems.append(f"{len(lines)} stderr lines, expected 1")
    status = "FAIL" if problems else "ok"
    print(f"[{status}] {name}: rc={proc.returncode} stderr={proc.stderr.strip()!r}")
    for p in problems:
        print(f"       {p}")
    failures += bool(problems)


n_files = len(json.loads((BUNDLE / "manifest.json").read_text())["files"])
expect("verify-only", run(BUNDLE, "--verify-only"), 0, stdout_has=f"bundle OK: {n_files} files verified")
n_synthetic = len(json.loads((SYNTHETIC / "manifest.json").read_text())["files"])
expect("verify-only, synthetic", run(SYNTHETIC, "--verify-only"), 0,
       stdout_has=f"bundle OK: {n_synthetic} files verified")
expect("bad bundle path", run(FIXTURES / "no-such-bundle", IMAGE), None, stderr_has="vt_infer: ")
expect("no arguments", run(), 2, stderr_has="usage: vt_infer")
expect("unknown option", run(BUNDLE, IMAGE, "--bogus"), 2, stderr_has="unknown option --bogus")
expect("bad --runs", run(BUNDLE, IMAGE, "--runs", "x"), 2, stderr_has="--runs needs a positive integer")
expect("missing image", run(BUNDLE, FIXTURES / "images" / "absent.jpg"), 1, stderr_has="cannot open image")
if not WITH_TRT:
    expect("no engine runtime", run(BUNDLE, IMAGE), 3,
           stderr_has="the TensorRT engine runtime is not compiled in", stdout_has="preprocessed 1 image(s)")
    expect("no engine runtime, --build-engine", run(SYNTHETIC, IMAGE, "--build-engine"), 3,
           stderr_has="the TensorRT engine runtime is not compiled in")

with tempfile.TemporaryDirectory() as tmp:
    bad = Path(tmp) / "bundle"
    shutil.copytree(BUNDLE, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    rel = next(iter(manifest["files"]))
    data = bytearray((bad / rel).read_bytes())
    data[0] ^= 1
    (bad / rel).write_bytes(bytes(data))
    expect("tampered bundle", run(bad, "--verify-only"), 1, stderr_has="fails its SHA-256 check")
    manifest["format_version"] = 4
    (bad / "manifest.json").write_text(json.dumps(manifest))
    expect("format_version 4", run(bad, IMAGE), 1, stderr_has="unsupported format_version 4")

print(f"{failures} failure(s)")
sys.exit(1 if failures else 0)
