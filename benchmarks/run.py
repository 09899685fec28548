#!/usr/bin/env python3
"""Benchmark harness: timelapse vs. untraced Python vs. the reference recorder.

    python benchmarks/run.py [--quick] [--programs a,b] [--no-reference] [--repeat N]

Every run is a subprocess. Reported per program and runner: wall time (best of N), ratio to the
untraced run, Step events per second, trace bytes per step, values encoded per second, peak RSS.
See benchmarks/README.md for the meaning of each column and for the targets.

Exit status: 0 when everything ran (whatever the figures), 1 when something crashed (an untraced
program, our recorder, or a checksum mismatch between a timelapse run and the untraced run).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROGRAMS_DIR = HERE / "programs"
WORK = HERE / ".work"
REF_VENV = WORK / "ref-venv"
REF_PACKAGE = "codetracer-python-recorder"
REF_VERSION = "0.3.0"

# Targets (benchmark figures, not tests).
TARGET_VS_REFERENCE = 3.0  # timelapse at least 3x faster than the reference, every program
TARGET_RECURSION_OVERHEAD = 100.0  # recorded / untraced on "recursion", at most
TARGET_PEAK_MB = 150.0  # timelapse peak RSS, any program, any length

UNTRACED_MIN_REPEAT = 5  # untraced runs are cheap: always take the best of at least this many


@dataclass
class Program:
    name: str
    script: str
    args: list[str] = field(default_factory=list)
    reference: bool = True  # run the reference recorder on it
    repeat: int | None = None  # fixed repeat count (overrides --repeat)
    note: str = ""


PROGRAMS = [
    Program("recursion", "recursion.py", note="fib(26) + ackermann(2, 200)"),
    Program("loop_locals", "loop_locals.py", note="120k iterations, 7 locals"),
    Program("objects", "objects.py", note="40 particles x 900 rounds, method calls"),
    Program("generators", "generators.py", note="4-stage generator pipeline + genexpr"),
    Program("long", "long.py", ["50000"], note="50k iterations"),
    Program(
        "long-x10",
        "long.py",
        ["500000"],
        reference=False,
        repeat=1,
        note="10x long: peak memory must not grow",
    ),
]


# --------------------------------------------------------------------------- running


@dataclass
class RunResult:
    ok: bool
    wall: float = 0.0  # best wall time, seconds
    peak_mb: float = 0.0  # max over the repeats of the child's max RSS
    stdout: str = ""
    error: str = ""
    trace: dict | None = None  # counts from the trace folder (recorded runs)


def _maxrss_mb(ru_maxrss: int) -> float:
    # Linux reports KiB, macOS bytes.
    return ru_maxrss / (1024 * 1024) if sys.platform == "darwin" else ru_maxrss / 1024


# Each measured command is started by this small launcher (run with `python -S`), which forks,
# execs the command, and reports wall time, exit status and the child's max RSS from wait4.
# Why not wait4 on a child of this script directly: on Linux a child's ru_maxrss starts at its
# parent's peak RSS (the pre-exec memory image counts), so the harness's own memory (e.g. after
# scanning a large trace) would leak into the figures. The launcher stays around 5 MB, below any
# Python program's own peak.
LAUNCHER = r"""
import os, signal, sys, time
result, timeout, cmd = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execv(cmd[0], cmd)
    except BaseException as e:
        os.write(2, ("cannot run %s: %s\n" % (cmd[0], e)).encode())
    os._exit(127)
timed_out = []
def on_alarm(*_):
    timed_out.append(1)
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, timeout)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
signal.setitimer(signal.ITIMER_REAL, 0)
with open(result, "w") as f:
    f.write("%r %d %d %d\n" % (wall, os.waitstatus_to_exitcode(status), ru.ru_maxrss,
                               len(timed_out)))
"""


def run_once(cmd: list[str], timeout: float) -> tuple[float, int, float, str, str]:
    """Run cmd; return (wall seconds, exit code, peak RSS MB, stdout, stderr)."""
    fd, result = tempfile.mkstemp(prefix="run-", suffix=".txt", dir=WORK)
    os.close(fd)
    try:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                [sys.executable, "-S", "-c", LAUNCHER, result, str(timeout), *cmd],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=WORK,
            )
            try:
                proc.wait(timeout + 60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            out.seek(0)
            err.seek(0)
            stdout = out.read().decode("utf-8", "replace")
            stderr = err.read().decode("utf-8", "replace")
        fields = Path(result).read_text().split()
    finally:
        os.unlink(result)
    if len(fields) != 4:
        raise RuntimeError(f"benchmark launcher failed (exit {proc.returncode}): "
                           f"{last_line(stderr) or 'no output'}")  # fmt: skip
    wall, code, maxrss, timed_out = float(fields[0]), int(fields[1]), int(fields[2]), fields[3]
    if timed_out != "0":
        stderr += f"\n(killed after the {timeout:.0f} s timeout)"
    return wall, code, _maxrss_mb(maxrss), stdout, stderr


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def checksum_lines(stdout: str) -> list[str]:
    return [ln.strip() for ln in stdout.splitlines() if ln.startswith("checksum")]


def run_repeated(
    make_cmd, repeat: int, timeout: float, out_dir: Path | None, keep: bool
) -> RunResult:
    """Run best-of-`repeat`. make_cmd(out_dir) -> argv. Counts the trace of the first run."""
    best = None
    peak = 0.0
    stdout = ""
    trace = None
    for i in range(repeat):
        if out_dir is not None:
            shutil.rmtree(out_dir, ignore_errors=True)
        wall, code, peak_mb, out, err = run_once(make_cmd(out_dir), timeout)
        if code != 0:
            reason = last_line(err) or last_line(out) or "no output"
            return RunResult(False, error=f"exit status {code}: {reason}", stdout=out)
        best = wall if best is None else min(best, wall)
        peak = max(peak, peak_mb)
        stdout = out
        if out_dir is not None and trace is None:
            trace = count_trace(out_dir)
            if trace is None:
                return RunResult(False, error=f"no trace written in {out_dir}", stdout=out)
    if out_dir is not None and not keep:
        shutil.rmtree(out_dir, ignore_errors=True)
    return RunResult(True, wall=best, peak_mb=peak, stdout=stdout, trace=trace)


# --------------------------------------------------------------------------- trace counting

# Keys that only ever appear as JSON object keys in these positions (a '"' inside a JSON string
# is escaped, so these byte patterns cannot come from string contents):
#   "Step":         one Step event
#   "variable_id":  one Value event or one Call argument
#   "Return":       one Return event (one return value)
#   "Call":         one Call event
# "DropLastStep" is a bare string in the event array; the same text as a string value (a str
# variable, a VariableName) always follows a ':', so those occurrences are subtracted.
_PATTERNS = {
    "steps": b'"Step":',
    "variable_ids": b'"variable_id":',
    "returns": b'"Return":',
    "calls": b'"Call":',
    "drops": b'"DropLastStep"',
    "drops_as_value": b':"DropLastStep"',
    "drops_as_value_sp": b': "DropLastStep"',
}
_CHUNK = 4 * 1024 * 1024


def count_events(path: Path) -> dict[str, int]:
    """Count event kinds in a trace.json by streaming byte search (no JSON parsing)."""
    counts = dict.fromkeys(_PATTERNS, 0)
    keep = max(len(p) for p in _PATTERNS.values()) - 1
    tail = b""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            buf = tail + chunk
            for key, pat in _PATTERNS.items():
                # occurrences entirely inside `tail` were counted with the previous chunk
                counts[key] += buf.count(pat) - tail.count(pat)
            tail = buf[-keep:]
    return counts


def folder_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def count_trace(out_dir: Path) -> dict | None:
    if not out_dir.is_dir():
        return None
    info = {"bytes": folder_bytes(out_dir), "format": None}
    if (out_dir / "trace.json").is_file():
        info["format"] = "json"
        c = count_events(out_dir / "trace.json")
        drops = c["drops"] - c["drops_as_value"] - c["drops_as_value_sp"]
        info["steps"] = c["steps"] - drops
        info["values"] = c["variable_ids"] + c["returns"]
        info["calls"] = c["calls"]
    elif (out_dir / "trace.bin").is_file():
        info["format"] = "bin"  # CBOR+zstd: not counted here (needs a zstd decoder)
        info["steps"] = info["values"] = info["calls"] = None
    else:
        return None
    return info


# --------------------------------------------------------------------------- runners


def untraced_cmd(prog: Program):
    return lambda _out: [sys.executable, str(PROGRAMS_DIR / prog.script), *prog.args]


def timelapse_cmd(prog: Program):
    return lambda out: [
        sys.executable, "-m", "timelapse", "record", "-q", "-o", str(out),
        str(PROGRAMS_DIR / prog.script), *prog.args,
    ]  # fmt: skip


def baseline_cmd(src: Path, prog: Program):
    """timelapse from another checkout (its ``src`` folder first on the path): before/after a change."""
    return lambda out: [
        shutil.which("env") or "/usr/bin/env", f"PYTHONPATH={src}",
        sys.executable, "-m", "timelapse", "record", "-q", "-o", str(out),
        str(PROGRAMS_DIR / prog.script), *prog.args,
    ]  # fmt: skip


def reference_cmd(ref_python: str, prog: Program):
    return lambda out: [
        ref_python, "-m", "codetracer_python_recorder", "--trace-dir", str(out),
        "--format", "json", str(PROGRAMS_DIR / prog.script), *prog.args,
    ]  # fmt: skip


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_reference() -> tuple[str | None, str]:
    """Make sure the reference recorder is installed in its own venv. Returns (python, reason)."""
    py = venv_python(REF_VENV)
    want = f"{sys.version_info[0]}.{sys.version_info[1]} {REF_VERSION}"
    probe = (
        "import sys, importlib.metadata as m; "
        f"print(f'{{sys.version_info[0]}}.{{sys.version_info[1]}}', m.version({REF_PACKAGE!r}))"
    )

    def installed() -> bool:
        if not py.exists():
            return False
        r = subprocess.run([str(py), "-c", probe], capture_output=True, text=True)
        return r.returncode == 0 and r.stdout.strip() == want

    if installed():
        return str(py), ""
    print(f"installing {REF_PACKAGE}=={REF_VERSION} into {REF_VENV.relative_to(HERE.parent)} ...",
          flush=True)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(REF_VENV)],
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         f"{REF_PACKAGE}=={REF_VERSION}"],
    ]  # fmt: skip
    for cmd in steps:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as e:
            return None, str(e)
        if r.returncode != 0:
            return None, last_line(r.stderr) or last_line(r.stdout) or f"exit {r.returncode}"
    if not installed():
        return None, "installed, but the package is not importable"
    return str(py), ""


PROBE_SOURCE = "def f(x):\n    y = x + 1\n    return y\n\nprint('checksum', f(41))\n"


def probe_timelapse(timeout: float) -> str:
    """Record a tiny program; return '' if it works, else the reason."""
    script = WORK / "probe.py"
    script.write_text(PROBE_SOURCE)
    out = WORK / "traces" / "probe-timelapse"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "timelapse", "record", "-q", "-o", str(out), str(script)]
    try:
        _wall, code, _peak, stdout, stderr = run_once(cmd, timeout)
    except OSError as e:
        return str(e)
    if code != 0:
        return f"exit status {code}: {last_line(stderr) or last_line(stdout) or 'no output'}"
    if checksum_lines(stdout) != ["checksum 42"]:
        return f"program output changed: {stdout.strip()!r}"
    info = count_trace(out)
    shutil.rmtree(out, ignore_errors=True)
    if info is None:
        return f"no trace.json / trace.bin written in {out}"
    if info["steps"] is not None and info["steps"] == 0:
        return "trace has no Step events"
    return ""


# --------------------------------------------------------------------------- report


def fmt_time(s: float) -> str:
    return f"{s:.3f}" if s < 10 else f"{s:.2f}" if s < 100 else f"{s:.1f}"


def fmt_int(n) -> str:
    return "-" if n is None else f"{n:,}"


def fmt_rate(n) -> str:
    if n is None:
        return "-"
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}k"
    return f"{n:.0f}"


def fmt_bytes(n: int) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


COLUMNS = [
    ("program", "<"), ("runner", "<"), ("time s", ">"), ("x untr", ">"), ("steps", ">"),
    ("steps/s", ">"), ("trace", ">"), ("B/step", ">"), ("values/s", ">"), ("peak MB", ">"),
    ("output", "<"),
]  # fmt: skip


def print_table(rows: list[list[str]]) -> None:
    widths = [len(h) for h, _ in COLUMNS]
    for row in rows:
        if row is None:
            continue
        for i, cell in enumerate(row[: len(COLUMNS) - 1]):
            widths[i] = max(widths[i], len(cell))

    def line(cells):
        parts = []
        for i, cell in enumerate(cells):
            align = COLUMNS[i][1] if i < len(COLUMNS) else "<"
            if i == len(COLUMNS) - 1:
                parts.append(cell)
            else:
                parts.append(cell.ljust(widths[i]) if align == "<" else cell.rjust(widths[i]))
        return "  ".join(parts).rstrip()

    header = line([h for h, _ in COLUMNS])
    print(header)
    print("-" * len(header))
    for row in rows:
        print("" if row is None else line(row))


def result_row(name: str, runner: str, res: RunResult, base: RunResult | None, check: str):
    if not res.ok:
        return [name, runner, "FAILED", "", "", "", "", "", "", "", res.error]
    ratio = f"{res.wall / base.wall:.1f}x" if base and base.ok and base.wall else "-"
    t = res.trace
    if t is None:  # untraced
        return [name, runner, fmt_time(res.wall), "1.0x" if base is res else ratio,
                "-", "-", "-", "-", "-", f"{res.peak_mb:.1f}", check]  # fmt: skip
    steps, values = t.get("steps"), t.get("values")
    return [
        name, runner, fmt_time(res.wall), ratio, fmt_int(steps),
        fmt_rate(steps / res.wall if steps is not None else None),
        fmt_bytes(t["bytes"]),
        f"{t['bytes'] / steps:.0f}" if steps else "-",
        fmt_rate(values / res.wall if values is not None else None),
        f"{res.peak_mb:.1f}", check,
    ]  # fmt: skip


# --------------------------------------------------------------------------- main


def parse_args(argv):
    names = ", ".join(p.name for p in PROGRAMS)
    ap = argparse.ArgumentParser(
        description="Benchmark the timelapse recorder against untraced Python and the "
        f"reference recorder ({REF_PACKAGE} {REF_VERSION}).",
        epilog=f"programs: {names}",
    )
    ap.add_argument("--quick", action="store_true", help="one run per measurement (--repeat 1)")
    ap.add_argument("--programs", help="comma-separated subset of the programs to run")
    ap.add_argument("--no-reference", action="store_true", help="skip the reference recorder")
    ap.add_argument("--no-timelapse", action="store_true", help="skip our recorder")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="also run timelapse from another checkout's src folder (before/after a change)")
    ap.add_argument("--repeat", type=int, default=None, help="best of N runs (default 3)")
    ap.add_argument("--timeout", type=float, default=900.0,
                    help="seconds before a single run is killed (default 900)")  # fmt: skip
    ap.add_argument("--keep-traces", action="store_true",
                    help="keep the trace folders in benchmarks/.work/traces/")  # fmt: skip
    args = ap.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    if args.programs:
        wanted = [s.strip() for s in args.programs.split(",") if s.strip()]
        known = {p.name for p in PROGRAMS}
        unknown = [w for w in wanted if w not in known]
        if unknown:
            ap.error(f"unknown program(s): {', '.join(unknown)} (known: {names})")
        args.selected = [p for p in PROGRAMS if p.name in wanted]
    else:
        args.selected = list(PROGRAMS)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    traces = WORK / "traces"
    traces.mkdir(exist_ok=True)
    failures: list[str] = []

    print(f"python {sys.version.split()[0]} ({sys.executable}), best of {args.repeat}, "
          f"untraced best of {max(args.repeat, UNTRACED_MIN_REPEAT)}")  # fmt: skip

    ref_python = None
    if not args.no_reference:
        ref_python, reason = ensure_reference()
        if ref_python is None:
            print(f"reference recorder unavailable ({REF_PACKAGE}=={REF_VERSION}): {reason}; "
                  "skipping the reference columns")  # fmt: skip
        else:
            print(f"reference: {REF_PACKAGE} {REF_VERSION} in {ref_python}")

    use_timelapse = not args.no_timelapse
    if use_timelapse:
        reason = probe_timelapse(args.timeout)
        if reason:
            print(f"timelapse recorder failed: {reason}")
            failures.append(f"timelapse recorder failed: {reason}")
            use_timelapse = False
    print(flush=True)

    rows: list = []
    results: dict[str, dict[str, RunResult]] = {}
    for prog in args.selected:
        repeat = prog.repeat or args.repeat
        res: dict[str, RunResult] = {}
        print(f"  {prog.name}: untraced ...", end="", flush=True)
        base = run_repeated(untraced_cmd(prog), max(repeat, UNTRACED_MIN_REPEAT), args.timeout,
                            None, False)  # fmt: skip
        res["untraced"] = base
        expected = checksum_lines(base.stdout) if base.ok else None
        if not base.ok:
            failures.append(f"{prog.name}: untraced run crashed: {base.error}")
        elif not expected:
            failures.append(f"{prog.name}: untraced run printed no checksum line")

        def check(r: RunResult) -> str:
            if not r.ok or expected is None:
                return ""
            got = checksum_lines(r.stdout)
            if got == expected:
                return "checksum ok"
            return f"CHECKSUM MISMATCH: {got} != untraced {expected}"

        runners = []
        if use_timelapse:
            runners.append(("timelapse", timelapse_cmd(prog)))
        if args.baseline is not None:
            runners.append(("baseline", baseline_cmd(args.baseline.resolve(), prog)))
        if ref_python and prog.reference:
            runners.append(("reference", reference_cmd(ref_python, prog)))
        for runner, make in runners:
            print(f" {runner} ...", end="", flush=True)
            r = run_repeated(make, repeat, args.timeout, traces / f"{runner}-{prog.name}",
                             args.keep_traces)  # fmt: skip
            res[runner] = r
            c = check(r)
            if runner in ("timelapse", "baseline"):
                if not r.ok:
                    failures.append(f"{prog.name}: {runner} run crashed: {r.error}")
                elif c.startswith("CHECKSUM MISMATCH"):
                    failures.append(f"{prog.name}: {runner} output differs from untraced: {c}")
        print(flush=True)
        results[prog.name] = res

        shown = "; ".join(expected) if expected else ""
        if len(shown) > 40:
            shown = shown[:37] + "..."
        rows.append(result_row(prog.name, "untraced", base, base, shown))
        for runner in ("timelapse", "baseline", "reference"):
            if runner in res:
                rows.append(result_row("", runner, res[runner], base, check(res[runner])))
            elif runner == "reference" and ref_python and not prog.reference:
                rows.append(["", runner, "skipped", "", "", "", "", "", "", "",
                             "(holds its whole trace in memory)"])  # fmt: skip
        ours, ref, before = res.get("timelapse"), res.get("reference"), res.get("baseline")
        if ours and before and ours.ok and before.ok:
            rows.append(["", "baseline / ours", f"{before.wall / ours.wall:.2f}x", "", "", "", "", "",
                         "", f"{before.peak_mb / ours.peak_mb:.1f}x", ""])  # fmt: skip
        if ours and ref and ours.ok and ref.ok:
            rows.append(["", "ref / ours", f"{ref.wall / ours.wall:.2f}x", "", "", "", "", "",
                         "", f"{ref.peak_mb / ours.peak_mb:.1f}x", ""])  # fmt: skip
        rows.append(None)

    print()
    print_table(rows)
    print_targets(results)

    if failures:
        print()
        for f in failures:
            print(f"FAILED: {f}")
        return 1
    return 0


def print_targets(results: dict[str, dict[str, RunResult]]) -> None:
    print("Targets (benchmark figures, not tests)")

    def ok(flag: bool) -> str:
        return "met" if flag else "MISSED"

    # 1. >= 3x faster than the reference on every program
    parts = []
    all_ok = True
    for name, res in results.items():
        ours, ref = res.get("timelapse"), res.get("reference")
        if ours and ref and ours.ok and ref.ok:
            x = ref.wall / ours.wall
            all_ok &= x >= TARGET_VS_REFERENCE
            parts.append(f"{name} {x:.2f}x")
    if parts:
        print(f"  >= {TARGET_VS_REFERENCE:.0f}x faster than the reference on every program: "
              f"{ok(all_ok)} ({', '.join(parts)})")  # fmt: skip
    else:
        print(f"  >= {TARGET_VS_REFERENCE:.0f}x faster than the reference: n/a "
              "(needs both recorders)")  # fmt: skip

    # 2. <= 100x untraced on recursion
    rec = results.get("recursion", {})
    ours, base = rec.get("timelapse"), rec.get("untraced")
    if ours and base and ours.ok and base.ok:
        x = ours.wall / base.wall
        print(f"  <= {TARGET_RECURSION_OVERHEAD:.0f}x untraced on recursion: "
              f"{ok(x <= TARGET_RECURSION_OVERHEAD)} ({x:.1f}x)")  # fmt: skip
    else:
        print(f"  <= {TARGET_RECURSION_OVERHEAD:.0f}x untraced on recursion: n/a")

    # 3. peak memory < 150 MB whatever the length
    peaks = {n: r["timelapse"].peak_mb for n, r in results.items()
             if r.get("timelapse") and r["timelapse"].ok}  # fmt: skip
    if peaks:
        worst = max(peaks, key=peaks.get)
        line = (f"  peak memory < {TARGET_PEAK_MB:.0f} MB: {ok(peaks[worst] < TARGET_PEAK_MB)} "
                f"(max {peaks[worst]:.1f} MB on {worst}")  # fmt: skip
        if "long" in peaks and "long-x10" in peaks:
            line += (f"; long {peaks['long']:.1f} MB -> long-x10 {peaks['long-x10']:.1f} MB, "
                     f"{peaks['long-x10'] / peaks['long']:.2f}x for 10x the length")
        print(line + ")")
    else:
        print(f"  peak memory < {TARGET_PEAK_MB:.0f} MB: n/a")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(1)
