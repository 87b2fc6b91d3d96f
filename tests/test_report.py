"""Sentences of the report computed from the numbers: they change when the numbers do."""

from __future__ import annotations

import json
import subprocess
from types import SimpleNamespace

import pytest

from pipeline import StudyError
from pipeline.report.sections import tuning
from pipeline.tuning import FREE, _setting, collect, settle


def _rows(text: str) -> list[list[str]]:
    """The cells of every row of the markdown tables in `text`, header rows included, alignment rows left out."""
    lines = [line.strip().strip("|") for line in text.splitlines() if line.startswith("|")]
    rows = [[c.strip() for c in line.split("|")] for line in lines]
    return [r for r in rows if not all(c and set(c) <= set(":-") for c in r)]


def _study(results: dict, used: dict) -> SimpleNamespace:
    from pipeline.tuning import decide

    decided = {m: decide(r) for m, r in results.items()}
    grid = sorted({v for r in results.values() for v in r}, key=float)
    t = {"grid": grid, "budget_images": 64000, "results": results, "best": {m: d["best"] for m, d in decided.items()},
         "used": used, "next": {m: {k: d[k] for k in ("extend", "tie") if d[k]} for m, d in decided.items()}}
    return SimpleNamespace(tuning=t, metrics={m: {} for m in results})


def _cell(fid: float, std: float, classes: int = 10, seeds: tuple = (7,)) -> dict:
    return {"fid": fid, "fid_std": std, "recall": 0.5, "classes_covered": classes, "seeds": list(seeds)}


def _run(fid: float, std: float) -> dict:
    """A run's metrics whose validation FID is `fid` (the number a grid cell keeps); its test FID is another."""
    return {"fid": fid + 1000, "fid_std": 1.0, "fid_val": fid, "fid_val_std": std, "recall": 0.5, "classes_covered": 10}


def test_the_grid_rules_extend_an_edge_and_send_a_close_call_to_the_second_selection_seed():
    from pipeline.tuning import decide, ladder

    assert [f"{ladder(v, d):g}" for v, d in ((0.03, 1), (0.01, 1), (0.0003, -1), (0.001, -1), (0.003, -1))] == \
        ["0.1", "0.03", "0.0001", "0.0003", "0.001"]
    inside = {"0.001": _cell(300, 5), "0.003": _cell(200, 5), "0.01": _cell(250, 5)}
    assert decide(inside) == {"best": "0.003", "extend": None, "tie": None}
    assert decide({**inside, "0.01": _cell(150, 5)})["extend"] == "0.03"  # best at the top end
    assert decide({**inside, "0.001": _cell(150, 5)})["extend"] == "0.0003"  # at the bottom end
    close = {**inside, "0.01": _cell(204, 6)}  # 200 ± 5 against 204: within the best's own spread
    assert decide(close)["tie"] == ["0.003", "0.01"]
    assert decide({**close, "0.01": _cell(206, 6)})["tie"] is None  # ahead by 6 > 5
    rerun = {**close, "0.003": _cell(201, 5, seeds=(7, 8)), "0.01": _cell(203, 6, seeds=(7, 8))}
    assert decide(rerun) == {"best": "0.003", "extend": None, "tie": None}  # both at two seeds: the mean decides


def test_tuning_effort_names_edge_optima_close_calls_and_models_off_their_best():
    results = {"a": {"0.001": _cell(300, 5), "0.003": _cell(200, 5), "0.01": _cell(150, 5)},  # best at the edge
               "b": {"0.001": _cell(300, 5), "0.003": _cell(200, 6), "0.01": _cell(205, 6)}}  # 200 vs 205: close
    text = tuning(_study(results, {"a": "0.01", "b": "0.001"}))
    assert ["a", "300 ± 5 (10)", "200 ± 5 (10)", "150 ± 5 (10)", "0.01", "0.01", "yes"] in _rows(text)
    assert ["b", "300 ± 5 (10)", "200 ± 6 (10)", "205 ± 6 (10)", "0.003", "0.001", "no"] in _rows(text)
    assert "trained at the selection seed 7 (`make sweep`), which no reported number uses" in text
    assert "not at their own best value of the grid: `b`." in text
    assert "Best at an end of the grid, so the rules extend it: `a` (next: 0.03)." in text
    assert "to rerun at the second selection seed: `b` (0.003 against 0.01)." in text

    results["b"]["0.01"] = _cell(240, 6)  # now clearly behind, and a missing cell
    results["b"]["0.003"] = _cell(200, 6, seeds=(7, 8))
    del results["a"]["0.001"]
    text = tuning(_study(results, {"a": "0.01", "b": "0.003"}))
    assert ["a", "–", "200 ± 5 (10)"] in [r[:3] for r in _rows(text)] and "own best value of the grid: none." in text
    assert any("200 ± 6 (10) [2 seeds]" in r for r in _rows(text))
    assert "Cells not run: `a` at 0.001." in text
    assert "Every model's best value is ahead of its runner-up by more than its sample-set spread." in text

    results["a"]["0.03"] = {**_cell(0, 0), "fid": None, "fid_std": None, "diverged": "a: training diverged at ..."}
    text = tuning(_study(results, {"a": "0.01", "b": "0.003"}))  # a rate too high to train: the cell says so
    assert ["a", "–", "200 ± 5 (10)", "150 ± 5 (10)", "diverged"] in [r[:5] for r in _rows(text)]


def test_no_study_run_is_a_grid_cell_and_no_selection_run_is_reported(tmp_path):
    """The study's own run at the value params.yaml uses is a reporting seed's: never a cell, even when the sweep
    left that value empty; a cell that records no seed (the protocol before selection seeds) or a reporting one is
    left out and named; a model whose recipe changed keeps none of its old cells."""
    old, new = {"lr_g": 0.01, "lr_d": 0.01, "batch_size": 32}, {"lr_g": 0.01, "lr_d": 0.01, "batch_size": 16}
    params = {"seeds": [42], "budget": {"images": 64000}, "gans": {"a": new, "b": {"lr_g": 0.001, "lr_d": 0.001}}}
    summary = {"grid": ["0.001", "0.01"], "budget_images": 64000, "results": {
        "a": {"0.001": {**_cell(90, 5), "setting": _setting("a", old)},
              "0.01": {**_cell(150, 5), "setting": _setting("a", old)}},
        "b": {"0.001": _cell(200, 5), "0.003": {**_cell(180, 5), "seeds": [42]}, "0.01": _cell(300, 5)}}}
    summary["results"]["b"]["0.03"] = {k: v for k, v in _cell(100, 5).items() if k != "seeds"}
    (tmp_path / "a-42.json").write_text(json.dumps(_run(75, 6)))  # the study's run: not a cell
    t = settle(summary, params, tmp_path)
    assert "a" not in t["results"] and t["results"]["b"] == {"0.001": _cell(200, 5), "0.01": _cell(300, 5)}
    assert t["best"] == {"b": "0.001"} and t["used"] == {"a": "0.01", "b": "0.001"}
    assert t["left_out"] == ["the cell a at 0.001", "the cell a at 0.01", "the cell b at 0.003 (run at a reporting "
                             "seed)", "the cell b at 0.03 (run at a reporting seed)"]
    text = tuning(SimpleNamespace(tuning=t, metrics={"a": {}, "b": {}}))
    assert ["b", "200 ± 5 (10)", "300 ± 5 (10)", "0.001", "0.001", "yes"] in _rows(text)
    assert "or at a reporting seed" in text and "the cell b at 0.003 (run at a reporting seed)" in text
    empty = tuning(SimpleNamespace(tuning=settle({**summary, "results": {"a": summary["results"]["a"]}}, params,
                                                 tmp_path), metrics={"a": {}, "b": {}}))
    assert "No cell of the grid stands for the study's current setting: run `make sweep`." in empty


def test_the_report_refuses_a_reporting_seed_that_is_a_selection_seed(tmp_path):
    from pipeline.config import parse_config
    from pipeline.report import load_study

    cfg = parse_config({"seeds": [42, 7]})
    with pytest.raises(StudyError, match=r"seeds: \[7\] also selection seeds"):
        load_study(cfg, tmp_path, tmp_path, tmp_path / "manifest.json", tmp_path / "figures")


def test_sweep_collection_adds_new_experiments_to_the_cells_already_summarised(tmp_path):
    """`make sweep LR_GRID=0.03` after an earlier sweep (whose experiment refs may be gone: another clone) adds a
    column: the committed cells stay, a new experiment of the same cell replaces it, cells of another budget go.
    Experiments train at a selection seed; one at a reporting seed is left out; a close call rerun at the second
    selection seed (`-s8`) makes the cell the mean of the two."""
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    def experiment(name, lr, fid, budget=64000, recipe="", seed=7):
        (tmp_path / "params.yaml").write_text(
            f"seeds: [{seed}]\nbudget: {{images: {budget}}}\ngans: {{gan: {{lr_g: {lr}, lr_d: {lr}{recipe}}}}}\n")
        (tmp_path / "metrics").mkdir(exist_ok=True)
        (tmp_path / "metrics" / f"gan-{seed}.json").write_text(json.dumps(_run(fid, 3)))
        git("add", "-A")
        git("commit", "-qm", name)
        git("update-ref", f"refs/exps/ab/cdef/{name}", "HEAD")

    def workspace(lr, budget=64000, recipe=""):  # the study's own params.yaml (reporting seed 42)
        (tmp_path / "params.yaml").write_text(
            f"seeds: [42]\nbudget: {{images: {budget}}}\ngans: {{gan: {{lr_g: {lr}, lr_d: {lr}{recipe}}}}}\n")

    git("init", "-q")
    git("config", "user.email", "t@t")
    git("config", "user.name", "t")
    out = tmp_path / "lr_sweep.json"
    out.write_text(json.dumps({"grid": ["0.001", "0.01"], "budget_images": 64000, "results": {
        "gan": {"0.001": _cell(300, 5), "0.01": _cell(250, 5)}, "dcgan": {"0.01": _cell(140, 5)}}}))
    experiment("lr-gan-0.03", 0.03, 200)
    experiment("lr-gan-0.01", 0.01, 260)
    experiment("lr-gan-0.001", 0.001, 300)
    experiment("lr-gan-0.003", 0.003, 100, seed=42)  # trained at a reporting seed: not a cell
    workspace(0.001)
    summary = collect(tmp_path, out)
    assert summary["grid"] == ["0.001", "0.01", "0.03"]
    assert list(summary["results"]["gan"]) == ["0.001", "0.01", "0.03"]
    assert summary["results"]["gan"]["0.01"]["fid"] == 260  # the experiment here replaces the summarised cell
    assert summary["results"]["dcgan"] == {"0.01": _cell(140, 5)}  # kept: no experiment here for it
    assert summary["best"] == {"dcgan": "0.01", "gan": "0.03"} and summary["used"]["gan"] == "0.001"
    assert "experiment lr-gan-0.003 (trained at 42, a reporting seed" in summary["dropped"]
    assert summary["next"] == {"gan": {"extend": "0.1"}}
    assert json.loads(out.read_text()) == summary
    experiment("lr-gan-0.03-s8", 0.03, 220, seed=8)  # the second selection seed
    workspace(0.001)
    cell = collect(tmp_path, out)["results"]["gan"]["0.03"]
    assert cell["fid"] == pytest.approx(210) and cell["seeds"] == [7, 8] and cell["fid_per_seed"] == [200, 220]

    for name in ("lr-gan-0.03", "lr-gan-0.01", "lr-gan-0.001", "lr-gan-0.003", "lr-gan-0.03-s8"):
        git("update-ref", "-d", f"refs/exps/ab/cdef/{name}")
    experiment("lr-gan-0.003", 0.003, 400, budget=128000)  # a bigger budget: the old cells are not comparable
    workspace(0.001, budget=128000)
    summary = collect(tmp_path, out)
    assert summary["grid"] == ["0.003"] and set(summary["results"]) == {"gan"}
    assert "budget of 64000 images, not 128000" in summary["dropped"]

    # the model's recipe changed since (here its batch size): neither the old experiment nor the old summarised
    # cell is a cell of the new setting's grid; both are left out and named
    experiment("lr-gan-0.01", 0.01, 90, budget=128000, recipe=", batch_size: 16")
    workspace(0.01, budget=128000, recipe=", batch_size: 16")
    summary = collect(tmp_path, out)
    assert summary["grid"] == ["0.01"] and list(summary["results"]["gan"]) == ["0.01"]
    assert "experiment lr-gan-0.003 (gans.gan differs in batch_size)" in summary["dropped"]
    assert "the cell gan at 0.003" in summary["dropped"]

    out.write_text("[1, 2]")
    with pytest.raises(StudyError, match="not a learning-rate sweep summary"):
        collect(tmp_path, out)


def test_holm_adjusts_a_known_example():
    from pipeline.report.stats import holm

    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> made non-decreasing: 0.06 last
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


def test_claims_need_three_seeds_and_a_welch_test():
    from scipy import stats

    from pipeline.report.stats import ALPHA, family, welch

    apart = {"a": [100.0, 102.0, 101.0], "b": [150.0, 149.0, 152.0], "c": [100.0, 150.0, 120.0]}
    diff, low, high, p = welch(apart["a"], apart["b"])
    assert diff == pytest.approx(-49.333, abs=1e-3) and low < diff < high < 0
    assert p == pytest.approx(stats.ttest_ind(apart["a"], apart["b"], equal_var=False).pvalue)
    ab, ac = family(apart, [("a", "b"), ("a", "c")])
    assert ab.separated and ab.p_holm == pytest.approx(2 * ab.p)  # the smaller p of two, times 2
    assert not ac.separated and ac.p_holm >= ALPHA  # a spread as wide as the gap: not separated
    assert "FID difference -49.3 (95 % CI" in ab.describe()
    assert family({"a": [1.0, 2.0], "b": [3.0, 4.0]}, [("a", "b")]) is None  # two seeds: no claim at all
    assert welch([5.0, 5.0, 5.0], [5.0, 5.0, 5.0])[3] == 1.0 and welch([5.0] * 3, [6.0] * 3)[3] == 0.0


def _seeded_study(fids: dict[str, list[float]]) -> SimpleNamespace:
    """A study of generators with one FID per training seed (and a tight sample-set spread in each)."""
    from pipeline.report import tidy

    seeds = [42, 43, 44][:len(next(iter(fids.values())))]
    by_seed = {n: {s: {"fid": f, "fid_std": 1.0} for s, f in zip(seeds, values)} for n, values in fids.items()}
    metrics = {n: {"fid": sum(v) / len(v), "fid_std": 1.0, "images_seen": 64000, "classes_covered": 10, "recall": 0.6,
                   "train_seconds": 100.0, "images_per_second": 640.0} for n, v in fids.items()}
    return SimpleNamespace(seeds=seeds, by_seed=by_seed, results=tidy(by_seed), metrics=metrics, curves={},
                           manifest={"classes": list(range(10))},
                           cfg=SimpleNamespace(budget=SimpleNamespace(images=64000)),
                           having=lambda key, family=None: [n for n in metrics if key in metrics[n]])


def test_findings_claim_only_what_a_test_over_seeds_supports():
    from pipeline.report.sections import findings

    # dcgan far ahead of progan in every seed; progan and stylegan apart by less than their seed-to-seed spread,
    # though each seed's sample-set spread (1.0) is far smaller than the gap between their means
    text = findings(_seeded_study({"dcgan": [50.0, 52.0, 51.0], "progan": [150.0, 149.0, 152.0],
                                   "stylegan": [120.0, 190.0, 160.0]}))
    assert "`dcgan` beats `progan` (FID difference -99.3 (95 % CI" in text
    assert "Neighbours not separated (no claim): `progan` and `stylegan`" in text
    assert "at α = 0.05 after Holm's correction" in text
    one = findings(_seeded_study({"dcgan": [50.0], "progan": [150.0]}))
    assert "Neighbours in that ranking: 1 training seed: no claim" in one and "beats" not in one.split("_\n")[-1]


def _lecture_study(tmp_path, seeds=(42, 43, 44)) -> SimpleNamespace:
    """Every model a lecture claim reads, with per-seed metrics and curves whose answers are plain."""
    ae = {"test_mse": 0.016, "train_mse": 0.014, "mse_ratio_to_pca": 1.001, "parameters": 163814, "steps": 5400,
          "few_label_finetuned_100": 0.70, "few_label_scratch_100": 0.69, "noisy_test_mse": 0.018, "noise_mse": 0.021}
    gan = {"fid": 150.0, "recall": 0.7, "train_seconds": 200.0, "images_seen": 64000, "health": "ok"}
    models = {"linear": ae, "stacked": ae, "tied": {**ae, "parameters": 82414, "test_mse": 0.0150}, "greedy": {**ae, "test_mse": 0.0158},
              "denoising_gaussian": ae, "sparse_l1": {**ae, "mean_activation": 0.048, "target_activation": 0.05},
              "gan": {**gan, "fid": 370.0}, "dcgan": {**gan, "fid": 100.0}, "progan": gan,
              "progan_no_growing": {**gan, "train_seconds": 260.0}, "progan_no_mbstd": {**gan, "recall": 0.2},
              "stylegan": {**gan, "noise_pixel_std": 0.002, "separability_w": 3.0, "separability_z": 6.0,
                           "ppl_w_full": 48.0, "ppl_z_full": 39.0, "fid_mixed_1": 160.0, "fid_mixed_2": 170.0,
                           "fid_mixed_3": 175.0, "fid_mixed_4": 180.0},  # mixing costs 15 with the regularizer
              "stylegan_no_mapping": {**gan, "separability_w": 6.0}, "stylegan_no_const": {**gan, "fid": 200.0},
              "stylegan_no_mixing": {**gan, "fid_mixed_1": 150.0, "fid_mixed_2": 220.0, "fid_mixed_3": 250.0,
                                     "fid_mixed_4": 280.0}}  # and 100 without it
    by_seed = {}
    for n, m in models.items():
        by_seed[n] = {}
        for i, s in enumerate(seeds):
            jitter = 1 + 0.01 * (i - 1)  # a small seed-to-seed spread
            by_seed[n][s] = {k: v * jitter if isinstance(v, float) and k != "mse_ratio_to_pca" else v
                             for k, v in m.items()}
            curve = [{"fid": f, "seconds": 20.0 * (j + 1)} for j, f in
                     enumerate([900, 400, 500, 250, 200] if n == "progan" else [800, 350, 280, 240, 230])]
            (tmp_path / f"{n}-{s}" / "train").mkdir(parents=True, exist_ok=True)
            (tmp_path / f"{n}-{s}" / "train" / "curve.json").write_text(json.dumps(curve))
            history = [{"epoch": e, "train_mse": 0.02 - 0.0001 * e, "val_mse": 0.021 - 0.00008 * e + 0.00001 * i}
                       for e in range(1, 11)]  # the gap widens from about 0.0011 half-way to 0.0012 at the end
            (tmp_path / f"{n}-{s}" / "train" / "history.json").write_text(json.dumps(history))
    metrics = {n: by_seed[n][seeds[0]] for n in models}
    cfg = SimpleNamespace(seeds=list(seeds), model=lambda n: SimpleNamespace(
        mixing_prob=0.0 if "no_mixing" in n else 0.9, batch_size=32 if n in ("stylegan", "stylegan_no_mixing") else 16))
    return SimpleNamespace(seeds=list(seeds), by_seed=by_seed, metrics=metrics, runs=tmp_path, cfg=cfg,
                           having=lambda key, family=None: [n for n in metrics if key in metrics[n]
                                                            and (family is None or n.endswith("gan"))])


def test_every_lecture_claim_gets_a_verdict_that_follows_the_numbers(tmp_path):
    from pipeline.report.claims import verdicts

    study = _lecture_study(tmp_path)
    rows = {r["said"]: r for r in verdicts(study)}
    verdict = {said: r["verdict"] for said, r in rows.items()}
    assert verdict["If autoencoder use only linear activation and MSE as cost function, it is the same as PCA"] == "holds"
    assert verdict["DCGAN's guidelines (strided and transposed convolutions, batch norm, ReLU / LeakyReLU)"] == "holds"
    assert verdict["Increasing variation using minibatch standard deviation"] == "holds"  # recall 0.7 against 0.2
    assert verdict["[Growing] speeds the training up"] == "holds"  # 200 s against 260 s for the same images
    assert verdict["[Growing] speeds the training up (to a given quality)"] == "contradicted"  # FID 300: 80 s vs 60 s
    assert verdict["[Growing] greatly stabilizes [the training]"] == "contradicted"  # progan's curve gives back 100
    assert verdict["[Denoising autoencoder] for eliminating noise"] == "holds"
    tying = "Weight tying: use Wᵀ as the weight matrix in the decoding layer"
    assert verdict[tying] == "holds by construction (not a finding)"
    assert "parameters 82,414 against 163,814 (0.50×)" in rows[tying]["evidence"]
    assert verdict[tying + " (half the weights: less over-fitting)"] == "holds"  # gap 0.0010 against 0.0020
    greedy = rows["Greedy layer-wise training (not used very well these days)"]
    assert "optimizer steps (5,400 each)" in greedy["experiment"]  # from the runs' timing
    assert "; difference -0.938 (95 % CI" in rows["[Growing] speeds the training up"]["evidence"]
    assert verdict["Mapping network: in W the factors of variation become more linear"] == "holds"  # 3 against 6
    assert verdict["Mapping network: in W the factors of variation become more linear (smoother paths)"] == \
        "contradicted"  # 48 against 39 with a 1 % spread: separated, the other way
    constant = rows["Constant input: increase performance empirically"]
    assert constant["verdict"] == "holds"  # FID 150 against 200
    assert constant["experiment"].endswith("(batch size 32 against 16), part of what is compared")
    assert "tuned setting" not in rows["Style mixing (mixing regularization) reduces the correlation between "
                                       "adjacent layers"]["experiment"]  # both at batch 32
    assert verdict["Be careful not to be over-fitting (the gap's trend)"] == "holds"  # 0.0012 against 0.0011
    assert verdict["Mapping network: in W the factors of variation become more linear (against no mapping network)"] \
        == "holds"  # separability 3 against 6
    mixing = rows["Style mixing (mixing regularization) reduces the correlation between adjacent layers"]
    assert mixing["verdict"] == "holds" and "2 to 4 latents" in mixing["experiment"]
    assert mixing["evidence"].startswith("mixing on 14.8 / 15 / 15.2 against mixing off 99 / 100 / 101")

    for s in study.seeds:  # a metrics change turns the verdict: now dcgan is the worse of the two
        study.by_seed["dcgan"][s]["fid"] = 600.0 + s
    assert {r["said"]: r for r in verdicts(study)}["DCGAN's guidelines (strided and transposed convolutions, batch "
                                                   "norm, ReLU / LeakyReLU)"]["verdict"] == "contradicted"
    from pipeline.report.sections import SECTIONS, lecture

    text = lecture(study)
    assert SECTIONS[1] is lecture and text.startswith("## What the lecture claims")  # first after the header
    assert "Holm-corrected over the 16 tested claims" in text and any(r[-1] == "contradicted" for r in _rows(text))
    for s in study.seeds:  # a profile that does not measure a claim's metric (few_labels without 100)
        del study.by_seed["stacked"][s]["few_label_finetuned_100"]
    row = {r["said"]: r for r in verdicts(study)}["[A stacked autoencoder] can be used for pre-trained model"]
    assert (row["evidence"], row["verdict"]) == ("–", "not measured with this study's params")
    one = verdicts(_lecture_study(tmp_path / "one", seeds=(42,)))
    assert {r["verdict"] for r in one} >= {"no verdict with 1 training seed (needs 3)"}
    assert not {"holds", "contradicted"} & {r["verdict"] for r in one}


def test_a_sweep_cell_of_another_ema_or_split_is_another_setting(tmp_path):
    """The EMA is study-wide (`ema` in params.yaml), not in a model's block: a sweep run under another half-life is
    another recipe, and its cells are left out like those of another batch size."""
    lr = {"lr_g": 0.01, "lr_d": 0.01}
    then = {"ema": {"half_life_images": 5000}}
    summary = {"grid": ["0.001", "0.01"], "budget_images": 64000, "results": {
        "a": {"0.001": {**_cell(90, 5), "setting": _setting("a", lr, then)},
              "0.01": {**_cell(150, 5), "setting": _setting("a", lr, then)}}}}
    params = {"seeds": [42], "budget": {"images": 64000}, "gans": {"a": lr}}  # the default half-life now
    assert _setting("a", lr, then) != _setting("a", lr, params) == _setting("a", lr, {"ema": {"rampup": 0.5}})
    t = settle(summary, params, tmp_path)
    assert t["left_out"] == ["the cell a at 0.001", "the cell a at 0.01"]
    assert settle(summary, {**params, **then}, tmp_path).get("left_out") is None
    # the splits are part of the setting too: a cell judged on another validation split is another recipe's
    assert _setting("a", lr, {"data": {"val_size": 400}}) != _setting("a", lr, params) == \
        _setting("a", lr, {"data": {"val_size": 500}})


def test_choices_list_every_value_away_from_its_default_and_what_stands_behind_it():
    from pipeline.config import load_config
    from pipeline.report.sections import choices
    from tests.conftest import ROOT

    cfg = load_config(ROOT / "params.yaml")
    dcgan, progan = (f"{cfg.gans.entries()[m].lr_g:g}" for m in ("dcgan", "progan"))  # whatever the grid chose
    cells = {"dcgan": {"0.0003": {}, dcgan: {}}, "progan": {progan: {}}}  # progan: its own run only
    study = SimpleNamespace(tuning={"results": cells}, metrics={n: {} for n in cfg.models()}, cfg=cfg)
    text = choices(study)
    rows = _rows(text)
    assert ["dcgan", "lr_g", dcgan, "0.0002", "learning-rate grid (*Tuning effort*)"] in rows
    assert ["progan", "lr_d", progan, "0.001",
            "learning-rate grid of an earlier setting (its cells left out in *Tuning effort*)"] in rows
    assert ["stylegan", "plain_lr_scale", "0.1", "1.0", "set in params.yaml; no screen stored"] in rows
    assert ["stylegan_no_mixing", "mixing_prob"] not in [r[:2] for r in rows]  # what the ablation is: not a choice
    assert ["dcgan", "latent_dim"] not in [r[:2] for r in rows]  # at its default: not a choice


def test_results_csv_has_one_row_per_number(tmp_path):
    import pandas as pd

    from pipeline.report import tidy, write_results

    by_seed = {"dcgan": {42: {"fid": 101.5, "fid_sets": [100.0, 103.0], "health": "ok", "classes_covered": 10,
                              "flag": True}}, "pca": {42: {"test_mse": 0.0165}}}
    write_results(SimpleNamespace(results=tidy(by_seed)), tmp_path / "results.csv")
    rows = pd.read_csv(tmp_path / "results.csv")
    assert list(rows.columns) == ["model", "seed", "sample_set", "metric", "value"]
    assert rows.iloc[0].tolist()[:2] == ["dcgan", 42] and pd.isna(rows.iloc[0]["sample_set"])
    assert rows.iloc[0].tolist()[3:] == ["classes_covered", 10.0]
    fid = rows[rows["metric"] == "fid"]
    assert fid["sample_set"].tolist()[1:] == [0, 1] and fid["value"].tolist() == [101.5, 100.0, 103.0]
    assert set(rows["metric"]) == {"classes_covered", "fid", "test_mse"}  # text and flags are not numbers


def test_results_csv_round_trips_and_its_means_over_seeds_are_the_report_s(tmp_path):
    """A three-seed study on disk: results.csv loads with `pandas.read_csv` into the study's own table, and a
    groupby over its seeds gives the numbers the report's sections read (Study.metrics)."""
    import pandas as pd

    from pipeline.config import load_config
    from pipeline.report import load_study, write_results
    from tests.conftest import ROOT

    cfg = load_config(ROOT / "params.yaml").model_copy(update={"seeds": [42, 43, 44]})
    names = list(cfg.models())
    for n in names:
        for i, seed in enumerate(cfg.seeds):
            fid = [200.0 + 10 * i, 204.0 + 10 * i]  # the run's FID is the mean over its two sample sets
            metrics = {"fid": sum(fid) / 2, "fid_std": 2.0 + i, "fid_sets": fid, "classes_covered": 9 + i % 2}
            (tmp_path / "metrics").mkdir(exist_ok=True)
            (tmp_path / "metrics" / f"{n}-{seed}.json").write_text(json.dumps(metrics))
            (tmp_path / "runs" / f"{n}-{seed}" / "train").mkdir(parents=True)
            (tmp_path / "runs" / f"{n}-{seed}" / "train" / "history.json").write_text(json.dumps([{"epoch": 1}]))
            (tmp_path / "runs" / f"{n}-{seed}" / "train" / "timing.json").write_text(
                json.dumps({"train_seconds": 10.0 * (i + 1)}))
    (tmp_path / "metrics" / "evaluator.json").write_text("{}")
    (tmp_path / "manifest.json").write_text("{}")
    (tmp_path / "evaluator.pt").write_bytes(b"the ruler")
    study = load_study(cfg, tmp_path / "metrics", tmp_path / "runs", tmp_path / "manifest.json", tmp_path / "figures",
                       tmp_path / "evaluator.pt")
    import hashlib

    assert study.evaluator["weights_sha256"] == hashlib.sha256(b"the ruler").hexdigest()  # the report names it
    write_results(study, tmp_path / "results.csv")
    loaded = pd.read_csv(tmp_path / "results.csv")
    pd.testing.assert_frame_equal(loaded, study.results, check_dtype=False)
    assert len(loaded) == len(names) * 3 * 7  # fid, its 2 sets, fid_std, classes_covered, train_seconds, epochs

    whole = loaded[loaded["sample_set"].isna()]
    means = whole.groupby(["model", "metric"])["value"].mean()
    spread = whole.groupby(["model", "metric"])["value"].std()
    m = study.metrics[names[0]]
    assert m["fid"] == pytest.approx(means[names[0], "fid"]) == pytest.approx(212.0)
    assert m["train_seconds"] == pytest.approx(means[names[0], "train_seconds"]) == pytest.approx(20.0)
    assert m["classes_covered"] == pytest.approx(means[names[0], "classes_covered"])
    assert m["fid_std"] == pytest.approx(spread[names[0], "fid"]) == pytest.approx(10.0)  # over seeds now
    assert m["fid_sets_std"] == pytest.approx(3.0)  # the sample sets' spread, averaged over the seeds
    assert m["fid_per_seed"] == [202.0, 212.0, 222.0]
    assert {n: study.metrics[n]["fid"] for n in names} == pytest.approx(means.xs("fid", level="metric").to_dict())


def test_style_mixing_table_has_a_column_per_number_of_latents(tmp_path):
    from pipeline.report.sections import style_mixing

    study = _lecture_study(tmp_path)
    study.cfg.evaluate = SimpleNamespace(n_generated=1000)
    for n in ("stylegan", "stylegan_no_mixing"):  # several seeds add a spread and per-seed values beside each number
        study.metrics[n] = {**study.metrics[n], "fid_mixed_1_seed_std": 2.0, "fid_mixed_1_per_seed": [1.0, 2.0, 3.0]}
    text = style_mixing(study)
    assert text.startswith("## Style mixing: FID of images mixed from several latents")
    rows = _rows(text)
    assert rows[0] == ["model", "mixing_prob (training)", "1 latent", "2 latents", "3 latents", "4 latents"]
    assert ["stylegan_no_mixing", "0", "148.5", "217.8", "247.5", "277.2"] in rows
    assert [r[0] for r in rows[1:]] == ["stylegan", "stylegan_no_mixing"]  # only style-based generators mix
    for n in ("stylegan", "stylegan_no_mixing"):
        del study.metrics[n]
    assert style_mixing(study) is None


def test_the_grid_tunes_every_generator_by_its_own_learning_rate_keys(params_raw):
    """Equal tuning effort: every GAN (lr_g = lr_d), ddpm and the VAE (lr) get the same grid; an autoencoder that
    does not generate gets none. Each cell runs that model's evaluation stage at the selection seed."""
    from pipeline.tuning import queue_commands, swept

    tuned = swept(params_raw)
    assert set(tuned) == {*params_raw["gans"], *params_raw["diffusion"], "vae"}
    commands = [" ".join(c) for c in queue_commands({m: tuned[m] for m in ("vae", "dcgan", "ddpm")}, [0.001], 7)]
    scope = "-S ++evaluate.scope=selection"  # a cell's evaluation computes what the choice reads, no more
    assert commands == [
        f"dvc exp run --queue -n lr-vae-0.001 -S seeds=[7] -S autoencoders.vae.lr=0.001 {scope} evaluate_ae@vae-7",
        "dvc exp run --queue -n lr-dcgan-0.001 -S seeds=[7] -S gans.dcgan.lr_g=0.001 -S gans.dcgan.lr_d=0.001 "
        f"{scope} evaluate_gan@dcgan-7",
        f"dvc exp run --queue -n lr-ddpm-0.001 -S seeds=[7] -S diffusion.ddpm.lr=0.001 {scope} "
        "evaluate_diffusion@ddpm-7"]


def test_the_batch_stage_runs_at_the_best_learning_rate_and_a_new_batch_asks_for_the_neighbours(tmp_path):
    """Batch sizes at the best learning rate: the batch in use is the learning-rate grid's own cell; a better batch
    asks to be set with the learning rate's two neighbours; once set, the old batch's learning-rate cells are
    another setting and the batch cell at the new batch joins the learning-rate grid."""
    def params(batch):
        return {"seeds": [42], "budget": {"images": 64000}, "gans": {"gan": {"lr_g": 0.003, "lr_d": 0.003,
                                                                               "batch_size": batch}}}

    at = lambda batch: _setting("gan", params(batch)["gans"]["gan"])  # noqa: E731
    free = _setting("gan", params(32)["gans"]["gan"], None, FREE["bs"])
    summary = {"grid": ["0.001", "0.003", "0.01"], "budget_images": 64000, "results": {"gan": {
        "0.001": {**_cell(300, 5), "setting": at(32)}, "0.003": {**_cell(200, 5), "setting": at(32)},
        "0.01": {**_cell(260, 5), "setting": at(32)}}},
        "batch": {"gan": {"16": {**_cell(150, 5), "setting": free, "lr": "0.003"},
                          "64": {**_cell(240, 5), "setting": free, "lr": "0.003"}}}}
    t = settle(summary, params(32), tmp_path)
    assert list(t["batch"]["gan"]) == ["16", "32", "64"] and t["batch"]["gan"]["32"]["fid"] == 200  # the lr cell
    assert t["batch_best"] == {"gan": "16"} and t["batch_used"] == {"gan": 32}
    assert t["next"]["gan"]["batch"] == {"set": 16, "lr_grid": ["0.001", "0.01"]}
    text = tuning(SimpleNamespace(tuning=t, metrics={"gan": {}}))
    assert ["gan", "0.003", "150 ± 5 (10)", "200 ± 5 (10)", "240 ± 5 (10)", "16", "32", "no"] in _rows(text)
    assert "`gan` (batch 16, then lr 0.001 and 0.01)" in text
    assert settle(t, params(32), tmp_path) == t  # the written summary read back: the same, nothing left out

    moved = settle(summary, params(16), tmp_path)  # batch_size: 16 set in params.yaml
    assert moved["results"]["gan"] == {"0.003": {**_cell(150, 5), "setting": at(16)}}  # the batch cell, at 16
    assert "the cell gan at 0.001" in moved["dropped"] and moved["batch_best"] == {"gan": "16"}
    assert "batch" not in moved["next"].get("gan", {})  # its batch is its best: nothing more asked of this stage


def test_the_time_section_names_the_machine_each_seed_trained_on():
    from pipeline.report.sections import _machines

    one = {"a": {1: {"machine": "CPU X, 2 threads"}, 2: {"machine": "CPU X, 2 threads"}}, "b": {1: {}}}
    assert _machines(SimpleNamespace(by_seed=one)) == " The training stages ran on CPU X, 2 threads."
    one["b"][3] = {"machine": "CPU Y, 2 threads"}  # a seed trained on another machine
    assert _machines(SimpleNamespace(by_seed=one)) == \
        " The training stages ran on CPU X, 2 threads (seeds 1, 2); CPU Y, 2 threads (seed 3)."
    assert _machines(SimpleNamespace(by_seed={"a": {1: {}}})) == ""  # runs that predate the record


def test_a_size_the_same_in_every_seed_keeps_its_type_and_a_count_that_varies_is_averaged():
    """Over seeds, a model's code size and parameter count are not measurements: they stay the integers every run
    wrote (the report says "30-dimensional", not "30.0-dimensional"), while active codes, which differ, average."""
    from pipeline.report import over_seeds
    from pipeline.report.sections import _count

    runs = [{"code_size": 30, "parameters": 82414, "active_codes": a, "test_mse": e}
            for a, e in ((21, 0.015), (22, 0.017), (22, 0.016))]
    m = over_seeds(runs)
    assert m["code_size"] == 30 and isinstance(m["code_size"], int) and f"{m['parameters']:,}" == "82,414"
    assert m["active_codes"] == pytest.approx(65 / 3) and m["test_mse"] == pytest.approx(0.016)
    assert m["code_size_per_seed"] == [30, 30, 30] and m["code_size_seed_std"] == 0
    assert _count(m["code_size"] - m["active_codes"]) == "8.3" and _count(m["code_size"]) == "30"
