"""`python -m stages.readme`: the README's results tables, written from the committed study's reports/headline.json
(its seeds from reports/results.csv, the count of the lecture's verdicts from reports/README.md).

Not a pipeline stage (and not imported by one): run it after committing a new study; tests/test_readme.py fails
while the README's block differs from what the headline file gives.
"""

from __future__ import annotations

import csv
import json
import re
import sys
import textwrap
from pathlib import Path

START = "<!-- results: written by `python -m stages.readme` from reports/headline.json; do not edit by hand -->"
END = "<!-- /results -->"


def _pm(row: dict, key: str, digits: int) -> str:
    value = f"{row[key]:.{digits}f}"
    return f"{value} ± {row[f'{key}_std']:.{digits}f}" if f"{key}_std" in row else value


def variants(names: list[str]) -> dict[str, str]:
    """The models built by the same class of the same file as a model listed before them in the registry (an
    ablation's variants: `progan_no_growing` after `progan`), each with that model: the report's ablation tables
    show them."""
    from pipeline.models import MODELS

    seen: dict[tuple[str, str], str] = {}
    out = {}
    for n in (m for m in MODELS if m in names):
        key = (MODELS[n].module, MODELS[n].module_class)
        if key in seen:
            out[n] = seen[key]
        seen.setdefault(key, n)
    return out


def verdicts(report: str) -> str:
    """How the report's first section, *What the lecture claims*, decides the lecture's claims: its table's last
    column counted ("" when the report has no such table)."""
    section = report.partition("## What the lecture claims")[2].partition("\n## ")[0]
    rows = [line.rstrip(" |").rsplit("|", 1)[-1].strip() for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| the lecture says")]
    if not rows:
        return ""
    words = {"holds": ("holds", "hold"), "contradicted": ("is contradicted", "are contradicted"),
             "not separated at this budget": ("is not separated at this budget", "are not separated at this budget")}
    counts = {v: rows.count(v) for v in dict.fromkeys(rows)}
    told = [f"{counts[v]} {one if counts[v] == 1 else many}" for v, (one, many) in words.items() if v in counts]
    rest = sum(n for v, n in counts.items() if v not in words)
    told += [f"{rest} {'is shown or holds' if rest == 1 else 'are shown or hold'} by construction, with no test"
             ] if rest else []
    return f" Of the lecture's {len(rows)} claims (the report's first section), {', '.join(told)}."


def results_block(headline: dict[str, dict], seeds: list[int], report: str = "") -> str:
    """The README's results: how the lecture's claims fared (from the report), the generative models by FID, the
    other autoencoders by test MSE; ablation variants are named, their numbers left to the report."""
    from pipeline.report.stats import MIN_SEEDS

    left = variants([n for n, r in headline.items() if "fid" in r])  # autoencoders of one class are models apart
    generative = sorted((n for n, r in headline.items() if "fid" in r and n not in left),
                        key=lambda n: headline[n]["fid"])
    others = sorted((n for n, r in headline.items() if "fid" not in r),
                    key=lambda n: headline[n]["test_mse"])
    spread = "the standard deviation over the seeds" if len(seeds) > 1 else "the spread over sample sets of one run"
    intro = (f"The committed study ({len(seeds)} training seed{'s' if len(seeds) > 1 else ''}: "
             f"{', '.join(map(str, seeds))}), from `reports/headline.json`; ± is {spread}. Generative models by FID "
             "(lower is better) with recall; the other autoencoders by test MSE with the linear-probe accuracy of "
             "their codings."
             + (f" The ablations of {' and '.join(f'`{n}`' for n in dict.fromkeys(left.values()))} are in the "
                "report." if left else "")
             + (f" With fewer than {MIN_SEEDS} seeds this is a ranking, not a claim that one model beats another."
                if len(seeds) < MIN_SEEDS else "")
             + verdicts(report))
    lines = [START, "", textwrap.fill(intro, width=115), "",
             "| generative model | FID | recall |", "|---|---:|---:|"]
    lines += [f"| `{n}` | {_pm(headline[n], 'fid', 0)} | {_pm(headline[n], 'recall', 2)} |" for n in generative]
    lines += ["", "| autoencoder | test MSE | linear-probe accuracy |", "|---|---:|---:|"]
    lines += [f"| `{n}` | {_pm(headline[n], 'test_mse', 4)} | {_pm(headline[n], 'probe_accuracy', 3)} |"
              for n in others]
    return "\n".join(lines + ["", END])


def render(readme: str, headline: dict[str, dict], seeds: list[int], report: str = "") -> str:
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    if not pattern.search(readme):
        raise SystemExit(f"README.md: no results block ({START} ... {END})")
    return pattern.sub(lambda _: results_block(headline, seeds, report), readme, count=1)


def study_seeds(root: Path = Path(".")) -> list[int]:
    """The training seeds of the committed study: those of its reports/results.csv (params.yaml may already name
    the seeds of a study still running)."""
    with (root / "reports" / "results.csv").open(newline="") as f:
        return sorted({int(row["seed"]) for row in csv.DictReader(f) if row["seed"]})


def main(root: Path = Path(".")) -> None:
    seeds = study_seeds(root)
    headline = json.loads((root / "reports" / "headline.json").read_text())
    path = root / "README.md"
    report = (root / "reports" / "README.md").read_text()
    path.write_text(render(path.read_text(), headline, seeds, report))
    print(f"{path}: results from reports/headline.json ({len(headline)} models)", file=sys.stderr)


if __name__ == "__main__":
    main()
