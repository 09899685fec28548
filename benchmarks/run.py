#!/usr/bin/env python3
"""Benchmark harness: timelapse vs. untraced Python vs. two peer recorders.

    python benchmarks/run.py [--quick] [--programs a,b] [--no-reference] [--no-pyttd] [--no-peers]
                             [--formats json,bin] [--repeat N] [--baseline SRC] [--json FILE]

Every run is a subprocess. Reported per program and runner: wall time (best of N, with the min-max
spread when N > 1), ratio to the untraced run, Step events per second, trace bytes per step, values
encoded per second, peak RSS. The peers are the reference recorder (codetracer-python-recorder) and
py-tt-debug, each installed on first use into its own venv under benchmarks/.work/.
See benchmarks/README.md for the meaning of each column and for the targets.

With ``--formats json,bin`` our recorder runs once per format (``timelapse-json``, ``timelapse-bin``
rows, their repeats interleaved), and a second table compares the formats: time and its ratio,
trace file size and its ratio, bytes per step, peak RSS (issue 12's targets under it). Every
timelapse run passes ``--format`` explicitly (by default the recorder's own default format).

Exit status: 0 when everything ran (whatever the figures), 1 when something crashed (an untraced
program, our recorder, or a checksum mismatch between a timelapse run and the untraced run).
A peer's failure is shown in its row and does not change the exit status.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROGRAMS_DIR = HERE / "programs"
WORK = HERE / ".work"
REF_VENV = WORK / "ref-venv"
REF_PACKAGE = "codetracer-python-recorder"
REF_VERSION = "0.3.0"
PYTTD_VENV = WORK / "pyttd-venv"
PYTTD_PACKAGE = "py-tt-debug"
PYTTD_VERSION = "0.8.0"
PYTTD_DB = "recording.pyttd.db"  # the file pyttd writes (--db-path), inside its trace folder

# Targets (issue 11; benchmark figures, not tests).
TARGET_VS_REFERENCE = 3.0  # timelapse at least 3x faster than the reference, every program
TARGET_VS_PYTTD = 1.0  # timelapse no slower than py-tt-debug where it completes
TARGET_UNCHANGED_PAIR = 2.0  # time per step, "unchanged" vs "unchanged-int", within this factor
TARGET_RECURSION_OVERHEAD = 100.0  # recorded / untraced on "recursion", at most
TARGET_PEAK_MB = 100.0  # timelapse peak RSS, any program, any length
# Targets of issue 12 (trace.bin against trace.json, with --formats json,bin).
TARGET_BIN_SMALLER = 10.0  # trace.json / trace.bin, every program, at least
TARGET_BIN_TIME = 1.3  # time recording trace.bin / time recording trace.json, every program, at most
FORMATS = ("json", "bin")  # what `timelapse record --format` takes
STREAM_FILES = {"json": "trace.json", "bin": "trace.bin"}

UNTRACED_MIN_REPEAT = 5  # untraced runs are cheap: always take the best of at least this many
RECORDED = ("timelapse", "baseline", "reference", "pyttd")  # runners, in table order
PEERS = ("reference", "pyttd")


@dataclass
class Program:
    name: str
    script: str
    args: list[str] = field(default_factory=list)
    reference: bool = True  # run the reference recorder on it
    pyttd: bool = True  # run py-tt-debug on it
    repeat: int | None = None  # fixed repeat count (overrides --repeat)
    note: str = ""


PROGRAMS = [
    Program("recursion", "recursion.py", note="fib(26) + ackermann(2, 200)"),
    Program("loop_locals", "loop_locals.py", note="120k iterations, 7 locals"),
    Program("objects", "objects.py", note="40 particles x 900 rounds, method calls"),
    Program("generators", "generators.py", note="4-stage generator pipeline + genexpr"),
    Program("long", "long.py", ["50000"], note="50k iterations"),
    Program("bank", "bank.py", note="20 accounts with growing histories, self reaches all"),
    Program("records", "records.py", note="200 nested dicts updated in place"),
    Program("unchanged", "unchanged.py", ["big"], note="50k steps holding a 1,000-node value"),
    Program("unchanged-int", "unchanged.py", ["int"], note="the same 50k steps holding an int"),
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
    walls: list[float] = field(default_factory=list)  # every repeat's wall time, seconds
    peak_mb: float = 0.0  # max over the repeats of the child's max RSS
    stdout: str = ""
    error: str = ""
    trace: dict | None = None  # counts from the trace folder (recorded runs)
    check: str = ""  # the output column: the checksum (untraced), or whether it matches
    incomplete: str = ""  # ran and matched, but its recording lacks part of what it recorded


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


class Runs:
    """The runs of one runner so far: ``once()`` runs it again (unless it failed), ``result()`` sums
    them up. ``run_repeated`` runs one runner N times; ``run_interleaved`` takes turns between
    several (on a shared machine, a slow spell then weighs on each of them alike)."""

    def __init__(self, make_cmd, timeout: float, out_dir: Path | None, check_output=None) -> None:
        self.make_cmd, self.timeout, self.out_dir = make_cmd, timeout, out_dir
        self.check_output = check_output
        self.walls: list[float] = []
        self.peak = 0.0
        self.stdout = ""
        self.trace: dict | None = None
        self.failed: RunResult | None = None

    def once(self) -> bool:
        """One more run; False (and ``failed`` set) if it failed, or an earlier one did."""
        if self.failed is not None:
            return False
        out_dir = self.out_dir
        if out_dir is not None:
            shutil.rmtree(out_dir, ignore_errors=True)
        wall, code, peak_mb, out, err = run_once(self.make_cmd(out_dir), self.timeout)
        if code != 0:
            reason = last_line(err) or last_line(out) or "no output"
            return self._fail(f"exit status {code}: {reason}", out)
        reason = self.check_output(out) if self.check_output else ""
        if reason:
            return self._fail(reason, out)
        self.walls.append(wall)
        self.peak = max(self.peak, peak_mb)
        self.stdout = out
        if out_dir is not None and self.trace is None:
            self.trace = count_trace(out_dir)
            if self.trace is None:
                return self._fail(f"no trace written in {out_dir}", out)
            if self.trace.get("error"):
                return self._fail(self.trace["error"], out)
        return True

    def _fail(self, error: str, stdout: str) -> bool:
        self.failed = RunResult(False, error=error, stdout=stdout)
        return False

    def result(self, keep: bool) -> RunResult:
        if self.out_dir is not None and not keep:
            shutil.rmtree(self.out_dir, ignore_errors=True)
        if self.failed is not None:
            return self.failed
        return RunResult(True, wall=min(self.walls), walls=self.walls, peak_mb=self.peak,
                         stdout=self.stdout, trace=self.trace)  # fmt: skip


def run_repeated(
    make_cmd, repeat: int, timeout: float, out_dir: Path | None, keep: bool, check_output=None
) -> RunResult:
    """Run best-of-`repeat`. make_cmd(out_dir) -> argv. Counts the trace of the first run.

    check_output(stdout) -> '' or the reason a run that exited 0 still failed (e.g. a recorder that
    reports the program's exception on its stdout and exits 0)."""
    runs = Runs(make_cmd, timeout, out_dir, check_output)
    for _ in range(repeat):
        if not runs.once():
            break
    return runs.result(keep)


def run_interleaved(specs, repeat: int, timeout: float, keep: bool) -> dict[str, RunResult]:
    """Best-of-`repeat` of several runners, taking turns: round 1 runs each once, in order, then round
    2... So ``walls[i]`` of each is from the same round (``paired_ratios``). specs: (name, make_cmd,
    out_dir, check_output). A runner that fails is left out of the later rounds."""
    runs = {name: Runs(make, timeout, out_dir, check) for name, make, out_dir, check in specs}
    for _ in range(repeat):
        for r in runs.values():
            r.once()
    return {name: r.result(keep) for name, r in runs.items()}


def paired_ratios(a: RunResult, b: RunResult) -> list[float]:
    """a's time / b's time in each round both ran (``run_interleaved``)."""
    return [x / y for x, y in zip(a.walls, b.walls) if y]


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


# trace.bin (CBOR items in a seekable zstd stream, after an 8-byte header): the same events, counted
# the same way in the decompressed frames. The Step, Return and Call patterns are an event's map
# head, its variant key and the head of its payload, e.g. a Step is A1 64 "Step" A2 ({"Step": {2
# keys}}): none can occur inside a CBOR text string (valid UTF-8: an ASCII byte is never followed by
# a continuation byte 0xA1/0xA2) nor straddle items (no other map key is "Step"...), so those counts
# are exact (barring the 8 payload bytes of a huge int spelling one). "variable_id" is, as in
# trace.json, one per Value event and one per Call argument ({"variable_id", "value"} maps, A2 6B
# "variable_id"); that one would also count a string value holding e.g. "¢kvariable_id" (¢ ends in
# 0xA2). The recorder writes no DropLastStep.
_BIN_PATTERNS = {
    "steps": b"\xa1dStep\xa2",
    "variable_ids": b"\xa2kvariable_id",
    "returns": b"\xa1fReturn\xa1",
    "calls": b"\xa1dCall\xa2",
}
BIN_HEADER = bytes.fromhex("C0DE72ACE2010000")
_SKIPPABLE_MAGIC = 0x184D2A5E
_SEEKABLE_MAGIC = 0x8F92EAB1


def bin_frames(path: Path) -> list[tuple[int, int, int]]:
    """The frames of a trace.bin, from its seek table: (offset, compressed size, decompressed size).
    Raises ValueError if the file is not a complete trace.bin of this encoding."""
    import struct

    with open(path, "rb") as f:
        if f.read(8) != BIN_HEADER:
            raise ValueError("not a trace.bin (header)")
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size < 8 + 17:
            raise ValueError("no seek table")
        f.seek(size - 9)
        count, descriptor, magic = struct.unpack("<IBI", f.read(9))
        if magic != _SEEKABLE_MAGIC:
            raise ValueError("no seek table at the end (unfinished recording?)")
        entry = 12 if descriptor & 0x80 else 8
        body = count * entry + 9
        f.seek(size - body - 8)
        skippable, length = struct.unpack("<II", f.read(8))
        if skippable != _SKIPPABLE_MAGIC or length != body:
            raise ValueError("seek table frame malformed")
        table = f.read(count * entry)
    frames, offset = [], 8
    for i in range(count):
        compressed, decompressed = struct.unpack_from("<II", table, i * entry)
        frames.append((offset, compressed, decompressed))
        offset += compressed
    if offset != size - body - 8:
        raise ValueError("the frames do not fill the file up to its seek table")
    return frames


def bin_stream(path: Path, frames: list[tuple[int, int, int]] | None = None):
    """The decompressed frames of a trace.bin (bytes, one per frame, in order)."""
    import pyzstd

    frames = bin_frames(path) if frames is None else frames
    with open(path, "rb") as f:
        for offset, compressed, decompressed in frames:
            f.seek(offset)
            data = pyzstd.decompress(f.read(compressed))
            if len(data) != decompressed:
                raise ValueError(f"frame at {offset}: {len(data)} bytes, seek table says {decompressed}")
            yield data


def count_bin(path: Path) -> dict:
    """Event counts of a trace.bin, and its frames (count, decompressed bytes)."""
    try:
        frames = bin_frames(path)
        counts = dict.fromkeys(_BIN_PATTERNS, 0)
        for data in bin_stream(path, frames):
            for key, pat in _BIN_PATTERNS.items():
                counts[key] += data.count(pat)  # events never straddle two frames
    except ImportError:
        return {"steps": None, "values": None, "calls": None, "frames": None, "cbor_bytes": None}
    except (ValueError, OSError) as e:
        return {"error": f"trace.bin unreadable: {e}"}
    return {"steps": counts["steps"], "values": counts["variable_ids"] + counts["returns"],
            "calls": counts["calls"], "frames": len(frames),
            "cbor_bytes": sum(d for _, _, d in frames)}  # fmt: skip


def folder_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def count_pyttd(db: Path) -> dict:
    """Steps of a py-tt-debug database: its 'line' events (one row each in executionframes, counted
    on the (run_id, frame_event, sequence_no) index). The folder holds one run."""
    try:
        con = sqlite3.connect(db)
        try:
            steps = con.execute(
                "SELECT COUNT(*) FROM executionframes WHERE frame_event = 'line'"
            ).fetchone()[0]
            calls = con.execute(
                "SELECT COUNT(*) FROM executionframes WHERE frame_event = 'call'"
            ).fetchone()[0]
            rows = con.execute("SELECT COUNT(*) FROM executionframes").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error as e:
        return {"error": f"database unreadable: {e}"}
    if not steps:
        return {"error": "database holds no line events"}
    return {"steps": steps, "calls": calls, "values": None, "frames_written": rows}


def count_trace(out_dir: Path) -> dict | None:
    if not out_dir.is_dir():
        return None
    info = {"bytes": folder_bytes(out_dir), "format": None}
    if (out_dir / "trace.json").is_file():
        info["format"] = "json"
        info["stream_bytes"] = (out_dir / "trace.json").stat().st_size
        c = count_events(out_dir / "trace.json")
        drops = c["drops"] - c["drops_as_value"] - c["drops_as_value_sp"]
        info["steps"] = c["steps"] - drops
        info["values"] = c["variable_ids"] + c["returns"]
        info["calls"] = c["calls"]
    elif (out_dir / "trace.bin").is_file():
        info["format"] = "bin"  # counted if this interpreter has pyzstd (timelapse needs it)
        info["stream_bytes"] = (out_dir / "trace.bin").stat().st_size
        info.update(count_bin(out_dir / "trace.bin"))
    elif (out_dir / PYTTD_DB).is_file():
        info["format"] = "pyttd-sqlite"
        info.update(count_pyttd(out_dir / PYTTD_DB))
    else:
        return None
    return info


# --------------------------------------------------------------------------- runners


def untraced_cmd(prog: Program):
    return lambda _out: [sys.executable, str(PROGRAMS_DIR / prog.script), *prog.args]


def timelapse_cmd(prog: Program, fmt: str):
    """Our recorder, the format always given (whatever the default, or a config, would choose)."""
    return lambda out: [
        sys.executable, "-m", "timelapse", "record", "-q", "--format", fmt, "-o", str(out),
        str(PROGRAMS_DIR / prog.script), *prog.args,
    ]  # fmt: skip


def baseline_cmd(src: Path, prog: Program, fmt: str | None):
    """timelapse from another checkout (its ``src`` folder first on the path): before/after a change.
    fmt: the --format to pass, None for a checkout that has no such option (it writes trace.json)."""
    given = ["--format", fmt] if fmt else []
    return lambda out: [
        shutil.which("env") or "/usr/bin/env", f"PYTHONPATH={src}",
        sys.executable, "-m", "timelapse", "record", "-q", *given, "-o", str(out),
        str(PROGRAMS_DIR / prog.script), *prog.args,
    ]  # fmt: skip


def baseline_knows_format(src: Path) -> bool:
    """Whether the checkout's `timelapse record` takes --format (older ones write only trace.json)."""
    try:
        return '"--format"' in (src / "timelapse" / "cli.py").read_text(encoding="utf-8")
    except OSError:
        return False


def default_format() -> str:
    """The format `timelapse record` writes when not told (timelapse.config.DEFAULT_FORMAT), asked
    of the interpreter that is measured; "json" if it cannot say (a recorder older than --format)."""
    probe = "from timelapse.config import DEFAULT_FORMAT; print(DEFAULT_FORMAT)"
    try:
        r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "json"
    got = r.stdout.strip()
    return got if r.returncode == 0 and got in FORMATS else "json"


def timelapse_runner(fmt: str, formats: list[str]) -> str:
    """The runner name of our recorder writing fmt: "timelapse" when only one format is measured
    (tables and --json as before the format axis), else "timelapse-json", "timelapse-bin"."""
    return "timelapse" if len(formats) == 1 else f"timelapse-{fmt}"


def reference_cmd(ref_python: str, prog: Program):
    return lambda out: [
        ref_python, "-m", "codetracer_python_recorder", "--trace-dir", str(out),
        "--format", "json", str(PROGRAMS_DIR / prog.script), *prog.args,
    ]  # fmt: skip


def pyttd_cmd(pyttd: list[str], prog: Program):
    """py-tt-debug: its database goes in the trace folder; the program's arguments follow --args
    (pyttd record takes no positional arguments after the script)."""

    def make(out: Path) -> list[str]:
        out.mkdir(parents=True, exist_ok=True)  # --db-path needs its folder
        cmd = [*pyttd, "record", "--checkpoint-interval", "0", "--db-path", str(out / PYTTD_DB),
               str(PROGRAMS_DIR / prog.script)]  # fmt: skip
        return cmd + ["--args", *prog.args] if prog.args else cmd

    return make


def pyttd_frames_recorded(stdout: str) -> int | None:
    """frame_count from pyttd's last line, `Recording complete: {'frame_count': N, ...}`."""
    for ln in stdout.splitlines():
        if ln.startswith("Recording complete: "):
            try:
                return int(ast.literal_eval(ln.split(": ", 1)[1])["frame_count"])
            except (ValueError, SyntaxError, KeyError, TypeError):
                return None
    return None


def pyttd_incomplete(r: RunResult) -> str:
    """'' if the database holds every frame pyttd says it recorded, else how many it holds."""
    if not r.ok or r.trace is None:
        return ""
    recorded, written = pyttd_frames_recorded(r.stdout), r.trace.get("frames_written")
    r.trace["frames_recorded"] = recorded
    if recorded is not None and written is not None and written < recorded:
        return f"INCOMPLETE: its database holds {written:,} of the {recorded:,} frames it recorded"
    return ""


def pyttd_output_error(stdout: str) -> str:
    """pyttd reports an exception of the program on its stdout and still exits 0."""
    for ln in stdout.splitlines():
        if ln.startswith("Script exited with "):
            return ln.strip()
    return ""


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv(venv: Path, package: str, version: str) -> tuple[Path | None, str]:
    """Make sure package==version is installed in its own venv (made with this Python version).
    Returns (the venv's python, '') or (None, the reason)."""
    py = venv_python(venv)
    want = f"{sys.version_info[0]}.{sys.version_info[1]} {version}"
    probe = (
        "import sys, importlib.metadata as m; "
        f"print(f'{{sys.version_info[0]}}.{{sys.version_info[1]}}', m.version({package!r}))"
    )

    def installed() -> bool:
        if not py.exists():
            return False
        r = subprocess.run([str(py), "-c", probe], capture_output=True, text=True)
        return r.returncode == 0 and r.stdout.strip() == want

    if installed():
        return py, ""
    print(f"installing {package}=={version} into {venv.relative_to(HERE.parent)} ...", flush=True)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         f"{package}=={version}"],
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
    return py, ""


def ensure_reference() -> tuple[str | None, str]:
    py, reason = ensure_venv(REF_VENV, REF_PACKAGE, REF_VERSION)
    return (str(py) if py else None), reason


def pyttd_sqlite_lib() -> Path | None:
    """The SQLite library bundled in the py-tt-debug wheel (py_tt_debug.libs/libsqlite3-*.so*)."""
    for lib in sorted(PYTTD_VENV.glob("lib/python*/site-packages/py_tt_debug.libs/libsqlite3*")):
        return lib
    return None


def ensure_pyttd(preload: bool) -> tuple[list[str] | None, str, str]:
    """Install py-tt-debug if needed. Returns (argv prefix running `pyttd`, note, reason).

    Its native extension writes the frames through the SQLite it bundles while its Python side
    (run row, indexes) goes through the interpreter's own sqlite3 module, another SQLite copy: two
    copies in one process do not see each other's POSIX locks, and the database comes out corrupt
    ("file is not a database" at stop, on many runs, timing-dependent, whatever stdout is). With `preload`, the
    bundled library is LD_PRELOADed so that both sides use the one copy."""
    py, reason = ensure_venv(PYTTD_VENV, PYTTD_PACKAGE, PYTTD_VERSION)
    if py is None:
        return None, "", reason
    exe = py.parent / ("pyttd.exe" if os.name == "nt" else "pyttd")
    if not exe.exists():
        return None, "", f"{exe} missing"
    if not preload:
        return [str(exe)], "as installed (no LD_PRELOAD)", ""
    lib = pyttd_sqlite_lib()
    if lib is None or sys.platform != "linux":
        return [str(exe)], "as installed (no bundled libsqlite3 to LD_PRELOAD here)", ""
    env = shutil.which("env") or "/usr/bin/env"
    return [env, f"LD_PRELOAD={lib}", str(exe)], f"LD_PRELOAD={lib.name}", ""


def compile_bytecode(python: str, folders: list[Path]) -> str:
    """Write the bytecode caches (``__pycache__``) of the recorders' own modules, with the
    interpreter that runs them: '' or why it could not.

    What a user runs has them: pip compiles a package's modules when it installs it. Without them,
    each run compiles the recorder again (this environment sets PYTHONDONTWRITEBYTECODE=1, so
    nothing is cached by running): ~0.07 s more for timelapse, more than the untraced `bank`
    takes. Done for every row alike before anything is measured (our timelapse, a --baseline
    checkout, each peer's venv); the interpreter's standard library has its caches already. The
    programs measured are scripts, compiled at every run whoever runs them."""
    existing = [str(f) for f in folders if f.is_dir()]
    if not existing:
        return ""
    try:
        r = subprocess.run([python, "-m", "compileall", "-q", "-j", "0", *existing],
                           capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return "" if r.returncode == 0 else last_line(r.stdout + r.stderr) or f"exit {r.returncode}"


def package_folder(python: str, package: str, path: Path | None = None) -> Path | None:
    """Where ``package`` is imported from by ``python`` (with ``path`` first on sys.path)."""
    code = f"import {package}, os; print(os.path.dirname({package}.__file__))"
    env = dict(os.environ, PYTHONPATH=str(path)) if path is not None else None
    try:
        r = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return Path(r.stdout.strip()) if r.returncode == 0 and r.stdout.strip() else None


def venv_site_packages(python: str) -> list[Path]:
    venv = Path(python).parent.parent
    return sorted(venv.glob("lib/python*/site-packages")) or sorted(venv.glob("Lib/site-packages"))


def has_compiled_speedups(folder: Path) -> bool:
    """Whether a timelapse package folder holds its built C extension (a checkout needs a build)."""
    return any(folder.glob("_speedups*.so")) or any(folder.glob("_speedups*.pyd"))


PROBE_SOURCE = "def f(x):\n    y = x + 1\n    return y\n\nprint('checksum', f(41))\n"


def probe_timelapse(timeout: float, traces: Path, fmt: str) -> str:
    """Record a tiny program in format fmt; return '' if it works, else the reason."""
    script = traces / "probe.py"
    script.write_text(PROBE_SOURCE)
    out = traces / "probe-timelapse"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "timelapse", "record", "-q", "--format", fmt, "-o", str(out),
           str(script)]  # fmt: skip
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
    script.unlink(missing_ok=True)
    if info is None:
        return f"no trace.json / trace.bin written in {out}"
    if info.get("error"):
        return info["error"]
    if info["format"] != fmt:
        return f"asked for --format {fmt}, it wrote {STREAM_FILES.get(info['format'], info['format'])}"
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


def print_table(rows: list[list[str]], columns=COLUMNS) -> None:
    """Aligned columns; the last one (free text) is not padded. A None row is an empty line."""
    widths = [len(h) for h, _ in columns]
    for row in rows:
        if row is None:
            continue
        for i, cell in enumerate(row[: len(columns) - 1]):
            widths[i] = max(widths[i], len(cell))

    def line(cells):
        parts = []
        for i, cell in enumerate(cells):
            align = columns[i][1] if i < len(columns) else "<"
            if i == len(columns) - 1:
                parts.append(cell)
            else:
                parts.append(cell.ljust(widths[i]) if align == "<" else cell.rjust(widths[i]))
        return "  ".join(parts).rstrip()

    header = line([h for h, _ in columns])
    print(header)
    print("-" * len(header))
    for row in rows:
        print("" if row is None else line(row))


def fmt_wall(res: RunResult) -> str:
    """Best wall time; with more than one run, the spread of them all: `1.203 (1.203–1.310)`."""
    text = fmt_time(res.wall)
    if len(res.walls) > 1:
        text += f" ({fmt_time(min(res.walls))}–{fmt_time(max(res.walls))})"
    return text


def result_row(name: str, runner: str, res: RunResult, base: RunResult | None):
    if not res.ok:
        return [name, runner, "FAILED", "", "", "", "", "", "", "", res.error]
    ratio = f"{res.wall / base.wall:.1f}x" if base and base.ok and base.wall else "-"
    t = res.trace
    if t is None:  # untraced
        return [name, runner, fmt_time(res.wall), "1.0x" if base is res else ratio,
                "-", "-", "-", "-", "-", f"{res.peak_mb:.1f}", res.check]  # fmt: skip
    steps, values = t.get("steps"), t.get("values")
    return [
        name, runner, fmt_wall(res), ratio, fmt_int(steps),
        fmt_rate(steps / res.wall if steps is not None else None),
        fmt_bytes(t["bytes"]),
        f"{t['bytes'] / steps:.0f}" if steps else "-",
        fmt_rate(values / res.wall if values is not None else None),
        f"{res.peak_mb:.1f}", "; ".join(x for x in (res.check, res.incomplete) if x),
    ]  # fmt: skip


def ratio_row(label: str, other: RunResult, ours: RunResult) -> list[str]:
    """other time / our time (how many times faster we are), other peak / our peak."""
    return ["", label, f"{other.wall / ours.wall:.2f}x", "", "", "", "", "", "",
            f"{other.peak_mb / ours.peak_mb:.1f}x", ""]  # fmt: skip


def completed(r: RunResult | None) -> bool:
    """Ran to the end, printed the untraced run's checksum, and wrote all it recorded."""
    return bool(r and r.ok and not r.check.startswith("CHECKSUM MISMATCH") and not r.incomplete)


def per_step(r: RunResult) -> float | None:
    steps = (r.trace or {}).get("steps")
    return r.wall / steps if steps else None


def bytes_per_step(r: RunResult) -> float | None:
    t = r.trace or {}
    return t["bytes"] / t["steps"] if t.get("steps") else None


# --------------------------------------------------------------------------- targets


def compute_targets(results: dict[str, dict[str, RunResult]]) -> list[dict]:
    """The targets of issue 11, evaluated on timelapse's rows. Each: text, status ('met', 'MISSED'
    or 'n/a'), detail (the figures), value (the figures as numbers, for --json)."""
    targets = []

    def add(text: str, flags: list[bool], parts: list[str], values, na: str = "") -> None:
        if not flags:
            targets.append({"text": text, "status": "n/a", "detail": ", ".join(parts) or na,
                            "value": None})  # fmt: skip
        else:
            targets.append({"text": text, "status": "met" if all(flags) else "MISSED",
                            "detail": ", ".join(parts), "value": values})  # fmt: skip

    def versus(peer: str, want: float, fmt) -> tuple[list[bool], list[str], dict]:
        """For every program the peer completed: ok(x) where x = peer's figure / ours."""
        flags, parts, values = [], [], {}
        for name, res in results.items():
            ours, other = res.get("timelapse"), res.get(peer)
            if ours is None or other is None:
                continue
            if other.ok and other.incomplete and ours.ok and fmt(ours, other):
                # shown, not counted: it did not write all it recorded
                parts.append(f"{name} {fmt(ours, other)[1]} [not counted: {peer} incomplete]")
                continue
            if not completed(other):
                continue
            if not ours.ok:
                flags.append(False)
                parts.append(f"{name}: timelapse failed")
                values[name] = None
                continue
            got = fmt(ours, other)
            if got is None:
                continue
            x, shown = got
            flags.append(x >= want)
            parts.append(f"{name} {shown}")
            values[name] = x
        return flags, parts, values

    # 1. at least 3x faster than the reference on every program
    def speed(ours: RunResult, other: RunResult):
        x = other.wall / ours.wall
        return x, f"{x:.2f}x"

    flags, parts, values = versus("reference", TARGET_VS_REFERENCE, speed)
    add(f">= {TARGET_VS_REFERENCE:.0f}x faster than the reference on every program", flags, parts,
        values, "needs timelapse and the reference")  # fmt: skip

    # 2. no slower than py-tt-debug where it completes
    flags, parts, values = versus("pyttd", TARGET_VS_PYTTD, speed)
    add("no slower than py-tt-debug where it completes", flags, parts, values,
        "needs timelapse and a completed py-tt-debug run")  # fmt: skip

    # 3. trace bytes per step no more than the reference's on every program
    def size(ours: RunResult, other: RunResult):
        # like for like: both trace.json (trace.bin is compared with trace.json in the format table)
        if (ours.trace or {}).get("format") != "json":
            return None
        a, b = bytes_per_step(ours), bytes_per_step(other)
        if a is None or b is None:
            return None
        return b / a, f"{a:.0f} vs {b:.0f} B/step"

    flags, parts, values = versus("reference", 1.0, size)
    add("trace bytes per step <= the reference's on every program", flags, parts, values,
        "needs timelapse and the reference, both writing trace.json")  # fmt: skip

    # 4. the unchanged pair within 2x of each other per step
    big, small = results.get("unchanged", {}), results.get("unchanged-int", {})
    a, b = big.get("timelapse"), small.get("timelapse")
    text = f"unchanged vs unchanged-int within {TARGET_UNCHANGED_PAIR:.0f}x per step"
    if a and b and a.ok and b.ok and per_step(a) and per_step(b):
        x = max(per_step(a), per_step(b)) / min(per_step(a), per_step(b))
        add(text, [x <= TARGET_UNCHANGED_PAIR],
            [f"{per_step(a) * 1e6:.2f} vs {per_step(b) * 1e6:.2f} µs/step: {x:.2f}x"],
            {"unchanged_s_per_step": per_step(a), "unchanged_int_s_per_step": per_step(b),
             "factor": x})  # fmt: skip
    else:
        add(text, [], [], None, "needs timelapse on both, with steps counted")

    # 5. peak memory under 100 MB on every program, whatever its length
    peaks = {n: r["timelapse"].peak_mb for n, r in results.items()
             if r.get("timelapse") and r["timelapse"].ok}  # fmt: skip
    text = f"peak memory < {TARGET_PEAK_MB:.0f} MB on every program"
    if peaks:
        worst = max(peaks, key=peaks.get)
        detail = f"max {peaks[worst]:.1f} MB on {worst}"
        if "long" in peaks and "long-x10" in peaks:
            detail += (f"; long {peaks['long']:.1f} MB -> long-x10 {peaks['long-x10']:.1f} MB, "
                       f"{peaks['long-x10'] / peaks['long']:.2f}x for 10x the length")
        add(text, [p < TARGET_PEAK_MB for p in peaks.values()], [detail], peaks)
    else:
        add(text, [], [], None)

    # 6. at most 100x untraced on recursion
    rec = results.get("recursion", {})
    ours, base = rec.get("timelapse"), rec.get("untraced")
    text = f"<= {TARGET_RECURSION_OVERHEAD:.0f}x untraced on recursion"
    if ours and base and ours.ok and base.ok:
        x = ours.wall / base.wall
        add(text, [x <= TARGET_RECURSION_OVERHEAD], [f"{x:.1f}x"], x)
    elif ours and not ours.ok:
        add(text, [False], ["timelapse failed"], None)
    else:
        add(text, [], [], None)
    return targets


def print_targets(targets: list[dict]) -> None:
    print("Targets (issue 11; benchmark figures, not tests)")
    for i, t in enumerate(targets, 1):
        detail = f" ({t['detail']})" if t["detail"] else ""
        print(f"  {i}. {t['text']}: {t['status']}{detail}")


# --------------------------------------------------------------------------- formats

FORMAT_COLUMNS = [
    ("program", "<"), ("format", "<"), ("time s", ">"), ("x json", ">"), ("steps", ">"),
    ("trace file", ">"), ("json / x", ">"), ("B/step", ">"), ("peak MB", ">"), ("frames", "<"),
]  # fmt: skip


def reference_format(formats: list[str]) -> str:
    """What the other formats are compared with: json when measured, else the first."""
    return "json" if "json" in formats else formats[0]


def stream_bytes(r: RunResult | None) -> int | None:
    return (r.trace or {}).get("stream_bytes") if r and r.ok else None


def format_versus(r: RunResult, ref: RunResult) -> dict | None:
    """r against ref (another format, same program): wall (best / best), wall_rounds (per round,
    run_interleaved), bytes (ref's trace file / r's), peak (r / ref)."""
    if not (r.ok and ref.ok):
        return None
    a, b = stream_bytes(r), stream_bytes(ref)
    return {"wall": r.wall / ref.wall, "wall_rounds": paired_ratios(r, ref),
            "bytes": b / a if a and b else None, "peak": r.peak_mb / ref.peak_mb}  # fmt: skip


def fmt_rounds(xs: list[float]) -> str:
    return f" ({min(xs):.2f}–{max(xs):.2f})" if len(xs) > 1 else ""


def format_rows(name: str, res: dict[str, RunResult], formats: list[str]) -> list[list[str]]:
    """The rows of one program in the format table: one per format."""
    ref_fmt = reference_format(formats)
    ref = res.get(timelapse_runner(ref_fmt, formats))
    rows = []
    for fmt in formats:
        r = res.get(timelapse_runner(fmt, formats))
        label = name if not rows else ""
        if r is None:
            continue
        if not r.ok:
            rows.append([label, fmt, "FAILED", "", "", "", "", "", "", r.error])
            continue
        t = r.trace or {}
        vs = format_versus(r, ref) if ref is not None and fmt != ref_fmt else None
        if fmt == ref_fmt:
            x_time, x_bytes = "1.00", "1.0x"
        elif vs is None:
            x_time = x_bytes = "-"
        else:
            x_time = f"{vs['wall']:.2f}{fmt_rounds(vs['wall_rounds'])}"
            x_bytes = f"{vs['bytes']:.1f}x" if vs["bytes"] else "-"
        size, steps = t.get("stream_bytes"), t.get("steps")
        frames = "-"
        if t.get("frames"):
            frames = f"{t['frames']:,} x {fmt_bytes(t['cbor_bytes'] // t['frames'])} CBOR"
        rows.append([
            label, fmt, fmt_wall(r), x_time, fmt_int(steps),
            fmt_bytes(size) if size is not None else "-", x_bytes,
            (f"{size / steps:.1f}" if size / steps < 100 else f"{size / steps:.0f}")
            if size is not None and steps else "-",
            f"{r.peak_mb:.1f}", frames,
        ])  # fmt: skip
    return rows


def compute_format_targets(results: dict[str, dict[str, RunResult]], formats: list[str]) -> list[dict]:
    """Issue 12's targets, trace.bin against trace.json (n/a unless both were measured)."""
    targets = []

    def add(text: str, flags: list[bool], parts: list[str], values, na: str = "") -> None:
        status = "n/a" if not flags else "met" if all(flags) else "MISSED"
        targets.append({"text": text, "status": status,
                        "detail": ", ".join(parts) or (na if not flags else ""),
                        "value": values if flags else None})  # fmt: skip

    both = "json" in formats and "bin" in formats
    pairs = {}
    if both:
        for name, res in results.items():
            j, b = res.get(timelapse_runner("json", formats)), res.get(timelapse_runner("bin", formats))
            if j is not None and b is not None:
                pairs[name] = (j, b)
    na = "needs --formats json,bin"

    # 1. trace.bin at least 10x smaller than trace.json, every program
    flags, parts, values = [], [], {}
    for name, (j, b) in pairs.items():
        vs = format_versus(b, j)
        if vs is None or vs["bytes"] is None:
            flags.append(False)
            parts.append(f"{name}: a run failed")
            values[name] = None
            continue
        flags.append(vs["bytes"] >= TARGET_BIN_SMALLER)
        parts.append(f"{name} {vs['bytes']:.1f}x")
        values[name] = vs["bytes"]
    add(f"trace.bin >= {TARGET_BIN_SMALLER:.0f}x smaller than trace.json on every program", flags,
        parts, values, na)  # fmt: skip

    # 2. recording trace.bin takes at most 1.3x the time of trace.json, every program
    flags, parts, values = [], [], {}
    for name, (j, b) in pairs.items():
        vs = format_versus(b, j)
        if vs is None:
            flags.append(False)
            parts.append(f"{name}: a run failed")
            values[name] = None
            continue
        flags.append(vs["wall"] <= TARGET_BIN_TIME)
        parts.append(f"{name} {vs['wall']:.2f}x{fmt_rounds(vs['wall_rounds'])}")
        values[name] = {"best": vs["wall"], "rounds": vs["wall_rounds"]}
    add(f"recording trace.bin <= {TARGET_BIN_TIME}x the time of trace.json on every program "
        "(best / best; per round min–max)", flags, parts, values, na)  # fmt: skip

    # 3. peak memory under 100 MB recording trace.bin, every program
    peaks = {name: b.peak_mb for name, (_j, b) in pairs.items() if b.ok}
    text = f"peak memory < {TARGET_PEAK_MB:.0f} MB recording trace.bin on every program"
    if pairs:
        flags = [b.ok and b.peak_mb < TARGET_PEAK_MB for _j, b in pairs.values()]
        worst = max(peaks, key=peaks.get) if peaks else None
        detail = [f"max {peaks[worst]:.1f} MB on {worst}"] if worst else []
        detail += [f"{n}: failed" for n, (_j, b) in pairs.items() if not b.ok]
        j_peaks = [j.peak_mb for j, _b in pairs.values() if j.ok]
        if j_peaks:
            detail.append(f"trace.json max {max(j_peaks):.1f} MB")
        add(text, flags, detail, peaks)
    else:
        add(text, [], [], None, na)
    return targets


def print_format_targets(targets: list[dict]) -> None:
    print("Targets (issue 12, trace.bin vs trace.json; benchmark figures, not tests)")
    for i, t in enumerate(targets, 1):
        detail = f" ({t['detail']})" if t["detail"] else ""
        print(f"  {i}. {t['text']}: {t['status']}{detail}")


# --------------------------------------------------------------------------- --json


def runner_figures(r: RunResult, base: RunResult | None) -> dict:
    d: dict = {"ok": r.ok, "error": r.error or None, "output": r.check or None,
               "incomplete": r.incomplete or None}  # fmt: skip
    if not r.ok:
        return d
    d.update(
        wall=r.wall, wall_min=min(r.walls), wall_max=max(r.walls), walls=r.walls,
        ratio_untraced=r.wall / base.wall if base and base.ok and base.wall else None,
        peak_mb=r.peak_mb,
    )  # fmt: skip
    t = r.trace
    if t is not None:
        steps = t.get("steps")
        d.update(
            format=t["format"], steps=steps, bytes=t["bytes"],
            bytes_per_step=t["bytes"] / steps if steps else None,
            steps_per_s=steps / r.wall if steps else None,
            values=t.get("values"), calls=t.get("calls"),
            values_per_s=t["values"] / r.wall if t.get("values") is not None else None,
        )  # fmt: skip
        for key in ("stream_bytes", "frames", "cbor_bytes", "frames_recorded", "frames_written"):
            if key in t:
                d[key] = t[key]
        if t.get("stream_bytes") is not None and steps:
            d["stream_bytes_per_step"] = t["stream_bytes"] / steps
    return d


def write_json(path: Path, args, env: dict, results, skipped, targets, failures, peer_failures,
               format_targets):  # fmt: skip
    formats = args.formats
    ours_name = timelapse_runner(formats[0], formats)
    ref_fmt = reference_format(formats)
    programs = {}
    for prog in args.selected:
        res = results.get(prog.name)
        if res is None:
            continue
        base = res.get("untraced")
        runners = {name: runner_figures(r, base) for name, r in res.items()}
        for name, why in skipped.get(prog.name, {}).items():
            runners[name] = {"ok": None, "skipped": why}
        ours = res.get(ours_name)
        ratios = {}
        for other in ("baseline", "reference", "pyttd"):
            o = res.get(other)
            if ours and o and ours.ok and o.ok:
                ratios[f"{other}_over_ours"] = {"wall": o.wall / ours.wall,
                                                "peak": o.peak_mb / ours.peak_mb}  # fmt: skip
        versus = {}
        ref = res.get(timelapse_runner(ref_fmt, formats))
        for fmt in formats:
            r = res.get(timelapse_runner(fmt, formats))
            if fmt != ref_fmt and r is not None and ref is not None:
                versus[f"{fmt}_vs_{ref_fmt}"] = format_versus(r, ref)
        programs[prog.name] = {
            "script": prog.script, "args": prog.args, "note": prog.note,
            "checksum": checksum_lines(base.stdout) if base and base.ok else None,
            "runners": runners, "ratios": ratios,
        }  # fmt: skip
        if versus:
            programs[prog.name]["formats"] = versus
    doc = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv[1:],
        **env,
        "programs": programs,
        "targets": targets,
        "format_targets": format_targets,
        "failures": failures,
        "peer_failures": peer_failures,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- main


def parse_args(argv):
    names = ", ".join(p.name for p in PROGRAMS)
    ap = argparse.ArgumentParser(
        description="Benchmark the timelapse recorder against untraced Python, the reference "
        f"recorder ({REF_PACKAGE} {REF_VERSION}) and py-tt-debug ({PYTTD_PACKAGE} "
        f"{PYTTD_VERSION}).",
        epilog=f"programs: {names}",
    )
    ap.add_argument("--quick", action="store_true", help="one run per measurement (--repeat 1)")
    ap.add_argument("--programs", help="comma-separated subset of the programs to run")
    ap.add_argument("--no-reference", action="store_true", help="skip the reference recorder")
    ap.add_argument("--no-pyttd", action="store_true", help="skip py-tt-debug")
    ap.add_argument("--pyttd-as-installed", action="store_true",
                    help="run py-tt-debug without LD_PRELOADing its bundled SQLite (its database "
                    "then comes out corrupt on most runs; see README)")  # fmt: skip
    ap.add_argument("--no-peers", action="store_true",
                    help="skip both peers (--no-reference --no-pyttd)")  # fmt: skip
    ap.add_argument("--no-timelapse", action="store_true", help="skip our recorder")
    ap.add_argument("--formats", default=None, metavar="LIST",
                    help="comma-separated trace formats our recorder writes, one run of each per "
                    "program, side by side (e.g. json,bin; default: the recorder's default format)")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="also run timelapse from another checkout's src folder (before/after a change)")
    ap.add_argument("--repeat", type=int, default=None,
                    help="best of N runs (default 3); N > 1 also shows the min-max spread")
    ap.add_argument("--timeout", type=float, default=900.0,
                    help="seconds before a single run is killed (default 900)")  # fmt: skip
    ap.add_argument("--json", type=Path, default=None, metavar="FILE",
                    help="also write every measured figure (and the targets) to FILE as JSON")
    ap.add_argument("--keep-traces", action="store_true",
                    help="keep the trace folders (in --traces-dir)")  # fmt: skip
    ap.add_argument("--traces-dir", type=Path, default=WORK / "traces", metavar="DIR",
                    help="where the trace folders are written (default benchmarks/.work/traces; "
                    "give two runs at once different folders)")  # fmt: skip
    args = ap.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    if args.no_peers:
        args.no_reference = args.no_pyttd = True
    if args.formats is not None:
        formats = [s.strip() for s in args.formats.split(",") if s.strip()]
        bad = [f for f in formats if f not in FORMATS]
        if bad or not formats:
            ap.error(f"--formats: unknown format(s) {', '.join(bad) or '(none)'} "
                     f"(known: {', '.join(FORMATS)})")  # fmt: skip
        if len(set(formats)) != len(formats):
            ap.error("--formats: a format given twice")
        args.formats = formats
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
    traces = args.traces_dir.resolve()
    traces.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []  # ours or untraced: exit status 1
    peer_failures: list[str] = []  # shown, exit status unchanged
    env: dict = {"python": sys.version.split()[0], "executable": sys.executable,
                 "repeat": args.repeat, "untraced_repeat": max(args.repeat, UNTRACED_MIN_REPEAT),
                 "peers": {}}  # fmt: skip

    print(f"python {sys.version.split()[0]} ({sys.executable}), best of {args.repeat}, "
          f"untraced best of {max(args.repeat, UNTRACED_MIN_REPEAT)}")  # fmt: skip

    ref_python = None
    if not args.no_reference:
        ref_python, reason = ensure_reference()
        if ref_python is None:
            print(f"reference recorder unavailable ({REF_PACKAGE}=={REF_VERSION}): {reason}; "
                  "skipping its rows")  # fmt: skip
        else:
            print(f"reference: {REF_PACKAGE} {REF_VERSION} in {ref_python}")
        env["peers"]["reference"] = {
            "package": REF_PACKAGE, "version": REF_VERSION, "python": ref_python,
            "unavailable": reason or None,
        }  # fmt: skip

    pyttd = None
    if not args.no_pyttd:
        pyttd, note, reason = ensure_pyttd(preload=not args.pyttd_as_installed)
        if pyttd is None:
            print(f"py-tt-debug unavailable ({PYTTD_PACKAGE}=={PYTTD_VERSION}): {reason}; "
                  "skipping its rows")  # fmt: skip
        else:
            print(f"pyttd: {PYTTD_PACKAGE} {PYTTD_VERSION} in {PYTTD_VENV}, {note}")
        env["peers"]["pyttd"] = {
            "package": PYTTD_PACKAGE, "version": PYTTD_VERSION, "command": pyttd,
            "note": note or None, "unavailable": reason or None,
        }  # fmt: skip

    if args.formats is None:
        args.formats = [default_format()]
    formats = args.formats
    env["formats"] = formats
    ours_name = timelapse_runner(formats[0], formats)  # "ours" in the issue-11 targets and ratios
    use_timelapse = not args.no_timelapse
    if use_timelapse:
        for fmt in formats:
            reason = probe_timelapse(args.timeout, traces, fmt)
            if reason:
                print(f"timelapse recorder failed (--format {fmt}): {reason}")
                failures.append(f"timelapse recorder failed (--format {fmt}): {reason}")
                use_timelapse = False
        if use_timelapse:
            print(f"timelapse: --format {', '.join(formats)}"
                  + (", runs interleaved" if len(formats) > 1 else ""))  # fmt: skip
    baseline_format = None
    if args.baseline is not None:
        if baseline_knows_format(args.baseline.resolve()):
            baseline_format = formats[0]
        else:
            print(f"baseline: {args.baseline} has no --format (it writes trace.json)")
    # Bytecode caches for every recorder, as an installed package has them (compile_bytecode).
    compiled: list[str] = []
    ours = package_folder(sys.executable, "timelapse") if use_timelapse else None
    if ours is not None:
        compiled.append(f"timelapse ({compile_bytecode(sys.executable, [ours]) or 'ok'})")
    if args.baseline is not None:
        theirs = args.baseline.resolve() / "timelapse"
        compiled.append(f"baseline ({compile_bytecode(sys.executable, [theirs]) or 'ok'})")
        if ours is not None and has_compiled_speedups(ours) and not has_compiled_speedups(theirs):
            print(f"baseline: {theirs} has no built _speedups: its rows are the pure-Python path "
                  f"(build it, e.g. `cd CHECKOUT && python setup.py build_ext --inplace`)")
    for name, python in (("reference", ref_python), ("pyttd", pyttd and str(venv_python(PYTTD_VENV)))):
        if python:
            compiled.append(f"{name} ({compile_bytecode(python, venv_site_packages(python)) or 'ok'})")
    if compiled:
        print("bytecode caches written for: " + ", ".join(compiled))
    env["bytecode_caches"] = compiled
    print(flush=True)

    rows: list = []
    results: dict[str, dict[str, RunResult]] = {}
    skipped: dict[str, dict[str, str]] = {}
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
        shown = "; ".join(expected) if expected else ""
        base.check = shown if len(shown) <= 40 else shown[:37] + "..."

        def check(r: RunResult) -> str:
            if not r.ok or expected is None:
                return ""
            got = checksum_lines(r.stdout)
            if got == expected:
                return "checksum ok"
            return f"CHECKSUM MISMATCH: {got} != untraced {expected}"

        runners = []
        if use_timelapse:
            # one group, its repeats interleaved (run_interleaved): a round per format in turn
            runners.append(([timelapse_runner(fmt, formats) for fmt in formats],
                            [timelapse_cmd(prog, fmt) for fmt in formats], None))  # fmt: skip
        if args.baseline is not None:
            runners.append(("baseline", baseline_cmd(args.baseline.resolve(), prog,
                                                     baseline_format), None))  # fmt: skip
        if ref_python and prog.reference:
            runners.append(("reference", reference_cmd(ref_python, prog), None))
        elif ref_python:
            skipped.setdefault(prog.name, {})["reference"] = "holds its whole trace in memory"
        if pyttd and prog.pyttd:
            runners.append(("pyttd", pyttd_cmd(pyttd, prog), pyttd_output_error))
        elif pyttd:
            skipped.setdefault(prog.name, {})["pyttd"] = "not run on this program"
        measured: list[tuple[str, RunResult]] = []
        for runner, make, output_error in runners:
            if isinstance(runner, list):  # our recorder, one runner per format
                print(f" {', '.join(runner)} ...", end="", flush=True)
                specs = [(name, mk, traces / f"{name}-{prog.name}", output_error)
                         for name, mk in zip(runner, make)]  # fmt: skip
                measured += run_interleaved(specs, repeat, args.timeout, args.keep_traces).items()
                continue
            print(f" {runner} ...", end="", flush=True)
            measured.append((runner, run_repeated(make, repeat, args.timeout,
                                                  traces / f"{runner}-{prog.name}",
                                                  args.keep_traces, output_error)))  # fmt: skip
        for runner, r in measured:
            res[runner] = r
            r.check = check(r)
            if runner == "pyttd":
                r.incomplete = pyttd_incomplete(r)
            if runner.startswith("timelapse") or runner == "baseline":
                if not r.ok:
                    failures.append(f"{prog.name}: {runner} run crashed: {r.error}")
                elif r.check.startswith("CHECKSUM MISMATCH"):
                    failures.append(f"{prog.name}: {runner} output differs from untraced: "
                                    f"{r.check}")  # fmt: skip
            elif not r.ok:
                peer_failures.append(f"{prog.name}: {runner}: {r.error}")
            elif r.check.startswith("CHECKSUM MISMATCH"):
                peer_failures.append(f"{prog.name}: {runner}: {r.check}")
            elif r.incomplete:
                peer_failures.append(f"{prog.name}: {runner}: {r.incomplete}")
        print(flush=True)
        results[prog.name] = res

        rows.append(result_row(prog.name, "untraced", base, base))
        order = [timelapse_runner(fmt, formats) for fmt in formats] + list(RECORDED[1:])
        for runner in order:
            if runner in res:
                rows.append(result_row("", runner, res[runner], base))
            elif runner in skipped.get(prog.name, {}):
                rows.append(["", runner, "skipped", "", "", "", "", "", "", "",
                             f"({skipped[prog.name][runner]})"])  # fmt: skip
        ours = res.get(ours_name)
        if ours and ours.ok:
            for other, label in (("baseline", "baseline / ours"), ("reference", "ref / ours"),
                                 ("pyttd", "pyttd / ours")):  # fmt: skip
                if res.get(other) and res[other].ok:
                    rows.append(ratio_row(label, res[other], ours))
        rows.append(None)

    print()
    print_table(rows)
    # The issue-11 targets take the first format's runs as "timelapse".
    targets = compute_targets({name: {**res, "timelapse": res[ours_name]} if ours_name in res else res
                               for name, res in results.items()})  # fmt: skip
    print_targets(targets)
    format_targets = []
    if use_timelapse and len(formats) > 1:
        ref_fmt = reference_format(formats)
        print()
        print(f"Formats: {', '.join(formats)} (x {ref_fmt}: time / {ref_fmt}'s time, best / best, "
              "per round min–max; trace file: the stream file alone)")  # fmt: skip
        print()
        frows: list = []
        for prog in args.selected:
            if prog.name in results:
                frows += format_rows(prog.name, results[prog.name], formats)
                frows.append(None)
        print_table(frows[:-1], FORMAT_COLUMNS)
        print()
        format_targets = compute_format_targets(results, formats)
        print_format_targets(format_targets)

    if peer_failures:
        print()
        for f in peer_failures:
            print(f"peer failed (exit status unchanged): {f}")
    if failures:
        print()
        for f in failures:
            print(f"FAILED: {f}")
    if args.json is not None:
        write_json(args.json, args, env, results, skipped, targets, failures, peer_failures,
                   format_targets)  # fmt: skip
        print(f"\nfigures written to {args.json}")
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(1)
