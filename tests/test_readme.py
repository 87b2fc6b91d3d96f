"""The README is a short contract: its commands exist, its results come from the committed study, and no product
file carries the project's working history."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from stages.readme import END, START, render, study_seeds, variants
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
# Commands a test cannot run or check by their --help: they change the shell or open an editor.
EXEMPT = ("source .venv/bin/activate", "$EDITOR params.yaml", "export MLFLOW_TRACKING_URI=")


def _commands() -> list[str]:
    """Every command line of the README's bash blocks (comments dropped, continuation lines joined)."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def test_short_enough_to_read_in_minutes():
    lines = README.splitlines()
    assert len(lines) <= 150, len(lines)
    assert not [n for n, line in enumerate(lines, 1) if len(line) > 120]


@pytest.mark.parametrize("command", _commands())
def test_every_command_exists(command):
    """`make X`: make knows the target (`make -n`); `dvc ...`, `python -m stages ...`, `torchrun`: the CLI takes
    the subcommand (`--help`)."""
    if command.startswith(EXEMPT):
        return
    words = shlex.split(command)
    bin_dir = Path(sys.executable).parent
    if words[0] == "make":
        args = [w for w in words[1:] if "=" not in w]
        check = ["make", "-n", f"BIN={bin_dir}", "STAMP=", *args]
    elif words[0] == "dvc":
        sub = [w for w in words[1:3] if not w.startswith("-") and re.fullmatch(r"[a-z]+", w)]
        check = [str(bin_dir / "dvc"), *sub, "--help"]
    else:
        raise AssertionError(f"README command with no check: {command} (add a check or list it in EXEMPT)")
    result = subprocess.run(check, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, (command, result.stdout[-500:], result.stderr[-500:])


def test_the_results_are_the_committed_headline_numbers():
    headline = json.loads((ROOT / "reports" / "headline.json").read_text())
    assert START in README and END in README
    report = (ROOT / "reports" / "README.md").read_text()
    assert render(README, headline, study_seeds(ROOT), report) == README, "run `python -m stages.readme`"
    generative = re.findall(r"^\| `(\w+)` \| [\d.]+ ± [\d.]+ \| ", README, re.M)
    left = variants([n for n in headline if "fid" in headline[n]])  # ablation variants: in the report
    assert generative and generative[0] == min((n for n in headline if "fid" in headline[n] and n not in left),
                                               key=lambda n: headline[n]["fid"])


def test_no_file_speaks_of_the_project_s_working_history():
    words = ["this " + "session", "this " + "stop", r"issue [0-9]+", "closing " + "note",
             r"[0-9]{4}-[01][0-9]-[0-3][0-9]", r"-[0-9]{2} machine"]
    pattern = re.compile("|".join(words), re.I)
    paths = [ROOT / p for p in ("README.md", "params.yaml", "Makefile", "dvc.yaml")]
    for folder in ("pipeline", "stages", "tests"):
        paths += [p for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix in (".py", ".md", ".yaml")]
    found = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}" for p in paths
             for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not found, "\n".join(found)


def test_the_results_block_leaves_ablation_variants_to_the_report():
    from stages.readme import results_block, variants

    assert variants(["dcgan", "progan", "progan_no_growing", "stylegan", "stylegan_no_mixing"]) == {
        "progan_no_growing": "progan", "stylegan_no_mixing": "stylegan"}
    headline = {"progan": {"fid": 200.0, "recall": 0.5}, "progan_no_growing": {"fid": 100.0, "recall": 0.6},
                "stacked": {"test_mse": 0.02, "probe_accuracy": 0.9}}
    block = results_block(headline, [42, 43, 44])
    assert "| `progan` |" in block and "| `progan_no_growing` |" not in block
    assert "The ablations of `progan` are in the report." in block


def test_the_lecture_s_verdicts_are_counted_from_the_report_s_first_table():
    from stages.readme import verdicts

    report = ("# Results\n\n## What the lecture claims\n\n| the lecture says | experiment | evidence | verdict |\n"
              "|:---|:---|:---|:---|\n| a | b | c | holds |\n| d | e | f | contradicted |\n"
              "| g | h | i | not separated at this budget |\n| j | k | l | holds |\n"
              "| m | n | o | holds by construction (not a finding) |\n\nText.\n\n## Findings\n\n| x | y | holds |\n")
    assert verdicts(report) == (" Of the lecture's 5 claims (the report's first section), 2 hold, 1 is contradicted, "
                                "1 is not separated at this budget, 1 is shown or holds by construction, with no test.")
    assert verdicts("# Results\n\n## Findings\n") == ""
