"""compare.py's report: the targets (medians of per-round ratios), the results table and the chart."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from compare_readers import Contender
from compare_settings import FFCV_QUOTED_IMAGES_PER_S, RESIZE
from report import fmt, mib, per_round, table
from rounds import Target, median, per_round_ratios


@dataclass
class Row:
    contender: Contender
    runs: list[dict]  # one a round: the child's result, or why there is none ("status")
    pack: dict | None

    @property
    def ok_runs(self) -> list[dict]:
        return [r for r in self.runs if r.get("status") == "ok"]

    @property
    def round_rates(self) -> list[float | None]:
        """images/s in each round, None where the run failed."""
        return [r["images"] / r["seconds"] if r.get("status") == "ok" else None for r in self.runs]

    @property
    def rates(self) -> list[float]:
        return [r for r in self.round_rates if r is not None]

    @property
    def rate(self) -> float | None:
        return median(self.rates)

    @property
    def steady_rate(self) -> float | None:
        """After the first batch: start-up (worker fork, FFCV's JIT compile, buffer fill) left out."""
        return median([(r["images"] - r["first_images"]) / (r["seconds"] - r["first_batch_s"]) for r in self.ok_runs
                       if r.get("first_batch_s") is not None and r["images"] > r["first_images"]])

    @property
    def note(self) -> str:
        bad = [r for r in self.runs if r.get("status") != "ok"]
        return bad[-1].get("note", "") if bad else ""


def targets(rows: dict[str, Row]) -> list[Target]:
    peers = [r for r in rows.values() if r.contender.kind == "peer" and r.rate]
    fastest = max(peers, key=lambda r: r.rate, default=None)
    bare = rows["bare_decode"]
    found = []
    for key in ("recpack", "recpack_threads"):
        row = rows[key]
        found += [
            Target(f"{row.contender.label} >= 1.5 x fastest measured peer"
                   + (f" ({fastest.contender.label})" if fastest else ""), 1.5,
                   per_round_ratios(row.round_rates, fastest.round_rates) if fastest else None),
            Target(f"{row.contender.label} >= 0.85 x bare full-size decode on all cores", 0.85,
                   per_round_ratios(row.round_rates, bare.round_rates)),
        ]
    resized = rows["recpack_resized"]
    if rows["ffcv"].rate:
        found.append(Target(f"context, not a target: recpack --resize {RESIZE} / FFCV (measured)", None,
                            per_round_ratios(resized.round_rates, rows["ffcv"].round_rates)))
    elif FFCV_QUOTED_IMAGES_PER_S:
        found.append(Target(f"context, not a target: recpack --resize {RESIZE} / FFCV "
                            f"({FFCV_QUOTED_IMAGES_PER_S:.0f} images/s, QUOTED, not measured)", None,
                            [v / FFCV_QUOTED_IMAGES_PER_S for v in resized.rates]))
    return found


def results_table(rows: dict[str, Row]) -> list[str]:
    rec = rows["recpack"].rate
    lines = []
    for row in rows.values():
        runs, pack, rate, note = row.ok_runs, row.pack or {}, row.rate, row.note
        if row.contender.key == "ffcv" and not rate and FFCV_QUOTED_IMAGES_PER_S:
            note = f"QUOTED, not measured: {FFCV_QUOTED_IMAGES_PER_S:.0f} images/s (issue #4). {note}"
        mbs = median([r["nbytes"] / r["seconds"] / 1e6 for r in runs if r.get("nbytes")])
        first = median([r["first_batch_s"] for r in runs if r.get("first_batch_s") is not None])
        lines.append([
            row.contender.label, fmt(rate), per_round(row.rates), fmt(rate / rec if rate and rec else None, ".2f"),
            fmt(row.steady_rate), fmt(first, ".1f"), fmt(mbs), mib(max((r["peak_rss"] for r in runs), default=None)),
            mib(max((r["peak_pss"] for r in runs), default=None)), fmt(pack.get("seconds"), ".1f"),
            fmt(pack["bytes"] / 1e6 if pack.get("bytes") else None), (runs[0].get("shape") or "-") if runs else "-",
            "; ".join(n for n in (note, row.contender.note, pack.get("note", "")) if n),
        ])
    return table(["contender", "images/s (median)", "per round", "x recpack", "after 1st batch", "first batch s",
                  "MB/s", "peak RSS MiB", "peak PSS MiB", "pack s", "packed MB", "output", "notes"],
                 "lrlrrrrrrrrll", lines)


def chart(rows: dict[str, Row], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"recpack": "#d62728", "peer": "#1f77b4", "ceiling": "#7f7f7f"}
    bars = [(r.contender.label, r.rate, colours[r.contender.kind], "") for r in rows.values()
            if r.rate and not r.contender.key.startswith("cat_")]
    if not rows["ffcv"].rate and FFCV_QUOTED_IMAGES_PER_S:
        bars.append(("FFCV (QUOTED, not measured)", FFCV_QUOTED_IMAGES_PER_S, "#1f77b4", "//"))
    if not bars:
        return
    bars.sort(key=lambda b: b[1])
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(bars) + 1.5))
    for i, (label, rate, colour, hatch) in enumerate(bars):
        ax.barh(i, rate, color="white" if hatch else colour, edgecolor=colour, hatch=hatch)
        ax.text(rate, i, f" {rate:,.0f}", va="center", fontsize=8)
    ax.set_yticks(range(len(bars)), [b[0] for b in bars], fontsize=8)
    ax.set_xlabel("images/s (one shuffled epoch, RandomResizedCrop 224 + flip, uint8 batches of 256)")
    ax.set_title(title, fontsize=10)
    ax.set_xlim(0, max(b[1] for b in bars) * 1.15)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
