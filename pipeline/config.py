"""Typed study parameters: params.yaml is validated here, once, into frozen pydantic objects.

Every block rejects unknown keys; each model entry is validated by its own registry config class (imported for
the models params.yaml lists: a stage imports every listed model's config to check the whole file, and uses the
code of its own model only). Any problem becomes one `StudyError` line naming the key and what is allowed.
"""

from __future__ import annotations

import re
from pathlib import Path
from functools import lru_cache
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, create_model, model_validator

from pipeline import StudyError
from pipeline.models import MODELS, PARAMS_BLOCK
from pipeline.models.base import ModelConfig, Strict

DATASETS = ("mnist5k", "mnist", "fashion_mnist", "cifar10", "folder")


class DataConfig(Strict):
    dataset: Literal["mnist5k", "mnist", "fashion_mnist", "cifar10", "folder"] = "mnist5k"
    root: str = "data/raw"  # where torchvision datasets are downloaded (or already lie)
    folder: str | None = None  # an ImageFolder root (one sub-folder per class) when dataset is 'folder'
    color: Literal["grayscale", "rgb"] = "grayscale"  # what 'folder' images are converted to
    image_size: int = Field(28, ge=8, le=512)  # side of the square images every model sees
    test_size: int = Field(1000, ge=10)  # images held out for the reported numbers, stratified by class
    val_size: int = Field(500, ge=10)  # images held out for every choice made by looking at a number
    train_size: int | None = Field(None, ge=10)  # None: every image not held out

    @model_validator(mode="after")
    def _folder_needs_path(self):
        if self.dataset == "folder" and not self.folder:
            raise ValueError("folder: dataset 'folder' needs the path of an ImageFolder tree here")
        return self


class TrainConfig(Strict):
    """Settings every training loop shares."""

    checkpoint_every: int = Field(200, ge=1)  # optimizer steps between checkpoints (also one at each epoch end)
    grid_size: int = Field(64, ge=4, le=256)  # images in the per-epoch sample / reconstruction grids
    processes: int = Field(1, ge=1, le=64)  # data-parallel processes (torchrun); each batch_size is the global batch
    sync_batchnorm: bool = False  # with processes > 1 on CUDA: batch-norm statistics over the global batch
    autocast: Literal["none", "bf16"] = "none"  # bf16: forward passes and losses in bfloat16 (GPUs that have it)


class EvaluatorConfig(Strict):
    """The small CNN classifier whose features define FID/KID/precision/recall and whose labels give coverage."""

    epochs: int = Field(12, ge=1, le=10_000)
    batch_size: int = Field(64, ge=2, le=65536)
    lr: float = Field(1e-3, gt=0, le=1)
    width: int = Field(32, ge=4, le=1024)
    feature_dim: int = Field(128, ge=8, le=4096)
    augment: Literal["shift", "none"] = "shift"


class EvaluateConfig(Strict):
    n_generated: int = Field(1000, ge=10, le=100_000)  # images drawn from each generative model
    knn_k: int = Field(3, ge=1, le=100)  # neighbourhood size of the precision/recall manifolds
    kid_subset_size: int = Field(500, ge=2)
    kid_subsets: int = Field(50, ge=1, le=10_000)
    coverage_min_share: float = Field(0.2, gt=0, le=1)  # a class is covered with >= this share of 1/K
    sample_sets: int = Field(5, ge=1, le=100)  # disjoint sets of n_generated images: each metric's mean and spread
    curve_samples: int = Field(500, ge=10, le=100_000)  # images scored at each curve point during training (FID, ...)
    probe_max_iter: int = Field(2000, ge=10, le=1_000_000)
    # labelled images for the pretraining experiment (a count above the train split means all of it)
    few_labels: list[Annotated[int, Field(ge=1, le=10**9)] | Literal["all"]] = Field(
        default_factory=lambda: [50, 100, 500, 1000, "all"], max_length=20)
    few_label_steps: int = Field(200, ge=1, le=1_000_000)  # Adam steps per few-label classifier
    few_label_lr: float = Field(1e-3, gt=0, le=1)
    # W against Z (every GAN's z, StyleGAN's w): perceptual path length and linear separability, as the StyleGAN paper
    ppl_pairs: int = Field(2000, ge=10, le=1_000_000)  # latent pairs per path length (the paper: 100,000)
    separability_samples: int = Field(4000, ge=20, le=1_000_000)  # latents labelled; the more confident half used
    # full: every metric, figure and analysis the report shows; selection: only what the tuning grid's choice reads
    # (a generator's FID, KID, precision, recall and coverage against the test and validation splits, an
    # autoencoder's MSE and probe): `make sweep` sets it in its experiments
    scope: Literal["full", "selection"] = "full"

    @model_validator(mode="after")
    def _kid_fits(self):
        if self.kid_subset_size > self.n_generated:
            raise ValueError(f"kid_subset_size: at most n_generated ({self.n_generated}); got {self.kid_subset_size}")
        if self.knn_k >= min(self.n_generated, self.curve_samples):
            raise ValueError(f"knn_k: below n_generated ({self.n_generated}) and curve_samples ({self.curve_samples}); "
                             f"got {self.knn_k}")
        return self


class BudgetConfig(Strict):
    """The training budget of every generative model (the VAE, every GAN, every diffusion model): one number, the
    same for all."""

    images: int = Field(64000, ge=1, le=10**10)  # real training images shown to the discriminator / the encoder / the denoiser
    curve_points: int = Field(10, ge=1, le=1000)  # FID, recall and coverage measured at every 1/curve_points of it


class EMAConfig(Strict):
    """The moving average of every generator that averages (every GAN's generator, every diffusion model's
    network), as a half-life in training images (stylegan2-ada-pytorch's `ema_kimg` and `ema_rampup`): one setting
    for every model, so that batch size and step count cannot change it. Each step the average moves toward the
    live weights with decay 0.5 ** (batch / h), h = min(half_life_images, rampup x images seen so far)."""

    half_life_images: int = Field(10000, ge=0, le=10**10)  # 0: the live network is scored (no average)
    # the half-life is at most this share of the images seen so far (0: no ramp-up): early weights, far from the
    # final ones, leave the average quickly; 0.5 reaches a 10,000-image half-life after 20,000 images
    rampup: float = Field(0.5, ge=0, le=10)


def ema_decay(ema: EMAConfig, images_seen: int, batch: int) -> float:
    """The per-step decay after a step of `batch` images that brought the images seen to `images_seen`."""
    half_life = float(ema.half_life_images)
    if ema.rampup > 0:
        half_life = min(half_life, ema.rampup * images_seen)
    return 0.5 ** (batch / half_life) if half_life > 0 else 0.0


class TrackingConfig(Strict):
    experiment: str = Field("ae-gan-study", min_length=1)
    log_model: Literal["pytorch", "none"] = "pytorch"


class ModelBlock(Strict):
    """One family's block of params.yaml: one optional field per registered model of the family that the file
    lists (`_study_class` makes it), each validated by the model's own config class."""

    def entries(self) -> dict[str, ModelConfig]:
        return {k: v for k, v in self if v is not None}


@lru_cache(maxsize=None)
def _family_block(family: str, names: tuple[str, ...]) -> type[ModelBlock]:
    fields: dict[str, Any] = {n: (MODELS[n].config | None, None) for n in MODELS
                              if n in names and MODELS[n].family == family}
    return create_model(f"{family.title()}Block", __base__=ModelBlock, **fields)


@lru_cache(maxsize=None)
def _study_class(names: tuple[str, ...]) -> type["StudyConfig"]:
    """StudyConfig whose family blocks know the registered models among `names` (importing only their files);
    any other name in a block is an unknown key there."""
    blocks = {block: (_family_block(family, names), _family_block(family, names)())
              for family, block in PARAMS_BLOCK.items()}
    return create_model("StudyConfig", __base__=StudyConfig, **blocks)


class StudyConfig(Strict):
    seed: int = Field(42, ge=0, lt=2**31)  # the data split, the evaluator
    seeds: list[Annotated[int, Field(ge=0, lt=2**31)]] = Field(default_factory=lambda: [42], min_length=1)  # training
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(1, ge=1, le=256)  # torch threads of each stage (float results depend on it)
    jobs: int = Field(2, ge=1, le=64)  # stages `make study` runs at once (changes no result)
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    evaluator: EvaluatorConfig = EvaluatorConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    budget: BudgetConfig = BudgetConfig()
    ema: EMAConfig = EMAConfig()
    tracking: TrackingConfig = TrackingConfig()
    autoencoders: ModelBlock = ModelBlock()  # parse_config validates with the models' own config classes
    gans: ModelBlock = ModelBlock()
    diffusion: ModelBlock = ModelBlock()

    @model_validator(mode="after")
    def _seeds_unique(self):
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: each seed once (got {self.seeds})")
        held = min(self.data.test_size, self.data.val_size)  # precision/recall against either held-out split
        if self.evaluate.knn_k >= held:
            raise ValueError(f"evaluate.knn_k: below data.test_size and data.val_size ({held}); got {self.evaluate.knn_k}")
        return self

    def with_seed(self, seed: int | None) -> "StudyConfig":
        """This config for one training run: `seed` (one of `seeds`; None: the first) seeds the model's training,
        sampling and evaluation; the data split and the evaluator keep the study's `seed`."""
        seed = self.seeds[0] if seed is None else seed
        if seed not in self.seeds:
            raise StudyError(f"seed {seed} is not in params.yaml's seeds {self.seeds}")
        return self.model_copy(update={"seed": seed})

    def models(self) -> dict[str, ModelConfig]:
        """Every model the study trains, by family (autoencoders, GANs, diffusion), in registry order."""
        return {**self.autoencoders.entries(), **self.gans.entries(), **self.diffusion.entries()}

    def model(self, name: str) -> ModelConfig:
        models = self.models()
        if name not in models:
            listed = ", ".join(models) or "none"
            raise StudyError(f"model '{name}' is not in params.yaml (models there: {listed})")
        return models[name]


def _allowed_keys(loc: tuple, study: type[StudyConfig]) -> list[str]:
    """The keys allowed at the block that holds `loc` (for 'unknown key' messages)."""
    model: Any = study
    for part in loc[:-1]:
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return []
        ann = fields[part].annotation
        model = next((a for a in getattr(ann, "__args__", (ann,)) if hasattr(a, "model_fields")), ann)
    return list(getattr(model, "model_fields", {}))


def _describe(err: dict, study: type[StudyConfig]) -> str:
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        block = loc[0] if len(loc) == 2 and loc[0] in PARAMS_BLOCK.values() else None
        name = loc[-1]
        if block and name in MODELS:
            right = PARAMS_BLOCK[MODELS[name].family]
            return f"{key}: '{name}' is a {MODELS[name].family}; list it under '{right}'"
        if block:
            valid = [n for n, s in MODELS.items() if PARAMS_BLOCK[s.family] == block]
            return f"{key}: unknown model '{name}'; registered: {', '.join(valid)}"
        return f"{key}: unknown key; allowed here: {', '.join(_allowed_keys(loc, study))}"
    msg = err["msg"].removeprefix("Value error, ")
    # a rule between fields of one block names the field it is reported on: "coarse_layers: 1 to 7 ..."
    named = re.match(r"([\w.]+): (.*)", msg, re.S)
    if err["type"] == "value_error" and named:
        field, msg = named.groups()
        key = f"{key}.{field}" if loc else field
        return f"{key}: {msg}"
    if "input" in err and err["type"] not in ("missing",) and not isinstance(err["input"], (dict, list)):
        msg += f" (got {err['input']!r})"
    return f"{key}: {msg}"


def parse_config(raw: Any, source: str = "params.yaml") -> StudyConfig:
    if not isinstance(raw, dict):
        raise StudyError(f"{source}: expected a mapping of blocks at the top level, got {type(raw).__name__}")
    listed = {name for block in PARAMS_BLOCK.values() if isinstance(raw.get(block), dict) for name in raw[block]}
    study = _study_class(tuple(sorted(n for n in listed if n in MODELS)))
    try:
        return study.model_validate(raw)
    except ValidationError as exc:
        raise StudyError(f"{source}: " + "; ".join(_describe(e, study) for e in _merge_unions(exc.errors()))) from None


def _merge_unions(errors: list[dict]) -> list[dict]:
    """A value that fits no member of a union (`few_labels: [0]`, a count or 'all') fails once per member, each
    under a tag of the member ('constrained-int', "literal['all']"): one error on the key, the members' rules
    joined by 'or'."""
    merged: dict[tuple, dict] = {}
    for err in errors:
        loc = tuple(p for p in err["loc"] if isinstance(p, int) or p.isidentifier())  # drop the member tags
        if loc in merged:
            merged[loc]["msg"] += " or " + err["msg"].removeprefix("Input should be ")
        else:
            merged[loc] = {**err, "loc": loc}
    return list(merged.values())


class ParamsLoader(yaml.SafeLoader):
    """YAML 1.2 booleans and floats, as DVC reads params.yaml: only true/false are booleans (on/off/yes/no stay
    strings), and 1e-3 is a float (YAML 1.1 wants 1.0e-3).

    `dvc exp run -S` rewrites params.yaml in YAML 1.2 and drops the quotes around "on"; PyYAML's default
    (YAML 1.1) would then read `on` as True.
    """

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:float")]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


ParamsLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                   list("tTfF"))
ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:(?:\.[0-9]+|[0-9]+\.[0-9]*)(?:[eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+|\.(?:inf|Inf|INF))$"
               r"|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."))


def read_params(text: str) -> Any:
    return yaml.load(text, Loader=ParamsLoader)  # noqa: S506 (a SafeLoader subclass)


def load_config(path: Path | str = "params.yaml") -> StudyConfig:
    path = Path(path)
    try:
        raw = read_params(path.read_text())
    except FileNotFoundError:
        raise StudyError(f"{path}: no such file (run from the repository root)") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise StudyError(f"{path}: not valid YAML{line}: {getattr(exc, 'problem', exc)}") from None
    return parse_config(raw, str(path))


def config_dump(cfg: Strict) -> dict[str, Any]:
    return cfg.model_dump(mode="json")
