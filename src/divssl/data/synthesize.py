"""Synthetic pools from a text-to-image diffusion model (SSL-diversity paper, supplementary D.2).

The paper generates ``A_Synthetic`` with Stable Diffusion 2.1, the prompt ``"A photo of a
class_name"``, the DPM-Solver++ scheduler with beta_start 0.00085 and beta_end 0.012, guidance
scale w = 7.5 and 50 steps. :func:`synthesize` does the same with any Stable Diffusion pipeline
saved in a local folder (``diffusers.StableDiffusionPipeline.from_pretrained(DIR,
local_files_only=True)``; nothing is downloaded).

Every image has its own seed derived from ``(seed, class index, image index)`` through
``numpy.random.SeedSequence``, and its own CPU ``torch.Generator``, so any image can be regenerated
alone and a batch gives the same images as one-by-one generation. The output folder is a
``folder`` pool (one subfolder per class, ``000000.png`` ...) with a ``pool.json`` recording
``source: synthetic``, the prompt template, scheduler, steps, guidance and model path. Runs are
resumable: existing images are skipped, files are written atomically, and a folder made with other
generation settings is refused.

``diffusers`` and ``transformers`` are an optional extra: ``pip install 'divssl[synthesis]'``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from divssl.errors import ConfigError
from divssl.io import atomic_write, atomic_write_json, read_json

PROMPT_TEMPLATE = "A photo of a {class}"
BETA_START = 0.00085  # paper, supplementary D.2
BETA_END = 0.012
POOL_FILE = "pool.json"
INSTALL_HINT = "pip install 'divssl[synthesis]' (installs diffusers and transformers)"


@dataclass
class SynthClass:
    """A class to generate.

    Attributes:
        name: class name, used as the folder name (and so as the pool's class name).
        prompt_name: text put into the prompt (defaults to ``name``).
    """

    name: str
    prompt_name: str


@dataclass
class SynthesisSettings:
    """Generation settings recorded in ``pool.json``; a resumed run must use the same ones."""

    model: str
    prompt_template: str = PROMPT_TEMPLATE
    steps: int = 50
    guidance: float = 7.5
    seed: int = 0
    size: int | None = None
    scheduler: dict[str, Any] = field(default_factory=dict)


@dataclass
class SynthesisReport:
    """What a :func:`synthesize` call did."""

    out: str
    generated: int
    skipped: int
    classes: int
    per_class: int


def read_class_list(path: str | Path) -> list[SynthClass]:
    """Read a class list: one class per line, ``name`` or ``name<TAB>prompt text``.

    Blank lines and lines starting with ``#`` are ignored. ``name`` becomes the folder name, so an
    ImageNet list can keep WordNet ids as names (matching the task's class names) while prompting
    with readable text: ``n01531178<TAB>goldfinch``.

    Raises:
        ConfigError: missing file, empty list, duplicate or unusable folder names.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("classes", f"no such file: {path}")
    out: list[SynthClass] = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, prompt = line.partition("\t")
        out.append(SynthClass(name.strip(), prompt.strip() or name.strip()))
    validate_classes(out)
    return out


def validate_classes(classes: Sequence[SynthClass]) -> None:
    """Folder names must be non-empty, unique, not hidden and free of path separators."""
    if not classes:
        raise ConfigError("classes", "the class list is empty")
    seen: set[str] = set()
    for c in classes:
        bad = not c.name or c.name.startswith(".") or any(s in c.name for s in ("/", "\\", "\0"))
        if bad:
            raise ConfigError("classes", f"{c.name!r} cannot be a folder name")
        if c.name in seen:
            raise ConfigError("classes", f"duplicate class {c.name!r}")
        seen.add(c.name)


def image_seed(seed: int, class_index: int, image_index: int) -> int:
    """Seed of one image, derived from ``(seed, class index, image index)`` (63 bits)."""
    state = np.random.SeedSequence([seed, class_index, image_index]).generate_state(1, np.uint64)
    return int(state[0]) & (2**63 - 1)


def image_path(out: Path, cls: SynthClass, image_index: int) -> Path:
    """``out/<class>/<image_index:06d>.png``."""
    return out / cls.name / f"{image_index:06d}.png"


def _diffusers() -> Any:
    try:
        import diffusers
    except ImportError as exc:
        raise ConfigError("synthesize", f"needs the optional dependencies: {INSTALL_HINT}") from exc
    return diffusers


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda, then mps, then cpu; otherwise the named device."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ConfigError("device", f"unknown device {device!r}", ["auto", "cpu", "cuda"]) from exc


def load_pipeline(model_dir: str | Path, device: str = "auto", dtype: str = "auto") -> Any:
    """Load a Stable Diffusion pipeline from a local folder and set the paper's scheduler.

    Args:
        model_dir: a folder written by ``StableDiffusionPipeline.save_pretrained``.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ...
        dtype: ``auto`` (float16 on CUDA, else float32), ``float32``, ``float16``, ``bfloat16``.

    Returns:
        The pipeline on ``device`` with a DPM-Solver++ multistep scheduler.

    Raises:
        ConfigError: diffusers missing, or no loadable pipeline in ``model_dir``.
    """
    diffusers = _diffusers()
    model_dir = Path(model_dir)
    if not (model_dir / "model_index.json").is_file():
        raise ConfigError(
            "model",
            f"{model_dir} is not a saved diffusers pipeline (no model_index.json); nothing is "
            "downloaded, give the local folder of e.g. Stable Diffusion 2.1",
        )
    dev = resolve_device(device)
    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype == "auto":
        torch_dtype = torch.float16 if dev.type == "cuda" else torch.float32
    elif dtype in dtypes:
        torch_dtype = dtypes[dtype]
    else:
        raise ConfigError("dtype", f"unknown dtype {dtype!r}", ["auto", *dtypes])
    try:
        pipe = diffusers.StableDiffusionPipeline.from_pretrained(
            str(model_dir), local_files_only=True
        )
    except (OSError, ValueError) as exc:
        raise ConfigError("model", f"cannot load a pipeline from {model_dir}: {exc}") from exc
    pipe.scheduler = paper_scheduler(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(dev, torch_dtype)


def paper_scheduler(config: Any) -> Any:
    """DPM-Solver++ (multistep) with beta_start 0.00085 and beta_end 0.012, keeping the model's
    other scheduler settings (beta schedule, prediction type)."""
    diffusers = _diffusers()
    return diffusers.DPMSolverMultistepScheduler.from_config(
        config, algorithm_type="dpmsolver++", beta_start=BETA_START, beta_end=BETA_END
    )


def _scheduler_record(pipe: Any) -> dict[str, Any]:
    cfg = pipe.scheduler.config
    return {
        "name": type(pipe.scheduler).__name__,
        "algorithm_type": cfg.get("algorithm_type"),
        "beta_start": cfg.get("beta_start"),
        "beta_end": cfg.get("beta_end"),
        "beta_schedule": cfg.get("beta_schedule"),
        "prediction_type": cfg.get("prediction_type"),
    }


def _default_size(pipe: Any) -> int:
    return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)


def generate_images(
    pipe: Any,
    prompts: Sequence[str],
    seeds: Sequence[int],
    steps: int,
    guidance: float,
    size: int,
) -> np.ndarray:
    """Run the pipeline once on a batch, one CPU generator per image.

    Returns:
        uint8 array of shape (B, size, size, 3).
    """
    generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
    out = pipe(
        list(prompts),
        height=size,
        width=size,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=generators,
        output_type="np",
    )
    images = np.asarray(out.images, dtype=np.float32)
    # Same rounding as diffusers' numpy_to_pil.
    return (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    atomic_write(path, lambda fh: fh.write(buf.getvalue()), mode="wb")


def _check_resume(out: Path, settings: SynthesisSettings, partial: bool = False) -> None:
    """Refuse an output folder made with other settings (``partial``: only those known before
    the pipeline is loaded, so a conflict is reported without waiting for the model)."""
    existing = out / POOL_FILE
    if not existing.is_file():
        return
    prior = read_json(existing).get("settings", {})
    mine = asdict(settings)
    skip = {"scheduler"} | ({"size"} if partial and settings.size is None else set())
    diff = [k for k in mine if k not in skip and prior.get(k) != mine[k]]
    if diff:
        raise ConfigError(
            "out",
            f"{out} holds images generated with other settings ({', '.join(diff)} differ); "
            "use another --out",
        )


def class_registry(out: Path, classes: Sequence[SynthClass]) -> list[SynthClass]:
    """The output pool's classes in index order: those recorded in ``pool.json`` keep their
    index (so their images' seeds never change), new ones are appended.

    Raises:
        ConfigError: a recorded class is requested with another prompt.
    """
    existing = out / POOL_FILE
    prior = read_json(existing).get("classes", []) if existing.is_file() else []
    registry = [SynthClass(str(c["name"]), str(c["prompt_name"])) for c in prior]
    known = {c.name: c for c in registry}
    for c in classes:
        if c.name not in known:
            registry.append(c)
            known[c.name] = c
        elif known[c.name].prompt_name != c.prompt_name:
            raise ConfigError(
                "classes",
                f"{c.name!r} was generated with prompt name {known[c.name].prompt_name!r}, "
                f"not {c.prompt_name!r}",
            )
    return registry


def _write_pool_json(
    out: Path,
    settings: SynthesisSettings,
    registry: Sequence[SynthClass],
    counts: dict[str, int],
    done: bool,
) -> None:
    atomic_write_json(
        out / POOL_FILE,
        {
            "format": "divssl-folder-pool/1",
            "source": "synthetic",
            "generator": "stable-diffusion",
            "settings": asdict(settings),
            "seed_rule": "numpy SeedSequence([seed, class_index, image_index]) with the class "
            "index of this list; one CPU torch.Generator per image",
            "classes": [
                {"index": i, "name": c.name, "prompt_name": c.prompt_name, "images": counts[c.name]}
                for i, c in enumerate(registry)
            ],
            "complete": done,
        },
    )


def _count_images(out: Path, registry: Sequence[SynthClass]) -> dict[str, int]:
    return {c.name: len(list((out / c.name).glob("*.png"))) for c in registry}


def _generate_missing(
    pipe: Any,
    out: Path,
    registry: Sequence[SynthClass],
    todo: Sequence[tuple[int, int]],
    settings: SynthesisSettings,
    batch: int,
    on_batch: Callable[[int, int], None] | None,
) -> None:
    """Generate the ``(class index, image index)`` pairs of ``todo`` in batches, writing each PNG
    atomically as soon as its batch is done."""
    assert settings.size is not None
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        template = settings.prompt_template
        prompts = [template.replace("{class}", registry[ci].prompt_name) for ci, _ in chunk]
        seeds = [image_seed(settings.seed, ci, j) for ci, j in chunk]
        images = generate_images(
            pipe, prompts, seeds, settings.steps, settings.guidance, settings.size
        )
        for (ci, j), image in zip(chunk, images, strict=True):
            _write_png(image_path(out, registry[ci], j), image)
        if on_batch is not None:
            on_batch(start + len(chunk), len(todo))


def synthesize(
    classes: Sequence[SynthClass],
    per_class: int,
    model_dir: str | Path,
    out: str | Path,
    seed: int = 0,
    steps: int = 50,
    guidance: float = 7.5,
    batch: int = 4,
    device: str = "auto",
    size: int | None = None,
    dtype: str = "auto",
    pipeline: Any = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> SynthesisReport:
    """Generate ``per_class`` images of every class into a synthetic folder pool.

    Args:
        classes: from :func:`read_class_list`; image ``j`` of the class with index ``i`` in the
            output pool (list order for a new folder, see :func:`class_registry`) uses the seed
            ``image_seed(seed, i, j)``.
        per_class: images per class (N).
        model_dir: local Stable Diffusion pipeline folder.
        out: output folder (class subfolders + ``pool.json``).
        seed: base seed.
        steps: denoising steps (paper: 50).
        guidance: classifier-free guidance scale (paper: 7.5).
        batch: images per pipeline call.
        device: see :func:`resolve_device`.
        size: image side in pixels (default: the model's native size).
        dtype: see :func:`load_pipeline`.
        pipeline: an already loaded pipeline (its scheduler is replaced by the paper's).
        on_batch: called with (images done, images to do) after each batch.

    Returns:
        Counts of generated and skipped (already present) images.

    Raises:
        ConfigError: bad arguments, missing dependencies or model, or an output folder made with
            other settings.
    """
    validate_classes(classes)
    for fld, value in (("per_class", per_class), ("steps", steps), ("batch", batch)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ConfigError(fld, f"must be a positive integer, got {value!r}")
    if guidance < 0:
        raise ConfigError("guidance", f"must be >= 0, got {guidance}")
    if size is not None and (size < 8 or size % 8):
        raise ConfigError("size", f"must be a multiple of 8 (>= 8), got {size}")
    out = Path(out)
    settings = SynthesisSettings(
        model=str(Path(model_dir).resolve()),
        steps=int(steps),
        guidance=float(guidance),
        seed=int(seed),
        size=size,
    )
    _check_resume(out, settings, partial=True)
    registry = class_registry(out, classes)
    if pipeline is None:
        pipe = load_pipeline(model_dir, device, dtype)
    else:
        pipe = pipeline
        pipe.scheduler = paper_scheduler(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
    settings.size = size or _default_size(pipe)
    settings.scheduler = _scheduler_record(pipe)
    _check_resume(out, settings)
    index_of = {c.name: i for i, c in enumerate(registry)}
    todo = [
        (index_of[cls.name], j)
        for cls in classes
        for j in range(per_class)
        if not image_path(out, cls, j).is_file()
    ]
    skipped = len(classes) * per_class - len(todo)
    _write_pool_json(out, settings, registry, _count_images(out, registry), done=False)
    _generate_missing(pipe, out, registry, todo, settings, batch, on_batch)
    _write_pool_json(out, settings, registry, _count_images(out, registry), done=True)
    return SynthesisReport(str(out), len(todo), skipped, len(classes), per_class)
