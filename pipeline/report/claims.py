"""What the lecture claims, each claim with the study's evidence and a verdict computed from it.

Every row names the lecture's words, the experiment of the study that tests them and how its number is read. The
criterion is fixed here, before any seed runs:

- a *difference* claim compares two per-seed values (two models, or two measurements of one model) in a claimed
  direction. It takes part in one family of tests: a two-sided Welch t-test over the training seeds for each such
  claim, Holm-corrected over all of them (`pipeline.report.stats`). Verdict: *holds* (separated, in the claimed
  direction), *contradicted* (separated, the other way) or *not separated at this budget*;
- an *equivalence* claim (a linear autoencoder is PCA) holds when every seed's value lies within a margin fixed
  here, is contradicted when every seed's lies outside it, and is not separated otherwise;
- with fewer than `MIN_SEEDS` training seeds no verdict is given, only the measurement;
- a row that holds *by construction* (a penalty's target, a parameter count) or that the study only *shows*
  (a figure, a count of flagged runs) says so instead of claiming a verdict, and a claim the study does not
  measure yet says that.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Literal

from pipeline.io import read_json
from pipeline.models import run_name
from pipeline.report import Study
from pipeline.report.stats import MIN_SEEDS, Comparison, family

PCA_MARGIN = 0.02  # a linear autoencoder "is PCA" when its test MSE is within 2 % of PCA's at the same code size
FID_REACHED = 300.0  # growing's speed: seconds until a curve point first scores an FID at or below this
FEW_LABELS = 100  # pretraining's claim: labelled images of the few-label classifier

Value = Callable[[dict], float]  # one seed's metrics of a model -> the number a claim tests


@dataclass(frozen=True)
class Side:
    model: str
    value: Value
    label: str


@dataclass(frozen=True)
class Claim:
    said: str  # the lecture's words
    experiment: str  # what the study measures, and how the number reads
    kind: Literal["difference", "equivalence", "construction", "shown", "unmeasured"]
    a: Side | None = None
    b: Side | None = None  # a difference: a is claimed `expect` than b
    expect: Literal["lower", "higher"] = "lower"
    evidence: Callable[[Study], str | None] | None = None  # the row's measurement for the other kinds


def _key(key: str) -> Value:
    return lambda m: float(m[key])


def _generalisation(m: dict) -> float:
    return float(m["test_mse"]) - float(m["train_mse"])  # the gap between unseen and seen images


def _steps(study: Study, a: str, b: str) -> str:
    """'optimizer steps (5,400 each)' from the two runs' timing, or both counts when they differ."""
    counts = [study.metrics.get(n, {}).get("steps") for n in (a, b)]
    if None in counts:
        return "optimizer steps"
    if counts[0] == counts[1]:
        return f"optimizer steps ({counts[0]:,.0f} each)"
    return f"unequal optimizer steps ({counts[0]:,.0f} against {counts[1]:,.0f})"


def _per_image(m: dict) -> float:
    return 1e3 * m["train_seconds"] / m["images_seen"]  # milliseconds of optimizer steps per training image


def _curve(study: Study, model: str, seed: int) -> list[dict]:
    path = study.runs / run_name(model, seed) / "train" / "curve.json"
    return read_json(path) if path.is_file() else []


def _gap(study: Study, model: str, at: float) -> Value:
    """Validation minus train MSE (the training loop's per-epoch fixed subsets) at the epoch `at` of the way
    through training (1: the last)."""
    def value(m: dict) -> float:
        path = study.runs / run_name(model, int(m["seed"])) / "train" / "history.json"
        rows = [r for r in (read_json(path) if path.is_file() else []) if "val_mse" in r and "train_mse" in r]
        row = rows[max(0, math.ceil(at * len(rows)) - 1)]  # an IndexError: no history (not measured)
        return float(row["val_mse"]) - float(row["train_mse"])
    return value


def _rises(study: Study, model: str) -> Value:
    """The FID the curve gives back along the budget: the sum of its rises between curve points."""
    def value(m: dict) -> float:
        points = _curve(study, model, int(m["seed"]))
        return sum(max(0.0, b["fid"] - a["fid"]) for a, b in zip(points, points[1:]))
    return value


def _time_to(study: Study, model: str) -> Value:
    """Training seconds until the curve first reaches FID_REACHED (infinite when it never does)."""
    def value(m: dict) -> float:
        return next((p["seconds"] for p in _curve(study, model, int(m["seed"])) if p["fid"] <= FID_REACHED), math.inf)
    return value


def _sparsity(study: Study) -> str | None:
    rows = [f"`{n}` {100 * study.metrics[n]['mean_activation']:.1f} % (target "
            f"{100 * study.metrics[n]['target_activation']:.0f} %)" for n in ("sparse_l1", "sparse_kl")
            if "mean_activation" in study.metrics.get(n, {})]
    return ("mean coding activation " + ", ".join(rows)) if rows else None


def _tying(study: Study) -> str | None:
    m = study.metrics
    if not {"tied", "stacked"} <= set(m):
        return None
    return (f"parameters {m['tied']['parameters']:,} against {m['stacked']['parameters']:,} "
            f"({m['tied']['parameters'] / m['stacked']['parameters']:.2f}×); test MSE {m['tied']['test_mse']:.4f} "
            f"against {m['stacked']['test_mse']:.4f}")


def _unstable(study: Study) -> str | None:
    gans = study.having("fid", "gan")
    if not gans:
        return None
    runs = [(n, s, study.by_seed[n][s]) for n in gans for s in study.seeds]
    flagged = [f"`{n}` seed {s} ({m['health']})" for n, s, m in runs if m.get("health", "ok") != "ok"]
    return (f"{len(flagged)} of {len(runs)} GAN runs ended collapsed or blew up"
            + (f": {', '.join(flagged)}" if flagged else "") + " (*Mode collapse*, *Training ended*)")


def _noise(study: Study) -> str | None:
    m = study.metrics.get("stylegan", {})
    if "noise_pixel_std" not in m:
        return None
    return (f"per-pixel std over 32 noise draws for one w: {m['noise_pixel_std']:.4f} (pixels in [0, 1]; the "
            "*stochastic variation* figure)")


def mixed_counts(m: dict) -> list[int]:
    """The numbers of latents the evaluation mixed images from (`fid_mixed_<k>`, pipeline/evaluate/run.py)."""
    return sorted(int(found[1]) for k in m if (found := re.fullmatch(r"fid_mixed_(\d+)", k)))  # not their _seed_std


def _mixing_cost(m: dict) -> float:
    """FID's rise from images of one latent to images mixed from several (the mean over every k > 1)."""
    one = m["fid_mixed_1"]  # a KeyError: not measured (a model without styles)
    mixed = [m[f"fid_mixed_{k}"] for k in mixed_counts(m) if k > 1]
    return sum(mixed) / len(mixed) - one


def _mixed_text(study: Study) -> str:
    counts = [k for k in mixed_counts(study.metrics.get("stylegan", {})) if k > 1]
    return f"{counts[0]} to {counts[-1]}" if counts else "several"


def claims(study: Study) -> list[Claim]:
    """The lecture's claims in its order; each Side reads one seed's metrics."""
    return [
        Claim("If autoencoder use only linear activation and MSE as cost function, it is the same as PCA",
              f"`linear`: test MSE over PCA's at the same code size, within {100 * PCA_MARGIN:.0f} % of 1 in every "
              "seed (*A linear autoencoder is PCA*)", "equivalence",
              Side("linear", _key("mse_ratio_to_pca"), "MSE ratio to PCA")),
        Claim("[A stacked autoencoder] can be used for pre-trained model",
              f"`stacked`: test accuracy with {FEW_LABELS} labels, encoder pretrained and fine-tuned against the same "
              "network from scratch (*Pretraining with few labels*)", "difference",
              Side("stacked", _key(f"few_label_finetuned_{FEW_LABELS}"), "pretrained"),
              Side("stacked", _key(f"few_label_scratch_{FEW_LABELS}"), "scratch"), expect="higher"),
        Claim("Be careful not to be over-fitting",
              "`stacked`: test MSE against train MSE at the end of training (a gap: over-fitting at this budget)",
              "difference", Side("stacked", _key("test_mse"), "test MSE"),
              Side("stacked", _key("train_mse"), "train MSE"), expect="higher"),
        Claim("Be careful not to be over-fitting (the gap's trend)",
              "`stacked`: validation minus train MSE (per-epoch fixed subsets) at the last epoch against half-way "
              "through training (a widening gap: over-fitting under way)", "difference",
              Side("stacked", _gap(study, "stacked", 1.0), "gap at the end"),
              Side("stacked", _gap(study, "stacked", 0.5), "gap half-way"), expect="higher"),
        Claim("Weight tying: use Wᵀ as the weight matrix in the decoding layer",
              "`tied` against `stacked` (same shape): the decoder's weights are the encoder's", "construction",
              evidence=_tying),
        Claim("Weight tying: use Wᵀ as the weight matrix in the decoding layer (half the weights: less "
              "over-fitting)",
              "`tied` against `stacked` at the same code size and optimizer steps: test minus train MSE at the end "
              "(the book's reason for tying: fewer weights limit over-fitting)", "difference",
              Side("tied", _generalisation, "tied"), Side("stacked", _generalisation, "untied"), expect="lower"),
        Claim("Greedy layer-wise training (not used very well these days)",
              f"`greedy` against `stacked` trained end to end, the same network and {_steps(study, 'greedy', 'stacked')}"
              ": test MSE", "difference",
              Side("greedy", _key("test_mse"), "greedy"), Side("stacked", _key("test_mse"), "end to end"),
              expect="higher"),
        Claim("[Denoising autoencoder] for eliminating noise",
              "`denoising_gaussian`: MSE of its reconstructions of noisy test images against the noisy images "
              "themselves, both to the clean images (*Denoising*)", "difference",
              Side("denoising_gaussian", _key("noisy_test_mse"), "denoised"),
              Side("denoising_gaussian", _key("noise_mse"), "noisy"), expect="lower"),
        Claim("Sparsity: about 5% of neurons activate in the coding layer",
              "`sparse_l1`, `sparse_kl`: the mean coding activation, which the penalty is set to (*Sparsity*)",
              "construction", evidence=_sparsity),
        Claim("GANs: unstable parameters; mode collapse",
              "every GAN run's own verdict and its classes covered along the budget", "shown", evidence=_unstable),
        Claim("DCGAN's guidelines (strided and transposed convolutions, batch norm, ReLU / LeakyReLU)",
              "`dcgan` against the fully connected `gan`: FID", "difference",
              Side("dcgan", _key("fid"), "dcgan"), Side("gan", _key("fid"), "gan"), expect="lower"),
        Claim("[Growing] speeds the training up",
              "`progan` against `progan_no_growing`: milliseconds of optimizer steps per training image", "difference",
              Side("progan", _per_image, "growing"), Side("progan_no_growing", _per_image, "not growing"),
              expect="lower"),
        Claim("[Growing] speeds the training up (to a given quality)",
              f"`progan` against `progan_no_growing`: training seconds until a curve point first scores FID ≤ "
              f"{FID_REACHED:g}", "difference",
              Side("progan", _time_to(study, "progan"), "growing"),
              Side("progan_no_growing", _time_to(study, "progan_no_growing"), "not growing"), expect="lower"),
        Claim("[Growing] greatly stabilizes [the training]",
              "`progan` against `progan_no_growing`: the FID the curve gives back (sum of its rises between curve "
              "points; the scored generator is the moving average, at the resolution of the moment)", "difference",
              Side("progan", _rises(study, "progan"), "growing"),
              Side("progan_no_growing", _rises(study, "progan_no_growing"), "not growing"), expect="lower"),
        Claim("Increasing variation using minibatch standard deviation",
              "`progan` against `progan_no_mbstd`: recall (the share of real images the samples' manifold covers)",
              "difference", Side("progan", _key("recall"), "with"), Side("progan_no_mbstd", _key("recall"), "without"),
              expect="higher"),
        Claim("Mapping network: in W the factors of variation become more linear",
              "`stylegan`: linear separability of the evaluator's classes in W against in Z (exp of the classes' "
              "entropy left by a linear SVM's side; 1: perfectly linear; *W against Z*)", "difference",
              Side("stylegan", _key("separability_w"), "W"), Side("stylegan", _key("separability_z"), "Z"),
              expect="lower"),
        Claim("Mapping network: in W the factors of variation become more linear (smoother paths)",
              "`stylegan`: perceptual path length, full-path sampling, in W (lerp) against in Z (slerp), in the "
              "evaluator's features (*W against Z*)", "difference",
              Side("stylegan", _key("ppl_w_full"), "W"), Side("stylegan", _key("ppl_z_full"), "Z"), expect="lower"),
        Claim("Mapping network: in W the factors of variation become more linear (against no mapping network)",
              "`stylegan`'s W against `stylegan_no_mapping`'s (w is the normalised z): linear separability, as in "
              "the StyleGAN paper's table of mapping depths (*W against Z*)", "difference",
              Side("stylegan", _key("separability_w"), "mapping"),
              Side("stylegan_no_mapping", _key("separability_w"), "no mapping"), expect="lower"),
        Claim("Constant input: increase performance empirically",
              "`stylegan` against `stylegan_no_const` (the synthesis starts from a learned projection of w): FID "
              "(*Ablation*)", "difference",
              Side("stylegan", _key("fid"), "constant"), Side("stylegan_no_const", _key("fid"), "projection"),
              expect="lower"),
        Claim("Noise inputs control stochastic variation",
              "`stylegan`: the spread of images of one w under new noise", "shown", evidence=_noise),
        Claim("Style mixing (mixing regularization) reduces the correlation between adjacent layers",
              "`stylegan` (mixing regularization on) against `stylegan_no_mixing` (off): how much FID rises when each "
              f"image's styles come from {_mixed_text(study)} latents switched at random layers (the mean of those "
              "FIDs minus the FID of images of one latent; the paper's Table 2)", "difference",
              Side("stylegan", _mixing_cost, "mixing on"), Side("stylegan_no_mixing", _mixing_cost, "mixing off"),
              expect="lower"),
    ]


TUNED = {"batch_size": "batch size", "lr": "learning rate", "lr_g": "learning rate"}  # what the grid sets apart


def _tuned_apart(study: Study, a: str, b: str) -> str:
    """Two models of one claim each run at their own tuned setting (*Tuning effort*); where those differ, the
    verdict is of the mechanism together with them, and the row says so."""
    if a == b:
        return ""
    both = [(word, getattr(study.cfg.model(a), k, None), getattr(study.cfg.model(b), k, None))
            for k, word in TUNED.items()]
    apart = [f"{word} {x} against {y}" for word, x, y in both if None not in (x, y) and x != y]
    return f" — each at its own tuned setting ({', '.join(apart)}), part of what is compared" if apart else ""


def _fmt(v: float) -> str:
    return "never" if math.isinf(v) else f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def _values(study: Study, side: Side) -> list[float] | None:
    """The side's value in each seed; None when the study did not measure it (a profile without that metric, such
    as a few-label count its params do not list)."""
    try:
        return [side.value({**study.by_seed[side.model][s], "seed": s}) for s in study.seeds]
    except (KeyError, TypeError, IndexError):
        return None


def verdicts(study: Study) -> list[dict]:
    """One row per claim: the lecture's words, the experiment, the evidence and the verdict."""
    rows, tested = [], []
    for c in claims(study):
        row = {"said": c.said, "experiment": c.experiment}
        needed = [s.model for s in (c.a, c.b) if s]
        if any(n not in study.by_seed for n in needed):
            rows.append({**row, "evidence": "–", "verdict": "not in this study's params"})
            continue
        measured = [_values(study, side) for side in (c.a, c.b) if side]
        if any(v is None for v in measured):
            rows.append({**row, "evidence": "–", "verdict": "not measured with this study's params"})
            continue
        if c.kind == "difference":
            a, b = measured
            row["experiment"] += _tuned_apart(study, c.a.model, c.b.model)
            row["evidence"] = (f"{c.a.label} {' / '.join(map(_fmt, a))} against {c.b.label} "
                               f"{' / '.join(map(_fmt, b))}")
            if any(math.isinf(v) for v in a + b):
                row["verdict"] = f"no verdict: a run never reached FID {FID_REACHED:g}"
            else:
                tested.append((len(rows), a, b, c.expect))
                row["family"] = True  # one of the claims Holm's correction counts
        elif c.kind == "equivalence":
            a = measured[0]
            row["evidence"] = f"{c.a.label} {' / '.join(f'{v:.4f}' for v in a)}"
            inside = [abs(v - 1) <= PCA_MARGIN for v in a]
            row["verdict"] = (_too_few(study) if len(a) < MIN_SEEDS else "holds" if all(inside) else
                              "contradicted" if not any(inside) else "not separated at this budget")
        else:
            evidence = c.evidence(study) if c.evidence else None
            row["evidence"] = evidence or "–"
            row["verdict"] = ("not in this study's params" if evidence is None and c.kind != "unmeasured" else
                              {"construction": "holds by construction (not a finding)", "shown": "shown, not tested",
                               "unmeasured": "not measured yet"}[c.kind])
        rows.append(row)
    if tested:
        values = {f"a{i}": a for i, a, _, _ in tested} | {f"b{i}": b for i, _, b, _ in tested}
        found: list[Comparison] | None = family(values, [(f"a{i}", f"b{i}") for i, *_ in tested])
        for k, (i, _, _, expect) in enumerate(tested):
            if found is None:
                rows[i]["verdict"] = _too_few(study)
                continue
            t = found[k]
            direction = "lower" if t.diff < 0 else "higher"
            rows[i]["evidence"] += f"; {t.describe('')}"
            rows[i]["verdict"] = ("not separated at this budget" if not t.separated else
                                  "holds" if direction == expect else "contradicted")
    return rows


def _too_few(study: Study) -> str:
    n = len(study.seeds)
    return f"no verdict with {n} training seed{'s' if n > 1 else ''} (needs {MIN_SEEDS})"
