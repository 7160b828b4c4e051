"""Draw a `make test-fleet` run: hosts per version over time, with the controller's moments (a
halt, a recall, a kill) marked, and write the run's figures beside it.

    python -m bench.fleet_plot TIMELINE.json

writes bench/rollout-fleet.png and bench/rollout-fleet.md (for the 3 a.m. scenario's
three-am-timeline.json: bench/three-am-fleet.png and .md), which `make bench` appends to
bench/results.md (`make fleet-figures` runs the suite and this in one go).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PNG = HERE / "rollout-fleet.png"
MARKDOWN = HERE / "rollout-fleet.md"
NIGHT_PNG = HERE / "three-am-fleet.png"
NIGHT_MARKDOWN = HERE / "three-am-fleet.md"


def plot(run: dict, png: Path, title: str | None = None) -> None:
    """Two panels on one time axis: every host (above), and the few a guarded release reached
    before its halt or recall (below, to scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples, reached, top = run["samples"], run.get("reached", []), run["hosts"]
    versions = sorted({v for _t, c in [*samples, *reached] for v in c if v != "none"})
    fig, (whole, few) = plt.subplots(2, 1, figsize=(11, 7), sharex=True,
                                     gridspec_kw={"height_ratios": [3, 2]})
    times = [t for t, _c in samples]
    stopped_short = []
    for v in versions:
        running = [c.get(v, 0) for _t, c in samples]
        line, = whole.plot(times, running, label=f"{v}: running", linewidth=1.6)
        ever = [c.get(v, 0) for _t, c in reached]
        if ever and max(ever) < top:  # a release that stopped short: how far it ever got
            stopped_short.append(v)
            few.plot(times, running, color=line.get_color(), linewidth=1.6,
                     label=f"{v}: running")
            few.plot([t for t, _c in reached], ever, linestyle=":", color=line.get_color(),
                     linewidth=1.8, label=f"{v}: ever ran it (rolled back included)")
    for ax, label_at in ((whole, top * 1.02), (few, None)):
        for t, what in run["marks"]:
            if what.startswith(("published", f"{top} hosts")):
                continue
            colour = "red" if "halted" in what or "recalled" in what else "grey"
            ax.axvline(t, color=colour, linestyle="--", linewidth=0.8)
            if label_at is not None:
                ax.text(t, label_at, what, rotation=90, fontsize=7, va="bottom",
                        ha="right", color=colour)
    whole.set_ylim(0, top * 1.45)
    whole.set_ylabel("hosts running the version")
    whole.set_title(title or f"Guarded rollout on {top} real daemons, scraped by Prometheus "
                    "each second")
    whole.legend(loc="upper left", fontsize=7, ncol=2)
    few.set_ylim(0, 8)
    few.set_ylabel("hosts (releases stopped short)")
    few.set_xlabel("seconds since the fleet started")
    if stopped_short:
        few.legend(loc="upper left", fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


ROLLOUT = ("Guarded rollout on a fleet",
           "real daemons (check every 3 s, 1 s jitter), nginx, Debian's Prometheus 2.42 "
           "scraping each daemon every second, the real `updaterd rollout run`.")
NIGHT = ("The 3 a.m. path on a fleet",
         "real daemons at the default `check_interval` (4h) and `watch_interval` (2m), jitter "
         "20 s, a third of them in-place apps; nginx; the recall, the yank and the fix by the "
         "publisher's commands (tests/fleet/test_three_am.py).")


def markdown(run: dict, what: tuple[str, str], png: Path) -> str:
    title, setting = what
    lines = [f"## {title} (`make test-fleet`)", "",
             f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {run['hosts']} "
             f"{setting}", "", "| scenario | figure |", "|---|---|"]
    lines += [f"| {what} | {figure} |" for what, figure in run["figures"].items()]
    lines += ["", f"![hosts per version over time]({png.name})", ""]
    return "\n".join(lines)


def main() -> None:
    path = Path(sys.argv[1])
    run = json.loads(path.read_text())
    if path.name.startswith("three-am"):
        png, md, what = NIGHT_PNG, NIGHT_MARKDOWN, NIGHT
        plot(run, png, f"A bad release leaving {run['hosts']} real daemons at the default "
                       "intervals")
    else:
        png, md, what = PNG, MARKDOWN, ROLLOUT
        plot(run, png)
    md.write_text(markdown(run, what, png))
    print(f"wrote {png} and {md}")


if __name__ == "__main__":
    main()
