#!/usr/bin/env python3
"""How trace.bin's zstd level and frame size were chosen: the same CBOR, recompressed.

    python benchmarks/zstd_choice.py                      # record each program, then the grid
    python benchmarks/zstd_choice.py --traces DIR         # take the traces run.py kept:
        # run.py --formats json,bin --keep-traces --traces-dir DIR  (timelapse-bin-NAME/trace.bin,
        # timelapse-json-NAME/trace.json); a program missing there is recorded
    python benchmarks/zstd_choice.py --levels 1,3,6,9 --frame-mib 1,4,16 --repeat 3 --sample-mib 64

The recorder is not changed: each program's trace.bin (as recorded, ``cbor_format.ZSTD_LEVEL``, a
frame per writer batch) is decompressed frame by frame, and the CBOR is compressed again as the
writer does it, one ``pyzstd.compress(frame, level)`` per frame, for every level and frame size of
the grid, plus "rec": the file's own frames (the writer's batches: at most 4 MiB of events and at
most 8192 events, so often much smaller than 4 MiB). Reported per program and configuration: the
compressed size, CBOR / compressed, trace.json / compressed (the issue's target is >= 10x), and the
CPU time of this thread per MiB of CBOR to compress (the recorder compresses in the recording
thread) and to decompress, median of --repeat passes with the min-max spread. The passes take
turns over the configurations, so a slow spell on a shared machine weighs on all of them alike.

Big traces are sampled: windows of consecutive recorded frames (each at least the largest frame
size, evenly spaced over the stream) up to --sample-mib in all; sizes are then estimates for the
whole trace (the sample's ratio times the whole CBOR), marked "~". ``long-x10`` is left out by
default (it is ``long``, 10x longer; give it with --programs to include it).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run as bench  # noqa: E402  (benchmarks/run.py: the programs, the runner, the trace.bin reader)

MIB = 1 << 20
DEFAULT_PROGRAMS = [p.name for p in bench.PROGRAMS if p.name != "long-x10"]
RECORDED = "rec"  # the frame configuration "the file's own frames"


@dataclass
class Sample:
    name: str
    json_bytes: int
    bin_bytes: int
    cbor_bytes: int  # the whole trace's CBOR
    frames: int  # recorded frames in the whole trace
    windows: list[list[bytes]] = field(default_factory=list)  # recorded frames, consecutive runs

    @property
    def sample_bytes(self) -> int:
        return sum(len(f) for w in self.windows for f in w)

    @property
    def scale(self) -> float:
        return self.cbor_bytes / self.sample_bytes


def find_or_record(prog, traces: Path | None, work: Path, timeout: float) -> tuple[Path, Path]:
    """(trace.bin, trace.json) of prog: from --traces if there, else recorded into work/."""
    paths = {}
    for fmt, file in bench.STREAM_FILES.items():
        for folder in ([traces / f"timelapse-{fmt}-{prog.name}"] if traces else []):
            if (folder / file).is_file():
                paths[fmt] = folder / file
        if fmt not in paths:
            out = work / f"timelapse-{fmt}-{prog.name}"
            print(f"  recording {prog.name} --format {fmt} ...", flush=True)
            cmd = bench.timelapse_cmd(prog, fmt)(out)
            wall, code, _peak, _out, err = bench.run_once(cmd, timeout)
            if code != 0 or not (out / file).is_file():
                raise SystemExit(f"{prog.name}: recording failed: {bench.last_line(err)}")
            paths[fmt] = out / file
    return paths["bin"], paths["json"]


def take_sample(name: str, bin_path: Path, json_path: Path, sample: int, window: int) -> Sample:
    """Decompress the recorded frames of the sample: the whole stream if it is at most `sample`
    bytes, else windows of consecutive frames (each >= `window` bytes), evenly spaced."""
    import pyzstd

    frames = bench.bin_frames(bin_path)
    sizes = [d for _, _, d in frames]
    total = sum(sizes)
    s = Sample(name, json_path.stat().st_size, bin_path.stat().st_size, total, len(frames))
    if total <= sample:
        chosen = [list(range(len(frames)))]
    else:
        count = max(1, sample // window)
        starts = [0] * len(frames)  # byte offset of each frame in the CBOR
        for i in range(1, len(frames)):
            starts[i] = starts[i - 1] + sizes[i - 1]
        chosen, taken = [], set()
        for k in range(count):
            at = (total - window) * k // max(1, count - 1)
            i = next(j for j in range(len(frames)) if starts[j] + sizes[j] > at)
            run, got = [], 0
            while i < len(frames) and got < window and i not in taken:
                run.append(i)
                taken.add(i)
                got += sizes[i]
                i += 1
            if run:
                chosen.append(run)
    with open(bin_path, "rb") as f:
        for run in chosen:
            window_frames = []
            for i in run:
                offset, compressed, _d = frames[i]
                f.seek(offset)
                window_frames.append(pyzstd.decompress(f.read(compressed)))
            s.windows.append(window_frames)
    return s


def cut(sample: Sample, frame: str | int) -> list[bytes]:
    """The frames to compress: the recorded ones, or each window cut every `frame` bytes."""
    if frame == RECORDED:
        return [f for w in sample.windows for f in w]
    out = []
    for w in sample.windows:
        data = b"".join(w)
        out += [data[i:i + frame] for i in range(0, len(data), frame)]
    return out


def measure(samples: list[Sample], levels: list[int], frame_sizes: list, repeat: int) -> dict:
    """{(program, level, frame): {"compressed": bytes of the sample, "c": [s per pass], "d": [...]}}:
    CPU time of this thread, compressing each frame with pyzstd.compress (then decompressing it)."""
    import pyzstd

    results: dict = {}
    for rnd in range(repeat):
        for s in samples:
            for frame in frame_sizes:
                pieces = cut(s, frame)
                for level in levels:
                    key = (s.name, level, frame)
                    t0 = time.thread_time()
                    out = [pyzstd.compress(p, level) for p in pieces]
                    t1 = time.thread_time()
                    for c in out:
                        pyzstd.decompress(c)
                    t2 = time.thread_time()
                    r = results.setdefault(key, {"compressed": sum(map(len, out)), "c": [], "d": []})
                    r["c"].append(t1 - t0)
                    r["d"].append(t2 - t1)
        print(f"  pass {rnd + 1}/{repeat} done", flush=True)
    return results


def frame_label(frame) -> str:
    return "rec" if frame == RECORDED else f"{frame // MIB} MiB" if frame % MIB == 0 else f"{frame} B"


def ms_per_mib(times: list[float], nbytes: int) -> tuple[float, float, float]:
    per = [t * 1e3 / (nbytes / MIB) for t in times]
    return statistics.median(per), min(per), max(per)


def fmt_spread(m: tuple[float, float, float]) -> str:
    med, lo, hi = m
    return f"{med:.1f} ({lo:.1f}–{hi:.1f})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="trace.bin: zstd level and frame size, measured on the "
                                 "benchmark programs' recorded CBOR")
    ap.add_argument("--traces", type=Path, default=None, metavar="DIR",
                    help="take trace.bin / trace.json from DIR (run.py --formats json,bin "
                    "--keep-traces --traces-dir DIR); missing ones are recorded")
    ap.add_argument("--programs", default=",".join(DEFAULT_PROGRAMS),
                    help="comma-separated run.py program names (default: all but long-x10)")
    ap.add_argument("--levels", default="1,3,6,9", help="zstd levels (default 1,3,6,9)")
    ap.add_argument("--frame-mib", default="1,4,16",
                    help="frame sizes in MiB (default 1,4,16); the recorded frames always too")
    ap.add_argument("--repeat", type=int, default=3, help="timed passes (default 3): median, spread")
    ap.add_argument("--sample-mib", type=int, default=64,
                    help="CBOR compressed per program at most, MiB (default 64; bigger traces are "
                    "sampled)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per recording")
    ap.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the figures")
    args = ap.parse_args(argv)

    known = {p.name: p for p in bench.PROGRAMS}
    names = [n.strip() for n in args.programs.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        ap.error(f"unknown program(s): {', '.join(unknown)} (known: {', '.join(known)})")
    levels = [int(x) for x in args.levels.split(",")]
    frame_sizes: list = [RECORDED] + [int(float(x) * MIB) for x in args.frame_mib.split(",")]
    window = max([f for f in frame_sizes if f != RECORDED] + [4 * MIB])
    sample = max(args.sample_mib * MIB, window)

    bench.WORK.mkdir(parents=True, exist_ok=True)
    work = bench.WORK / "zstd-traces"
    work.mkdir(parents=True, exist_ok=True)
    print(f"python {sys.version.split()[0]}; levels {levels}; frames "
          f"{', '.join(frame_label(f) for f in frame_sizes)}; {args.repeat} passes; "
          f"sample up to {sample // MIB} MiB of CBOR per program", flush=True)
    samples = []
    for name in names:
        bin_path, json_path = find_or_record(known[name], args.traces, work, args.timeout)
        s = take_sample(name, bin_path, json_path, sample, window)
        samples.append(s)
        print(f"  {name}: trace.json {bench.fmt_bytes(s.json_bytes)}, trace.bin "
              f"{bench.fmt_bytes(s.bin_bytes)} ({s.frames:,} frames, "
              f"{bench.fmt_bytes(s.cbor_bytes // max(1, s.frames))} CBOR each on average), CBOR "
              f"{bench.fmt_bytes(s.cbor_bytes)}, sample {bench.fmt_bytes(s.sample_bytes)}",
              flush=True)  # fmt: skip

    t0 = time.perf_counter()
    results = measure(samples, levels, frame_sizes, args.repeat)
    elapsed = time.perf_counter() - t0

    columns = [("program", "<"), ("level", ">"), ("frame", ">"), ("compressed", ">"),
               ("CBOR / zst", ">"), ("json / zst", ">"), ("compress ms/MiB", ">"),
               ("decompress ms/MiB", ">"), ("", "<")]  # fmt: skip
    rows: list = []
    doc: dict = {"python": sys.version.split()[0], "levels": levels, "repeat": args.repeat,
                 "frames": [frame_label(f) for f in frame_sizes], "programs": {}}  # fmt: skip
    for s in samples:
        sampled = s.sample_bytes < s.cbor_bytes
        prog_doc = {"json_bytes": s.json_bytes, "bin_bytes": s.bin_bytes, "cbor_bytes": s.cbor_bytes,
                    "frames": s.frames, "sample_bytes": s.sample_bytes, "grid": []}  # fmt: skip
        first = True
        for level in levels:
            for frame in frame_sizes:
                r = results[(s.name, level, frame)]
                whole = r["compressed"] * s.scale
                c, d = ms_per_mib(r["c"], s.sample_bytes), ms_per_mib(r["d"], s.sample_bytes)
                rows.append([
                    s.name if first else "", str(level), frame_label(frame),
                    ("~" if sampled else "") + bench.fmt_bytes(int(whole)),
                    f"{s.cbor_bytes / whole:.1f}x", f"{s.json_bytes / whole:.1f}x",
                    fmt_spread(c), fmt_spread(d),
                    "(as recorded)" if frame == RECORDED and level == 3 else "",
                ])  # fmt: skip
                first = False
                prog_doc["grid"].append({
                    "level": level, "frame": frame_label(frame), "compressed_bytes": whole,
                    "estimated": sampled, "cbor_over_zst": s.cbor_bytes / whole,
                    "json_over_zst": s.json_bytes / whole, "compress_ms_per_mib": c,
                    "decompress_ms_per_mib": d,
                })  # fmt: skip
        rows.append(None)
        doc["programs"][s.name] = prog_doc
    print()
    bench.print_table(rows[:-1], columns)

    # Over all programs: the worst json / zst (the target is per program), the compression CPU time
    # of all the traces together, per MiB and in seconds.
    print()
    print("All programs: json / zst (worst program, geometric mean), compression CPU time of the "
          "whole traces together (medians, estimated from the samples)")
    print()
    total_cbor = sum(s.cbor_bytes for s in samples)
    srows = []
    doc["summary"] = []
    for level in levels:
        for frame in frame_sizes:
            ratios = {s.name: s.json_bytes / (results[(s.name, level, frame)]["compressed"] * s.scale)
                      for s in samples}  # fmt: skip
            worst = min(ratios, key=ratios.get)
            geo = math.exp(sum(math.log(x) for x in ratios.values()) / len(ratios))
            seconds = sum(statistics.median(results[(s.name, level, frame)]["c"]) * s.scale
                          for s in samples)  # fmt: skip
            dseconds = sum(statistics.median(results[(s.name, level, frame)]["d"]) * s.scale
                           for s in samples)  # fmt: skip
            zst = sum(results[(s.name, level, frame)]["compressed"] * s.scale for s in samples)
            srows.append([str(level), frame_label(frame), f"{ratios[worst]:.1f}x ({worst})",
                          f"{geo:.1f}x", bench.fmt_bytes(int(zst)),
                          f"{seconds * 1e3 / (total_cbor / MIB):.1f}", f"{seconds:.2f}",
                          f"{dseconds:.2f}"])  # fmt: skip
            doc["summary"].append({"level": level, "frame": frame_label(frame),
                                   "worst_json_over_zst": ratios[worst], "worst_program": worst,
                                   "geomean_json_over_zst": geo, "total_zst_bytes": zst,
                                   "compress_cpu_s": seconds, "decompress_cpu_s": dseconds})
    print_cols = [("level", ">"), ("frame", ">"), ("json / zst worst", "<"), ("geomean", ">"),
                  ("all zst", ">"), ("compress ms/MiB", ">"), ("compress s", ">"),
                  ("decompress s", "<")]  # fmt: skip
    bench.print_table(srows, print_cols)
    print(f"\n{bench.fmt_bytes(total_cbor)} of CBOR in all ({sum(s.sample_bytes for s in samples) / MIB:.0f} "
          f"MiB compressed per configuration and pass); measuring took {elapsed:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
