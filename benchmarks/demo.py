"""The demo as a newcomer runs it, measured: time, counts, the printed audit's DCR p-value and fidelity.

Runs ``monai-pso demo`` (the defaults, ``--threads``) in a fresh folder as a subprocess, then the
``monai-pso audit`` command the demo printed, exactly as printed, and records:

- ``demo``: wall seconds and CPU seconds (user + system) of the command, the seconds per stage the demo
  wrote (``OUT/demo.json``), and the load average of the machine before and after (other work on a
  shared machine slows the wall time, not the CPU time);
- ``counts``: the release's ``summary.json`` counts (requested, released, too_close, implausible,
  dropped, draws) and the guard's taus;
- ``audit``: the DCR p-value and AUC, precision, recall, density, coverage, authenticity (each with
  its interval) of the released images and of the real baseline (held-out real images), and the
  conclusion line;
- ``headline``: the figures the README and ``docs/ldm.md`` quote, in one record;
- ``targets``: issue 14's targets (wall time under 10 minutes, at least 90% of the requested images
  released, DCR p > 0.05, precision at least 0.5 and at least half the real baseline's), each with the
  measured value and whether it was met.

The overview picture the demo drew is copied to ``docs/images/demo_overview.png`` (the README shows it).

Usage::

    python benchmarks/demo.py                  # ~5-10 min on 2 CPU cores; writes benchmarks/results/demo.json
    python benchmarks/demo.py --threads 2 --out /tmp/demo.json --keep /tmp/demo-run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PICTURE = ROOT / "docs" / "images" / "demo_overview.png"
FIDELITY = ("precision", "recall", "density", "coverage", "authenticity")


def cpu_seconds() -> float:
    """User + system CPU seconds of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str]) -> tuple[str, float, float]:
    """Run ``command``; its output (raising with it on failure), wall and CPU seconds."""
    wall, cpu = time.monotonic(), cpu_seconds()
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    wall, cpu = time.monotonic() - wall, cpu_seconds() - cpu
    if done.returncode:
        raise SystemExit(f"{shlex.join(command)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout, round(wall, 1), round(cpu, 1)


def printed_audit_command(output: str) -> list[str]:
    """The ``next: monai-pso audit ...`` command of the demo's output, split as a shell would."""
    lines = [line for line in output.splitlines() if line.startswith("next: ")]
    if len(lines) != 1:
        raise SystemExit("the demo printed no 'next: monai-pso audit ...' line")
    return shlex.split(lines[0].removeprefix("next: "))


def fidelity_of(block: dict[str, Any]) -> dict[str, Any]:
    """The fidelity figures of a report block (or its real baseline), each with its interval."""
    return {key: block.get(key) for name in FIDELITY for key in (name, f"{name}_ci")}


def targets(demo: dict[str, Any], counts: dict[str, int], audit: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Issue 14's targets of the demo, each with its measured value and whether it was met."""
    share = counts["released"] / counts["requested"]
    precision, baseline = audit["synthetic"]["precision"], audit["real_baseline"]["precision"]
    rows = {
        "wall_under_10_min": (demo["wall_s"], demo["wall_s"] < 600),
        "released_share_at_least_0.9": (share, share >= 0.9),
        "dcr_p_above_0.05": (audit["dcr_p_value"], audit["dcr_p_value"] > 0.05),
        "precision_at_least_0.5": (precision, precision is not None and precision >= 0.5),
        "precision_at_least_half_baseline": (precision, None not in (precision, baseline) and precision >= 0.5 * baseline),
    }
    return {name: {"value": value, "met": bool(met)} for name, (value, met) in rows.items()}


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """The figures the README and docs/ldm.md quote, in one record (the docs-figures test reads a row from one)."""
    demo, counts, audit = result["demo"], result["counts"], result["audit"]
    return {
        "wall_s": demo["wall_s"],
        "cpu_s": demo["cpu_s"],
        **{f"{stage}_s": seconds for stage, seconds in demo["stage_seconds"].items()},
        "audit_wall_s": audit["wall_s"],
        "load_average_1min_before": demo["load_average_before"][0],
        **{key: counts[key] for key in ("requested", "released", "too_close", "implausible", "draws")},
        "dcr_p_value": audit["dcr_p_value"],
        "precision": audit["synthetic"]["precision"],
        "coverage": audit["synthetic"]["coverage"],
        "baseline_precision": audit["real_baseline"]["precision"],
        "baseline_coverage": audit["real_baseline"]["coverage"],
        "targets_met": sum(target["met"] for target in result["targets"].values()),
        "targets": len(result["targets"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="--threads of the demo (default 1, as make demo runs it)")
    parser.add_argument("--out", type=Path, default=RESULTS / "demo.json")
    parser.add_argument("--keep", type=Path, default=None, help="Demo folder to keep (default: a temporary one, removed)")
    parser.add_argument("--no-picture", action="store_true", help="Do not copy the overview picture into docs/images")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="monai-pso-demo-")) / "demo-output"
    executable = Path(sys.executable).with_name("monai-pso")
    load_before = os.getloadavg()
    output, wall, cpu = timed([str(executable), "demo", "--out", str(work), "--threads", str(args.threads)])
    load_after = os.getloadavg()
    audit_command = printed_audit_command(output)
    _, audit_wall, audit_cpu = timed([str(executable), *audit_command[1:]])  # exactly as printed
    stages = json.loads((work / "demo.json").read_text())
    summary = json.loads((work / "release" / "summary.json").read_text())
    report = json.loads((work / "audit" / "report.json").read_text())
    demo = {"wall_s": wall, "cpu_s": cpu, **stages, "load_average_before": [round(x, 2) for x in load_before], "load_average_after": [round(x, 2) for x in load_after]}
    counts = dict(summary["counts"], released_share=round(summary["counts"]["released"] / summary["counts"]["requested"], 4))
    audit = {
        "command": shlex.join(audit_command),
        "wall_s": audit_wall,
        "cpu_s": audit_cpu,
        "conclusion": report["conclusion"],
        "dcr_p_value": report["dcr_p_value"],
        "dcr_auc": report["dcr_auc"],
        "dcr_auc_ci": report["dcr_auc_ci"],
        "synthetic": fidelity_of(report),
        "real_baseline": fidelity_of(report.get("fidelity_baseline") or {}),
        "fidelity_feature_space": (report.get("fidelity_feature_space") or {}).get("name"),
    }
    result = {
        "benchmark": "demo",
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": args.threads, "python": platform.python_version()},
        "demo": demo,
        "counts": counts,
        "taus": {name: check["tau"] for name, check in summary["checks"].items()},
        "audit": audit,
        "targets": targets(demo, counts, audit),
    }
    result["headline"] = headline(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_picture:
        PICTURE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(work / "release.overview.png", PICTURE)
    if args.keep is None:
        shutil.rmtree(work.parent)
    print(json.dumps({"headline": result["headline"], "targets": result["targets"]}, indent=2))


if __name__ == "__main__":
    main()
