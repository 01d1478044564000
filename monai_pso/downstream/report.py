"""The study's report: ``report.json``, ``report.md`` and figures (ROC curves, box plots, example images)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from monai_pso.downstream.tasks import ClassificationTask, DownstreamTask
from monai_pso.io import write_json_atomically, write_text_atomically


def _ci(low: float, high: float, signed: bool = False) -> str:
    fmt = "{:+.3f}" if signed else "{:.3f}"
    return f"95% CI {fmt.format(low)} to {fmt.format(high)}"


def _noninferiority(name: str, entry: dict[str, Any]) -> str:
    """The non-inferiority clause of a compared metric (empty when the entry has no test)."""
    if "p_noninferior" not in entry:
        return ""
    verdict = "non-inferior" if entry["noninferior"] else "non-inferiority not shown"
    bound = f"{100 * (1 - entry['alpha']):.0f}% one-sided lower bound {entry['lower_bound']:+.3f}"
    seeds_reading = ""
    if "p_difference" in entry:
        reading = "not significantly worse" if entry["not_significantly_worse"] else "significantly worse"
        seeds_reading = f" Read as the seeds do (two-sided paired t-test, worse when p <= {entry['alpha']:g}): p={entry['p_difference']:.3g}, {reading}."
    return f" Non-inferiority at margin {entry['margin']:g} ({name}): p={entry['p_noninferior']:.3g}, {bound}: {verdict}.{seeds_reading}"


#: How the ``share_*`` fields of ``across_seeds`` read in a sentence.
_SHARES = {"share_noninferior": "non-inferior", "share_within_1pp": "within 1 pp", "share_not_significantly_worse": "not significantly worse"}


def _across_seeds(arm: str, comparison: dict[str, Any]) -> list[str]:
    """One sentence per metric over the generator seeds (none for a single seed)."""
    lines = []
    for metric, row in comparison.get("across_seeds", {}).items():
        if row["n_seeds"] < 2:
            continue
        shares = ", ".join(f"{label} in {round(row[key] * row['n_seeds'])} of {row['n_seeds']}" for key, label in _SHARES.items() if key in row)
        lines.append(
            f"{arm} vs real over {row['n_seeds']} generator seeds: {metric.upper()} difference mean {row['mean']:+.3f} (sd {row['sd']:.3f}, "
            f"range {row['min']:+.3f} to {row['max']:+.3f})" + (f"; {shares}." if shares else ".")
        )
    return lines


def conclusions(report: dict[str, Any]) -> list[str]:
    """Plain sentences stating each comparison with its interval, p-value and non-inferiority test, the spread
    over generator seeds, and the guard check.

    Examples
    --------
    >>> r = {"task": "denoising", "guard": {"tau": 0.1, "violations": 0, "verification": {"n_synthetic": 5, "n_training": 9, "violations": 0}},
    ...      "comparisons": {"synthetic vs real": {"psnr": {"mean_candidate": 30.0, "mean_reference": 31.0, "mean_difference": -1.0,
    ...      "ci_low": -1.5, "ci_high": -0.5, "p_t": 0.01, "p_wilcoxon": 0.02, "p_worse_t": 0.005, "p_worse_wilcoxon": 0.01}}}}
    >>> conclusions(r)[0].startswith("synthetic-trained PSNR 30.000 vs real-trained 31.000")
    True
    """
    lines = []
    for name, comparison in report["comparisons"].items():
        arm = name.split(" vs ")[0]
        if report["task"] == "classification":
            d = comparison["auroc_difference"]
            a, b = report["arms"][arm]["auroc"], report["arms"]["real"]["auroc"]
            a_val, b_val = a.get("auroc", a.get("mean_auroc")), b.get("auroc", b.get("mean_auroc"))
            p = d.get("p_value", np.nan)
            lines.append(
                f"{arm}-trained AUROC {a_val:.3f} ({_ci(a['ci_low'], a['ci_high'])}) vs real-trained {b_val:.3f} "
                f"({_ci(b['ci_low'], b['ci_high'])}): difference {d['difference']:+.3f} ({_ci(d['ci_low'], d['ci_high'], True)}), "
                f"p={p:.3g} ({comparison['method']}).{_noninferiority('AUROC', d)}"
                + (f" Within 1 pp of real (point estimate >= -0.01): {'yes' if d['within_1pp'] else 'no'}." if "within_1pp" in d else "")
            )
            lines += _across_seeds(arm, comparison)
            continue
        for metric in ("psnr", "ssim"):
            if metric not in comparison:
                continue
            c = comparison[metric]
            worse = c["p_worse_t"] <= 0.05 or c["p_worse_wilcoxon"] <= 0.05
            lines.append(
                f"{arm}-trained {metric.upper()} {c['mean_candidate']:.3f} vs real-trained {c['mean_reference']:.3f}: difference "
                f"{c['mean_difference']:+.3f} ({_ci(c['ci_low'], c['ci_high'], True)}), paired t-test p={c['p_t']:.3g}, Wilcoxon p={c['p_wilcoxon']:.3g}; "
                f"{'significantly worse' if worse else 'not significantly worse'} (one-sided p={c['p_worse_t']:.3g} t, {c['p_worse_wilcoxon']:.3g} Wilcoxon)."
                f"{_noninferiority(metric.upper() + (' dB' if metric == 'psnr' else ''), c)}"
            )
        lines += _across_seeds(arm, comparison)
    g = report["guard"]
    lines.append(
        f"Guard: tau={g['tau']:.4g}; brute-force check of {g['verification']['n_synthetic']} synthetic against "
        f"{g['verification']['n_training']} training images found {g['verification']['violations']} within tau."
    )
    if len(g.get("per_seed", [])) > 1:
        seeds = g["per_seed"]
        lines.append(f"Guard over all {len(seeds)} generator seeds: {g['violations']} of {sum(s['images'] for s in seeds)} synthetic images within tau.")
    if "counts" in g:
        c = g["counts"]
        lines.append(
            f"Release: {c['released']} of {c['requested']} requested images released from {c['draws']} draws; refused after every redraw: "
            f"{c['too_close']} too close to a training image, {c['implausible']} implausible."
        )
    if report.get("synthetic", {}).get("is_stand_in"):
        lines.append("NOTE: the 'synthetic' set is a STAND-IN (real images of other patients), not generated images.")
    return lines


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name


def figures(task: DownstreamTask, results: dict[str, tuple[np.ndarray, np.ndarray]], test_cases: list[dict], synthetic: list[dict], out: Path, max_examples: int = 4) -> list[str]:
    """Write the figures; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    written = []
    middle = lambda a: a[0] if a.ndim == 3 else a[0, a.shape[1] // 2]  # noqa: E731 (a slice of a volume)
    if isinstance(task, ClassificationTask):
        fig, ax = plt.subplots(figsize=(5, 5))
        for arm, (outputs, targets) in results.items():
            y = task.indicators(targets)
            classes = [1] if task.mode == "binary" else [k for k in range(y.shape[1]) if 0 < y[:, k].sum() < len(y)]
            for k in classes:
                fpr, tpr, _ = roc_curve(y[:, k], outputs[:, k])
                ax.plot(fpr, tpr, label=f"{arm}" + ("" if task.mode == "binary" else f" class {k}"))
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC on the real test set")
        ax.legend(fontsize=7)
        written.append(_save(fig, out / "roc.png"))
        rows = {"real test": [np.asarray(c["image"]) for c in test_cases[:max_examples]], "synthetic": []}
        rows["synthetic"] = list(task.load_images(synthetic[:max_examples]))
    else:
        per_case = {arm: task.per_case(*r) for arm, r in results.items()}
        fig, axes = plt.subplots(1, 2, figsize=(8, 4))
        for ax, metric in zip(axes, ("psnr", "ssim")):
            ax.boxplot([per_case[arm][metric] for arm in results], showmeans=True)
            ax.set_xticks(range(1, len(results) + 1), list(results), fontsize=8)
            ax.set_title(metric.upper())
        written.append(_save(fig, out / "boxplots.png"))
        picks = range(min(max_examples, len(test_cases)))
        rows = {"degraded input": [np.asarray(test_cases[i][task.input_key]) for i in picks]}
        rows |= {arm: [results[arm][0][i] for i in picks] for arm in results}
        rows["clean target"] = [np.asarray(test_cases[i][task.target_key]) for i in picks]
    columns = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(columns, len(rows), figsize=(2 * len(rows), 2 * columns), squeeze=False)
    for j, (title, images) in enumerate(rows.items()):
        axes[0, j].set_title(title, fontsize=8)
        for i in range(columns):
            axes[i, j].axis("off")
            if i < len(images):
                axes[i, j].imshow(middle(np.asarray(images[i])), cmap="gray", vmin=0, vmax=1)
    written.append(_save(fig, out / "examples.png"))
    return written


def _markdown(report: dict[str, Any]) -> str:
    lines = [f"# Real vs synthetic study: {report['task']}", "", f"Data: `{report['config']['data']}`", ""]
    lines += ["## Conclusions", ""] + [f"- {c}" for c in report["conclusions"]] + [""]
    lines += ["## Splits (by patient)", "", "| split | images | patients |", "|---|---|---|"]
    lines += [f"| {k} | {v['images']} | {v['patients']} |" for k, v in report["data"].items()] + [""]
    g = report["guard"]
    lines += ["## Guard", "", f"- synthetic set: {report['synthetic']['description']} ({report['synthetic']['images']} images)", f"- tau: {g['tau']}"]
    lines += [f"- {k}: {v}" for k, v in g.items() if k not in ("tau", "verification")]
    lines += [f"- verification: {g['verification']['method']}; {g['verification']['distance']}; min distance {g['verification']['min_distance']:.4g}", ""]
    lines += [f"## Arms (same budget: {report['budget']['steps']} steps x batch {report['budget']['batch_size']})", "", "```json", json.dumps(report["arms"], indent=1), "```", ""]
    lines += ["## Comparisons with the real-trained network", "", "```json", json.dumps(report["comparisons"], indent=1), "```", ""]
    lines += ["## Figures", ""] + [f"![{f}]({f})" for f in report["figures"]] + [""]
    return "\n".join(lines)


def write_report(report: dict[str, Any], task: DownstreamTask, results, test_cases, synthetic, out: Path, max_examples: int = 4) -> None:
    """Add conclusions and figures to ``report`` and write ``report.json`` and ``report.md`` into ``out``."""
    report["figures"] = figures(task, results, test_cases, synthetic, out, max_examples)
    report["conclusions"] = conclusions(report)
    write_json_atomically(out / "report.json", report, default=float, allow_nan=True, sort_keys=False)
    write_text_atomically(out / "report.md", _markdown(report))
