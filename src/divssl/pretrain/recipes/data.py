"""The recipe table: solo-learn's published configs and the official repositories, value by value.

Sources (every row names one):

* solo-learn, ``vturrisi/solo-learn`` at commit 9187ea3: ``scripts/pretrain/{cifar,imagenet-100,
  imagenet}/<method>.yaml``, their ``augmentations/*.yaml`` and, for keys a yaml leaves unset, the
  default in the code that reads it (``solo/args/pretrain.py``, ``solo/methods/*.py``). solo-learn's
  ``optimizer.lr`` is per 256 images (``solo/args/pretrain.py`` multiplies it by
  ``batch_size * len(devices) / 256``), as divssl's ``optim.base_lr``; its ``optimizer.batch_size``
  is per device, so the global batch is ``batch_size * len(devices)``.
* where solo-learn has no ImageNet file (SimCLR, MoCo v3, DINO, SwAV, VICReg), the method's
  official repository, named in each row; rows whose file was not re-read while this table was
  built say so in their note ("recalled").
* ``small``: divssl's own CPU-scale recipe (tiny nets, <= 32 px views, ~10^2 steps): the ``cifar``
  rows, except the values named "divssl: CPU-scale choice" with the measurement behind each
  (``docs/benchmarks.md``, "A CPU-scale recipe"). ``recipe=auto`` never picks it.
* supervised: solo-learn has no supervised pretraining config; the standard references are
  ``kuangliu/pytorch-cifar`` (CIFAR ResNets) and ``pytorch/vision`` ``references/classification``
  (ImageNet; also used for ImageNet-100, which has no reference of its own).
"""

from __future__ import annotations

from typing import Any

from divssl.pretrain.recipes import ByBackbone, Ref

SOLO = "vturrisi/solo-learn@9187ea3"
_VIEW_KEYS = {
    # divssl view key: solo-learn augmentation-yaml key
    "scale_min": "rrc.crop_min_scale",
    "scale_max": "rrc.crop_max_scale",
    "flip_p": "horizontal_flip.prob",
    "jitter_p": "color_jitter.prob",
    "brightness": "color_jitter.brightness",
    "contrast": "color_jitter.contrast",
    "saturation": "color_jitter.saturation",
    "hue": "color_jitter.hue",
    "gray_p": "grayscale.prob",
    "blur_p": "gaussian_blur.prob",
    "solarize_p": "solarization.prob",
}
_SOLO_DIRS = {"cifar": "cifar", "imagenet100": "imagenet-100", "imagenet": "imagenet"}

# Input normalisation (augment.mean / augment.std): the statistics each reference normalises its
# views with; divssl evaluates a run with the same statistics (its config.yaml).
Stats = tuple[tuple[float, float, float], tuple[float, float, float]]
# solo-learn pretrain_dataloader.py build_transform_pipeline MEANS_N_STD["cifar10"]
CIFAR10_STATS: Stats = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
# solo-learn MEANS_N_STD["cifar100"]: the paper's CIFAR-100 with data.dataset: cifar100
CIFAR100_STATS: Stats = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
# timm IMAGENET_DEFAULT_MEAN / IMAGENET_DEFAULT_STD (solo-learn MEANS_N_STD["imagenet100"] and
# ["imagenet"]; torchvision references, MoCo v3, DINO and VICReg write the same numbers)
IMAGENET_STATS: Stats = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# kuangliu/pytorch-cifar main.py Normalize (the widely copied CIFAR-10 std 0.2023/0.1994/0.2010)
KUANGLIU_STATS: Stats = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
# facebookresearch/swav src/multicropdataset.py: mean as ImageNet, std 0.228 (not 0.229) for R
SWAV_STATS: Stats = ((0.485, 0.456, 0.406), (0.228, 0.224, 0.225))
# google-research/simclr data_util.py: images stay in [0, 1], no mean/std normalisation
IDENTITY_STATS: Stats = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
_SOLO_DATASETS = {"cifar": "cifar10", "imagenet100": "imagenet100", "imagenet": "imagenet"}
_SOLO_STATS = {"cifar10": CIFAR10_STATS, "imagenet100": IMAGENET_STATS, "imagenet": IMAGENET_STATS}
CIFAR_NORM_NOTE = (
    "solo-learn's cifar yamls set data.dataset: cifar10; with cifar100 (the paper's CIFAR-100) "
    f"it normalises with {CIFAR100_STATS[0]} / {CIFAR100_STATS[1]} (set augment.mean / "
    "augment.std). solo-learn's linear/kNN T_val normalises CIFAR with std (0.247, 0.243, 0.261) "
    "(classification_dataloader.py); divssl evaluates a run with the statistics it was trained on"
)


def _norm_rows(stats: Stats, source: str, note: str = "") -> dict[str, Ref]:
    """``augment.mean`` / ``augment.std`` rows of one reference."""
    return {
        "augment.mean": Ref(stats[0], f"{source} mean", note),
        "augment.std": Ref(stats[1], f"{source} std", note),
    }


def _solo_norm(recipe: str, method_file: str) -> dict[str, Ref]:
    """solo-learn: the statistics of the yaml's ``data.dataset`` in ``MEANS_N_STD``."""
    dataset = _SOLO_DATASETS[recipe]
    f = f"scripts/pretrain/{_SOLO_DIRS[recipe]}/{method_file} data.dataset: {dataset}"
    source = f"{SOLO} solo/data/pretrain_dataloader.py MEANS_N_STD[{dataset!r}] ({f})"
    return _norm_rows(_SOLO_STATS[dataset], source, CIFAR_NORM_NOTE if recipe == "cifar" else "")


def _view(
    scale: tuple[float, float],
    jitter: tuple[float, float, float, float],
    blur_p: float,
    solarize_p: float,
    jitter_p: float = 0.8,
    gray_p: float = 0.2,
    flip_p: float = 0.5,
) -> dict[str, float]:
    b, c, s, h = jitter
    return {
        "scale_min": scale[0],
        "scale_max": scale[1],
        "flip_p": flip_p,
        "jitter_p": jitter_p,
        "brightness": b,
        "contrast": c,
        "saturation": s,
        "hue": h,
        "gray_p": gray_p,
        "blur_p": blur_p,
        "solarize_p": solarize_p,
    }


# solo-learn blurs with PIL's GaussianBlur(radius=sigma), untruncated; divssl's kernel spans ~10%
# of the view (SimCLR's 23 px at 224 px), which at 32 px is 3 px wide.
SMALL_BLUR_NOTE = (
    "honoured with a 3-px kernel at <= 64 px (divssl: ~10% of the view, as SimCLR); solo-learn's "
    "PIL blur is not truncated, so its blur at sigma up to 2 px is stronger"
)
ASYM_JITTER = (0.4, 0.4, 0.2, 0.1)  # BYOL Table 6; solo-learn asymmetric.yaml
SYM_JITTER = (0.8, 0.8, 0.8, 0.2)  # SimCLR colour strength s = 1; solo-learn symmetric.yaml


def _solo_views(
    recipe: str, augfile: str, views: list[dict[str, float]], crop_size: int
) -> dict[str, Ref]:
    """Rows of a solo-learn augmentation file (list of view dicts, in file order)."""
    path = f"{SOLO} scripts/pretrain/{_SOLO_DIRS[recipe]}/{augfile}"
    rows: dict[str, Ref] = {}
    symmetric = len(views) == 1  # one entry with num_crops: 2 -> both views alike
    for i, view in enumerate(views if not symmetric else [views[0], views[0]]):
        entry = 0 if symmetric else i
        for key, value in view.items():
            note = SMALL_BLUR_NOTE if key == "blur_p" and value > 0 and crop_size <= 64 else ""
            rows[f"augment.view{i + 1}.{key}"] = Ref(
                value, f"{path} [{entry}].{_VIEW_KEYS[key]}", note
            )
    rows["augment.n_local_crops"] = Ref(0, f"{path} (no local crops)")
    rows["augment.reference_crop_size"] = Ref(
        crop_size, f"{path} [0].crop_size", "image_size is set by the pool and the user", False
    )
    return rows


def _official_views(views: list[dict[str, float]], source: str, note: str = "") -> dict[str, Ref]:
    rows: dict[str, Ref] = {}
    for i, view in enumerate(views):
        for key, value in view.items():
            rows[f"augment.view{i + 1}.{key}"] = Ref(value, source, note)
    return rows


def _local_views(
    view: dict[str, float], n: int, size: int, source: str, note: str = ""
) -> dict[str, Ref]:
    rows = {f"augment.local.{k}": Ref(v, source, note) for k, v in view.items()}
    rows["augment.n_local_crops"] = Ref(n, source, note)
    rows["augment.local_size"] = Ref(size, source, note)
    return rows


def _solo_common(
    recipe: str,
    method_file: str,
    *,
    lr: float,
    wd: float,
    batch: int,
    devices: int,
    epochs: int,
    eta: float,
    clip: bool,
) -> dict[str, Ref]:
    """Optimizer and schedule rows shared by solo-learn's LARS configs."""
    f = f"{SOLO} scripts/pretrain/{_SOLO_DIRS[recipe]}/{method_file}"
    base = f"{SOLO} solo/methods/base.py"
    return {
        "batch_size": Ref(
            batch * devices, f"{f} optimizer.batch_size ({batch}) x devices ({devices})"
        ),
        "optim.name": Ref("lars", f"{f} optimizer.name"),
        "optim.base_lr": Ref(lr, f"{f} optimizer.lr (per 256 images)"),
        "optim.weight_decay": Ref(wd, f"{f} optimizer.weight_decay"),
        "optim.final_weight_decay": Ref(wd, f"{f} optimizer.weight_decay (constant)"),
        "optim.momentum": Ref(0.9, f"{SOLO} solo/args/pretrain.py optimizer.kwargs.momentum"),
        "optim.lars_eta": Ref(eta, f"{f} optimizer.kwargs.eta"),
        "optim.lars_clip": Ref(clip, f"{f} optimizer.kwargs.clip_lr"),
        "optim.exclude_bias_norm": Ref(True, f"{f} optimizer.kwargs.exclude_bias_n_norm"),
        "optim.warmup_epochs": Ref(10.0, f"{base} scheduler.warmup_epochs (default)"),
        "optim.warmup_start_lr": Ref(3e-5, f"{base} scheduler.warmup_start_lr (default)"),
        "optim.final_lr_fraction": Ref(0.0, f"{base} scheduler.min_lr (default 0)"),
        "optim.grad_clip": Ref(0.0, f"{f} (no gradient clipping)"),
        "schedule.reference_epochs": Ref(float(epochs), f"{f} max_epochs"),
        "sync_batchnorm": Ref(True, f"{f} sync_batchnorm"),
        **_solo_norm(recipe, method_file),
        "precision_reference": Ref(
            "16-mixed",
            f"{f} precision",
            "divssl uses bf16 autocast on CUDA (precision=auto) and fp32 on CPU",
            False,
        ),
    }


def _vit_variant(rows: dict[str, Ref], vit_file: str, values: dict[str, tuple[Any, str]]) -> None:
    """Make rows backbone-dependent: the existing (CNN) value, or the ViT file's value."""
    for key, (value, yaml_key) in values.items():
        old = rows[key]
        cnn = old.value.cnn if isinstance(old.value, ByBackbone) else old.value
        rows[key] = Ref(
            ByBackbone(cnn, value), f"{old.source} (CNN); {vit_file} {yaml_key} (ViT)", old.note
        )


def _kwargs(f: str, values: dict[str, tuple[Any, str]], note: str = "") -> dict[str, Ref]:
    return {f"method_args.{k}": Ref(v, f"{f} {src}", note) for k, (v, src) in values.items()}


# ----------------------------------------------------------------------------- solo-learn


def _solo_recipe(recipe: str) -> dict[str, dict[str, Ref]]:
    """All methods of one solo-learn scale (cifar or imagenet100)."""
    d = _SOLO_DIRS[recipe]
    crop = 32 if recipe == "cifar" else 224
    devices = 1 if recipe == "cifar" else 2
    batch = 256 if recipe == "cifar" else 128
    epochs = 1000 if recipe == "cifar" else 400
    cifar = recipe == "cifar"

    def f(name: str) -> str:
        return f"{SOLO} scripts/pretrain/{d}/{name}"

    def common(name: str, lr: float, wd: float) -> dict[str, Ref]:
        return _solo_common(
            recipe,
            name,
            lr=lr,
            wd=wd,
            batch=batch,
            devices=devices,
            epochs=epochs,
            eta=0.02,
            clip=True,
        )

    # solo-learn's asymmetric.yaml: no blur at 32 px (0.0 / 0.0), BYOL's 1.0 / 0.1 at 224 px.
    asym = _solo_views(
        recipe,
        "augmentations/asymmetric.yaml",
        [
            _view((0.08, 1.0), ASYM_JITTER, 0.0 if cifar else 1.0, 0.0),
            _view((0.08, 1.0), ASYM_JITTER, 0.0 if cifar else 0.1, 0.2),
        ],
        crop,
    )
    sym = _solo_views(
        recipe,
        "augmentations/symmetric.yaml",
        [_view((0.08, 1.0), SYM_JITTER, 0.5, 0.0)],
        crop,
    )
    # VICReg's yaml carries its own augmentation list (cifar inline; imagenet-100 both inline and
    # augmentations/vicreg.yaml, the inline list wins).
    vicreg_views = {
        f"augment.view{i}.{k}": Ref(v, f"{f('vicreg.yaml')} augmentations[0].{_VIEW_KEYS[k]}")
        for i in (1, 2)
        for k, v in _view((0.2, 1.0), ASYM_JITTER, 0.0 if cifar else 0.5, 0.1).items()
    }
    vicreg_views["augment.n_local_crops"] = Ref(0, f"{f('vicreg.yaml')} augmentations num_crops")
    vicreg_views["augment.reference_crop_size"] = Ref(
        crop, f"{f('vicreg.yaml')} augmentations[0].crop_size", "set by the pool", False
    )

    simclr = {
        **common("simclr.yaml", 0.4 if cifar else 0.3, 1e-4),
        **_kwargs(
            f("simclr.yaml"),
            {
                "proj_hidden_dim": (2048 if cifar else 4096, "method_kwargs.proj_hidden_dim"),
                "proj_output_dim": (256 if cifar else 512, "method_kwargs.proj_output_dim"),
                "temperature": (0.2, "method_kwargs.temperature"),
            },
        ),
        **_kwargs(
            f"{SOLO} solo/methods/simclr.py",
            {
                "proj_layers": (2, "projector: Linear-ReLU-Linear"),
                "proj_use_bn": (False, "projector has no BatchNorm"),
                "proj_last_bn": (False, "projector has no BatchNorm"),
            },
        ),
        **sym,
    }
    mocov3 = {
        **common("mocov3.yaml", 0.3, 1e-6),
        **_kwargs(
            f("mocov3.yaml"),
            {
                "proj_hidden_dim": (4096, "method_kwargs.proj_hidden_dim"),
                "proj_output_dim": (256, "method_kwargs.proj_output_dim"),
                "pred_hidden_dim": (4096, "method_kwargs.pred_hidden_dim"),
                "temperature": (0.2, "method_kwargs.temperature"),
                "base_tau": (0.99, "momentum.base_tau"),
                "final_tau": (1.0, "momentum.final_tau"),
            },
        ),
        **_kwargs(
            f"{SOLO} solo/methods/mocov3.py",
            {
                "proj_layers": (ByBackbone(2, 3), "_build_mlp(2|3, ...) resnet|else"),
                "pred_last_bn": (ByBackbone(False, True), "predictor last_bn=False for resnet"),
            },
        ),
        "method_args.freeze_patch_embed": Ref(
            ByBackbone(False, True),
            "facebookresearch/moco-v3 vits.py stop_grad_conv1 (CONFIG.md --stop-grad-conv1)",
            "solo-learn does not freeze it; the MoCo v3 paper and repo do for ViTs",
        ),
        **asym,
    }
    byol = {
        **common("byol.yaml", 1.0 if cifar else 0.5, 1e-5 if cifar else 1e-6),
        **_kwargs(
            f("byol.yaml"),
            {
                "proj_hidden_dim": (4096, "method_kwargs.proj_hidden_dim"),
                "proj_output_dim": (256, "method_kwargs.proj_output_dim"),
                "pred_hidden_dim": (4096 if cifar else 8192, "method_kwargs.pred_hidden_dim"),
                "base_tau": (0.99, "momentum.base_tau"),
                "final_tau": (1.0, "momentum.final_tau"),
            },
        ),
        **asym,
    }
    dino_code = f"{SOLO} solo/methods/dino.py"
    dino = {
        **common("dino.yaml", 0.3, 1e-6),
        **_kwargs(
            f("dino.yaml"),
            {
                "proj_hidden_dim": (2048, "method_kwargs.proj_hidden_dim"),
                "proj_output_dim": (256, "method_kwargs.proj_output_dim"),
                "num_prototypes": (4096, "method_kwargs.num_prototypes"),
                "base_tau": (0.9995, "momentum.base_tau"),
                "final_tau": (1.0, "momentum.final_tau"),
            },
        ),
        **_kwargs(
            dino_code,
            {
                "proj_layers": (3, "DINOHead num_layers (default)"),
                "use_bn_in_head": (False, "method_kwargs.use_bn_in_head (default)"),
                "norm_last_layer": (True, "method_kwargs.norm_last_layer (default)"),
                "student_temp": (0.1, "method_kwargs.student_temperature (default)"),
                "teacher_temp": (0.07, "method_kwargs.teacher_temperature (default)"),
                "warmup_teacher_temp": (0.04, "method_kwargs.warmup_teacher_temperature"),
                "center_momentum": (0.9, "DINOLoss center_momentum (default)"),
                "freeze_last_layer_epochs": (1.0, "method_kwargs.freeze_last_layer (default)"),
            },
        ),
        "method_args.warmup_teacher_temp_epochs": (
            Ref(0.0, f"{dino_code} method_kwargs.warmup_teacher_temperature_epochs (default)")
            if cifar
            else Ref(50.0, f"{f('dino.yaml')} method_kwargs.warmup_teacher_temperature_epochs")
        ),
        **asym,
    }
    swav_code = f"{SOLO} solo/methods/swav.py"
    swav = {
        **common("swav.yaml", 0.6, 1e-6),
        **_kwargs(
            f("swav.yaml"),
            {
                "proj_hidden_dim": (2048, "method_kwargs.proj_hidden_dim"),
                "proj_output_dim": (128, "method_kwargs.proj_output_dim"),
                "num_prototypes": (3000, "method_kwargs.num_prototypes"),
                "queue_size": (3840, "method_kwargs.queue_size"),
                "temperature": (0.1, "method_kwargs.temperature"),
                "queue_start_epochs": (50.0, "method_kwargs.epoch_queue_starts"),
                "freeze_prototypes_epochs": (2.0, "method_kwargs.freeze_prototypes_epochs"),
            },
        ),
        **_kwargs(
            swav_code,
            {
                "sk_epsilon": (0.05, "method_kwargs.sk_epsilon (default)"),
                "sk_iters": (3, "method_kwargs.sk_iters (default)"),
            },
        ),
        **sym,
    }
    vicreg = {
        **common("vicreg.yaml", 0.3, 1e-4),
        **_kwargs(
            f("vicreg.yaml"),
            {
                "proj_hidden_dim": (2048, "method_kwargs.proj_hidden_dim"),
                "proj_output_dim": (2048, "method_kwargs.proj_output_dim"),
                "sim_coeff": (25.0, "method_kwargs.sim_loss_weight"),
                "std_coeff": (25.0, "method_kwargs.var_loss_weight"),
                "cov_coeff": (1.0, "method_kwargs.cov_loss_weight"),
            },
        ),
        "method_args.proj_layers": Ref(3, f"{SOLO} solo/methods/vicreg.py projector (3 Linear)"),
        "method_args.variance_halved": Ref(
            False, f"{SOLO} solo/losses/vicreg.py variance_loss (not halved, as the paper)"
        ),
        **vicreg_views,
    }
    barlow = {
        **common("barlow.yaml", 0.3, 1e-4),
        **_kwargs(
            f("barlow.yaml"),
            {
                "proj_hidden_dim": (2048, "method_kwargs.proj_hidden_dim"),
                "proj_output_dim": (2048, "method_kwargs.proj_output_dim"),
                "scale_loss": (0.1, "method_kwargs.scale_loss"),
            },
        ),
        **_kwargs(
            f"{SOLO} solo/methods/barlow_twins.py",
            {
                "lambd": (0.0051, "method_kwargs.lamb (default)"),
                "proj_layers": (3, "projector (3 Linear)"),
            },
        ),
        **asym,
    }
    if not cifar:  # solo-learn's ViT files of ImageNet-100: mocov3_vit.yaml, dino_vit.yaml
        lars_only = "unused by adamw"
        _vit_variant(
            mocov3,
            f("mocov3_vit.yaml"),
            {
                "optim.name": ("adamw", "optimizer.name"),
                "optim.base_lr": (3e-4, "optimizer.lr"),
                "optim.weight_decay": (0.1, "optimizer.weight_decay"),
                "optim.final_weight_decay": (0.1, "optimizer.weight_decay (constant)"),
                "optim.exclude_bias_norm": (False, "(no optimizer.kwargs: " + lars_only + ")"),
            },
        )
        _vit_variant(
            dino,
            f("dino_vit.yaml"),
            {
                "optim.name": ("adamw", "optimizer.name"),
                "optim.base_lr": (0.005, "optimizer.lr"),
                "optim.weight_decay": (1e-4, "optimizer.weight_decay"),
                "optim.final_weight_decay": (1e-4, "optimizer.weight_decay (constant)"),
                "optim.warmup_start_lr": (1e-5, "scheduler.warmup_start_lr"),
                "optim.exclude_bias_norm": (False, "(no optimizer.kwargs: " + lars_only + ")"),
                "method_args.num_prototypes": (65536, "method_kwargs.num_prototypes"),
                "method_args.norm_last_layer": (False, "method_kwargs.norm_last_layer"),
                "method_args.warmup_teacher_temp_epochs": (0.0, "(not set: default 0)"),
            },
        )
    return {
        "simclr": simclr,
        "mocov3": mocov3,
        "byol": byol,
        "dino": dino,
        "swav": swav,
        "vicreg": vicreg,
        "barlow_twins": barlow,
        "supervised": _supervised(recipe),
    }


# ----------------------------------------------------------------------------- supervised


def _supervised(recipe: str) -> dict[str, Ref]:
    """Standard supervised references (solo-learn has no supervised pretraining config)."""
    if recipe == "cifar":
        src = "kuangliu/pytorch-cifar main.py"
        rows = {
            "batch_size": Ref(128, f"{src} trainloader batch_size=128"),
            "optim.base_lr": Ref(0.2, f"{src} --lr 0.1 at batch 128 (= 0.2 per 256)"),
            "optim.weight_decay": Ref(5e-4, f"{src} SGD weight_decay=5e-4"),
            "optim.final_weight_decay": Ref(5e-4, f"{src} (constant)"),
            "schedule.reference_epochs": Ref(200.0, f"{src} CosineAnnealingLR(T_max=200)"),
        }
        crop_note = (
            "not honoured: RandomCrop(32, padding=4) has no equivalent among divssl's view ops; "
            "RandomResizedCrop is used"
        )
        scale_src = f"{src} transform_train RandomCrop(32, padding=4)"
        sched_note = ""
        rows.update(_norm_rows(KUANGLIU_STATS, f"{src} transform_train Normalize"))
    else:
        src = "pytorch/vision references/classification/train.py"
        rows = {
            "batch_size": Ref(256, f"{src} --batch-size 32 x 8 GPUs (README)"),
            "optim.base_lr": Ref(0.1, f"{src} --lr 0.1 (per 256 images)"),
            "optim.weight_decay": Ref(1e-4, f"{src} --wd 1e-4"),
            "optim.final_weight_decay": Ref(1e-4, f"{src} (constant)"),
            "schedule.reference_epochs": Ref(90.0, f"{src} --epochs 90"),
        }
        crop_note = ""
        scale_src = f"{src} presets.py RandomResizedCrop"
        rows.update(
            _norm_rows(IMAGENET_STATS, f"{src} presets.py ClassificationPresetTrain (default)")
        )
        sched_note = "not honoured: the reference steps the LR x0.1 every 30 epochs; divssl: cosine"
        if recipe == "imagenet100":
            crop_note = "ImageNet-100 has no supervised reference; the ImageNet one is used"
    rows.update(
        {
            "optim.name": Ref("sgd", f"{src} SGD"),
            "optim.momentum": Ref(0.9, f"{src} momentum 0.9"),
            "optim.exclude_bias_norm": Ref(False, f"{src} (decay on every parameter)"),
            "optim.warmup_epochs": Ref(0.0, f"{src} (no warm-up)"),
            "optim.warmup_start_lr": Ref(0.0, f"{src} (no warm-up)"),
            "optim.final_lr_fraction": Ref(0.0, f"{src} (LR decays to 0)", sched_note),
            "optim.lars_eta": Ref(1e-3, f"{SOLO} solo/args/pretrain.py (unused by sgd)"),
            "optim.lars_clip": Ref(False, f"{SOLO} solo/args/pretrain.py (unused by sgd)"),
            "optim.grad_clip": Ref(0.0, f"{src} (no clipping)"),
            "sync_batchnorm": Ref(True, f"{src} --sync-bn", "on by default in divssl DDP"),
            "method_args.label_smoothing": Ref(0.0, f"{src} --label-smoothing 0.0"),
            "augment.n_local_crops": Ref(0, f"{src} (one view)"),
        }
    )
    view = _view((0.08, 1.0), (0.0, 0.0, 0.0, 0.0), 0.0, 0.0, jitter_p=0.0, gray_p=0.0)
    for key, value in view.items():
        note = crop_note if key.startswith("scale") else ""
        rows[f"augment.view1.{key}"] = Ref(value, scale_src if note else src, note)
    return rows


# ----------------------------------------------------------------------------- ImageNet


def _imagenet() -> dict[str, dict[str, Ref]]:
    """Full ImageNet (ResNet-50): solo-learn's imagenet/*.yaml for BYOL and Barlow Twins, the
    official repositories for the others."""

    def solo(name: str, lr: float, wd: float, batch: int, devices: int) -> dict[str, Ref]:
        return _solo_common(
            "imagenet",
            name,
            lr=lr,
            wd=wd,
            batch=batch,
            devices=devices,
            epochs=100,
            eta=0.001,
            clip=False,
        )

    asym = _solo_views(
        "imagenet",
        "augmentations/asymmetric.yaml",
        [
            _view((0.08, 1.0), ASYM_JITTER, 1.0, 0.0),
            _view((0.08, 1.0), ASYM_JITTER, 0.1, 0.2),
        ],
        224,
    )
    byol_f = f"{SOLO} scripts/pretrain/imagenet/byol.yaml"
    byol = {
        **solo("byol.yaml", 0.45, 1e-6, 64, 2),
        **_kwargs(
            byol_f,
            {
                "proj_hidden_dim": (4096, "method_kwargs.proj_hidden_dim"),
                "proj_output_dim": (256, "method_kwargs.proj_output_dim"),
                "pred_hidden_dim": (4096, "method_kwargs.pred_hidden_dim"),
                "base_tau": (0.99, "momentum.base_tau"),
                "final_tau": (1.0, "momentum.final_tau"),
            },
        ),
        **asym,
    }
    barlow_f = f"{SOLO} scripts/pretrain/imagenet/barlow.yaml"
    barlow = {
        **solo("barlow.yaml", 0.8, 1.5e-6, 64, 4),
        **_kwargs(
            barlow_f,
            {
                "proj_hidden_dim": (4096, "method_kwargs.proj_hidden_dim"),
                "proj_output_dim": (4096, "method_kwargs.proj_output_dim"),
                "lambd": (0.0051, "method_kwargs.lamb"),
                "scale_loss": (0.048, "method_kwargs.scale_loss"),
            },
        ),
        "method_args.proj_layers": Ref(3, f"{SOLO} solo/methods/barlow_twins.py projector"),
        **asym,
    }
    return {
        "simclr": _simclr_imagenet(),
        "mocov3": _mocov3_imagenet(),
        "byol": byol,
        "dino": _dino_imagenet(),
        "swav": _swav_imagenet(),
        "vicreg": _vicreg_imagenet(),
        "barlow_twins": barlow,
        "supervised": _supervised("imagenet"),
    }


def _official(
    src: str,
    note: str,
    *,
    name: str,
    batch: int,
    lr: float,
    wd: float,
    epochs: float,
    warmup: float,
    eta: float,
    clip: bool,
    exclude: bool,
    final_lr_fraction: float = 0.0,
    grad_clip: float = 0.0,
    final_wd: float | None = None,
) -> dict[str, Ref]:
    """Optimizer rows of an official repository's recipe."""
    return {
        "batch_size": Ref(batch, f"{src} batch size", note),
        "optim.name": Ref(name, f"{src} optimizer", note),
        "optim.base_lr": Ref(lr, f"{src} lr (per 256 images)", note),
        "optim.weight_decay": Ref(wd, f"{src} weight decay", note),
        "optim.final_weight_decay": Ref(wd if final_wd is None else final_wd, src, note),
        "optim.momentum": Ref(0.9, f"{src} momentum", note),
        "optim.lars_eta": Ref(eta, f"{src} LARS trust coefficient", note),
        "optim.lars_clip": Ref(clip, f"{src} LARS clipping", note),
        "optim.exclude_bias_norm": Ref(exclude, f"{src} bias/norm exclusion", note),
        "optim.warmup_epochs": Ref(warmup, f"{src} warm-up epochs", note),
        "optim.warmup_start_lr": Ref(0.0, f"{src} warm-up from 0", note),
        "optim.final_lr_fraction": Ref(final_lr_fraction, f"{src} final lr", note),
        "optim.grad_clip": Ref(grad_clip, f"{src} gradient clipping (0: none)", note),
        "schedule.reference_epochs": Ref(float(epochs), f"{src} epochs", note),
        "sync_batchnorm": Ref(True, f"{src} SyncBatchNorm", note),
    }


RECALLED = "recalled from the repository, not re-read while this table was built"


def _simclr_imagenet() -> dict[str, Ref]:
    src = "google-research/simclr run.py flags / paper App. B.1"
    rows = _official(
        src,
        RECALLED,
        name="lars",
        batch=4096,
        lr=0.3,
        wd=1e-6,
        epochs=100,
        warmup=10,
        eta=1e-3,
        clip=False,
        exclude=True,
    )
    rows.update(
        _kwargs(
            "google-research/simclr model_util.py projection_head (v1)",
            {
                "proj_hidden_dim": (2048, "hidden = feature width"),
                "proj_output_dim": (128, "proj_out_dim"),
                "proj_layers": (2, "nonlinear head"),
                "proj_use_bn": (True, "linear_layer(use_bn=True)"),
                "proj_last_bn": (True, "linear_layer(use_bn=True)"),
                "temperature": (0.1, "run.py --temperature"),
            },
            RECALLED,
        )
    )
    sym = _view((0.08, 1.0), SYM_JITTER, 0.5, 0.0)
    rows.update(_official_views([sym, sym], "google-research/simclr data_util.py", RECALLED))
    rows.update(
        _norm_rows(
            IDENTITY_STATS,
            "google-research/simclr data_util.py preprocess_image (float images in [0, 1], "
            "no mean/std normalisation)",
        )
    )
    rows["augment.n_local_crops"] = Ref(0, src)
    return rows


def _mocov3_imagenet() -> dict[str, Ref]:
    cfg = "facebookresearch/moco-v3 CONFIG.md (ResNet-50, 300-epoch)"
    main = "facebookresearch/moco-v3 main_moco.py"
    rows = _official(
        f"{cfg} + {main} defaults + moco/optimizer.py LARS",
        "",
        name="lars",
        batch=4096,
        lr=0.3,
        wd=1e-6,
        epochs=300,
        warmup=10,
        eta=1e-3,
        clip=False,
        exclude=True,
    )
    rows.update(
        _kwargs(
            main,
            {
                "proj_hidden_dim": (4096, "--moco-mlp-dim"),
                "proj_output_dim": (256, "--moco-dim"),
                "pred_hidden_dim": (4096, "--moco-mlp-dim"),
                "temperature": (ByBackbone(1.0, 0.2), "--moco-t (default 1.0; ViT .2)"),
                "base_tau": (0.99, "--moco-m with --moco-m-cos"),
                "final_tau": (1.0, "adjust_moco_momentum (cosine to 1)"),
            },
        )
    )
    rows.update(
        _kwargs(
            "facebookresearch/moco-v3 moco/builder.py",
            {
                "proj_layers": (
                    ByBackbone(2, 3),
                    "MoCo_ResNet / MoCo_ViT _build_projector_and_predictor_mlps",
                ),
                "pred_last_bn": (ByBackbone(False, True), "MoCo_ResNet predictor last_bn=False"),
                "freeze_patch_embed": (ByBackbone(False, True), "vits.py stop_grad_conv1"),
            },
        )
    )
    vit = f"{cfg.replace('(ResNet-50, 300-epoch)', '(ViT-Small/Base)')}"
    rows.update(
        {
            "optim.name": Ref(ByBackbone("lars", "adamw"), f"{vit} --optimizer=adamw"),
            "optim.base_lr": Ref(ByBackbone(0.3, 1.5e-4), f"{cfg} --lr=.3; {vit} --lr=1.5e-4"),
            "optim.weight_decay": Ref(
                ByBackbone(1e-6, 0.1), f"{main} --wd; {vit} --weight-decay=.1"
            ),
            "optim.final_weight_decay": Ref(ByBackbone(1e-6, 0.1), f"{main} (constant)"),
            "optim.warmup_epochs": Ref(
                ByBackbone(10.0, 40.0), f"{main} --warmup-epochs; {vit} --warmup-epochs=40"
            ),
        }
    )
    views = [
        _view((0.2, 1.0), ASYM_JITTER, 1.0, 0.0),
        _view((0.2, 1.0), ASYM_JITTER, 0.1, 0.2),
    ]
    rows.update(_official_views(views, f"{main} augmentation1/2 (--crop-min=.2, CONFIG.md)"))
    rows.update(_norm_rows(IMAGENET_STATS, f"{main} transforms.Normalize"))
    rows["augment.n_local_crops"] = Ref(0, f"{main} TwoCropsTransform")
    return rows


def _dino_imagenet() -> dict[str, Ref]:
    readme = "facebookresearch/dino README.md (ResNet-50 command)"
    main = "facebookresearch/dino main_dino.py"
    rows = _official(
        f"{readme} + {main} defaults",
        RECALLED,
        name="sgd",
        batch=512,
        lr=0.03,
        wd=1e-4,
        epochs=100,
        warmup=10,
        eta=1e-3,
        clip=False,
        exclude=True,
        final_lr_fraction=1e-6 / 0.06,  # --min_lr 1e-6 over the peak 0.03 * 512 / 256
        grad_clip=3.0,
    )
    rows["optim.grad_clip"] = Ref(
        3.0,
        f"{main} --clip_grad 3.0 (utils.clip_gradients)",
        "not honoured exactly: DINO clips each parameter's gradient norm, divssl the global norm",
    )
    rows.update(
        _kwargs(
            main,
            {
                "proj_hidden_dim": (2048, "DINOHead hidden_dim"),
                "proj_output_dim": (256, "DINOHead bottleneck_dim"),
                "proj_layers": (3, "DINOHead nlayers"),
                "num_prototypes": (65536, "--out_dim"),
                "use_bn_in_head": (False, "--use_bn_in_head"),
                "norm_last_layer": (True, "--norm_last_layer"),
                "student_temp": (0.1, "DINOLoss student_temp"),
                "teacher_temp": (0.04, "--teacher_temp"),
                "warmup_teacher_temp": (0.04, "--warmup_teacher_temp"),
                "warmup_teacher_temp_epochs": (0.0, "--warmup_teacher_temp_epochs"),
                "center_momentum": (0.9, "DINOLoss center_momentum"),
                "base_tau": (0.996, "--momentum_teacher"),
                "final_tau": (1.0, "cosine_scheduler(momentum_teacher, 1)"),
                "freeze_last_layer_epochs": (1.0, "--freeze_last_layer"),
            },
            RECALLED,
        )
    )
    aug = f"{main} DataAugmentationDINO (README --global_crops_scale 0.14 1)"
    views = [
        _view((0.14, 1.0), ASYM_JITTER, 1.0, 0.0),
        _view((0.14, 1.0), ASYM_JITTER, 0.1, 0.2),
    ]
    rows.update(_official_views(views, aug, RECALLED))
    rows.update(_norm_rows(IMAGENET_STATS, f"{main} DataAugmentationDINO normalize"))
    local = _view((0.05, 0.14), ASYM_JITTER, 0.5, 0.0)
    rows.update(
        _local_views(
            local, 8, 96, f"{main} --local_crops_number 8, README scale 0.05-0.14", RECALLED
        )
    )
    return rows


def _swav_imagenet() -> dict[str, Ref]:
    src = "facebookresearch/swav README.md (800-epoch command) + main_swav.py"
    rows = _official(
        src,
        RECALLED,
        name="lars",
        batch=4096,
        lr=0.3,  # --base_lr 4.8 at batch 4096
        wd=1e-6,
        epochs=800,
        warmup=10,
        eta=1e-3,
        clip=False,  # LARC(trust_coefficient=0.001, clip=False) over all parameters
        exclude=False,
        final_lr_fraction=0.001,  # --final_lr 0.0048 / --base_lr 4.8
    )
    rows.update(
        _kwargs(
            src,
            {
                "proj_hidden_dim": (2048, "--hidden_mlp"),
                "proj_output_dim": (128, "--feat_dim"),
                "num_prototypes": (3000, "--nmb_prototypes"),
                "queue_size": (3840, "--queue_length"),
                "temperature": (0.1, "--temperature"),
                "sk_epsilon": (0.05, "--epsilon"),
                "sk_iters": (3, "--sinkhorn_iterations"),
                "queue_start_epochs": (15.0, "--epoch_queue_starts"),
                "freeze_prototypes_epochs": (1.0, "--freeze_prototypes_niters 313 (1 epoch)"),
            },
            RECALLED,
        )
    )
    glob = _view((0.14, 1.0), SYM_JITTER, 0.5, 0.0)
    rows.update(_official_views([glob, glob], f"{src} --min_scale_crops 0.14", RECALLED))
    rows.update(
        _norm_rows(SWAV_STATS, "facebookresearch/swav src/multicropdataset.py MultiCropDataset")
    )
    local = _view((0.05, 0.14), SYM_JITTER, 0.5, 0.0)
    rows.update(_local_views(local, 6, 96, f"{src} --nmb_crops 2 6 --size_crops 224 96", RECALLED))
    return rows


def _vicreg_imagenet() -> dict[str, Ref]:
    readme = "facebookresearch/vicreg README.md (1000-epoch command)"
    main = "facebookresearch/vicreg main_vicreg.py"
    rows = _official(
        f"{readme} + {main} defaults",
        "",
        name="lars",
        batch=2048,
        lr=0.2,
        wd=1e-6,
        epochs=1000,
        warmup=10,
        eta=1e-3,
        clip=False,
        exclude=True,
        final_lr_fraction=0.001,  # adjust_learning_rate: end_lr = base_lr * 0.001
    )
    rows.update(
        _kwargs(
            main,
            {
                "proj_hidden_dim": (8192, "--mlp 8192-8192-8192"),
                "proj_output_dim": (8192, "--mlp 8192-8192-8192"),
                "proj_layers": (3, "--mlp 8192-8192-8192"),
                "sim_coeff": (25.0, "--sim-coeff"),
                "std_coeff": (25.0, "--std-coeff"),
                "cov_coeff": (1.0, "--cov-coeff"),
                "variance_halved": (True, "VICReg.forward std_loss (each term / 2)"),
            },
        )
    )
    views = [
        _view((0.08, 1.0), ASYM_JITTER, 1.0, 0.0),
        _view((0.08, 1.0), ASYM_JITTER, 0.1, 0.2),
    ]
    rows.update(_official_views(views, "facebookresearch/vicreg augmentations.py", RECALLED))
    rows.update(
        _norm_rows(
            IMAGENET_STATS, "facebookresearch/vicreg augmentations.py TrainTransform Normalize"
        )
    )
    rows["augment.n_local_crops"] = Ref(0, f"{main} (two views)")
    return rows


# ----------------------------------------------------------------------------- small (divssl)

SMALL_SOURCE = "divssl: CPU-scale choice (docs/benchmarks.md, 'A CPU-scale recipe')"
SIMCLR_CIFAR10 = (
    "google-research/simclr README.md CIFAR-10 command (--color_jitter_strength=0.5 "
    "--use_blur=False)"
)
OLD_DEFAULT = "divssl's LARS before issue 10 (351ae97)"
# kNN top-1 on the world task at C = 15k, convnet_tiny, 16 px (docs/benchmarks.md); random init
# scores 43.4%.
LARC_OFF_NOTES = {
    "simclr": "measured: with LARC clipping 33.7%, without 55.6% (SimCLR row's other values)",
    "vicreg": "measured: without clipping 62.4%; the cifar recipe (with clipping) not scored",
    "byol": (
        "not enough for BYOL: without clipping 16.8% (below random init); BYOL does not learn "
        "at ~10^2 steps with these values (with LR 0.3: 24.9%)"
    ),
}
NOISE = "(about the 95% CI half-width, ~2 points)"
LARC_OFF_DEFAULT_NOTE = "as SimCLR (measured there); not measured for this method"


def _small_recipe(cifar: dict[str, dict[str, Ref]]) -> dict[str, dict[str, Ref]]:
    """divssl's CPU-scale recipe: ``cifar`` with the few values that stop ~10^2-step runs of tiny
    nets on tiny images from learning replaced, each with its measured reason.

    Rows not replaced keep the ``cifar`` row (value, source and note) unchanged.
    """
    rows = {method: dict(table) for method, table in cifar.items()}

    def choose(method: str, key: str, value: Any, source: str, note: str) -> None:
        if key not in rows[method]:
            raise KeyError(f"small recipe: {method} has no cifar row {key}")
        rows[method][key] = Ref(value, source, note)

    for method in rows:
        if rows[method]["optim.name"].value == "lars":
            note = LARC_OFF_NOTES.get(method, LARC_OFF_DEFAULT_NOTE)
            choose(method, "optim.lars_clip", False, f"{SMALL_SOURCE}; {OLD_DEFAULT}", note)
    # SimCLR: the SimCLR authors' own CIFAR-10 views (colour strength s = 0.5, no blur) and the
    # SimCLR v1 projector with BN after the hidden layer, as divssl before issue 10: together
    # with LARC off, the measured 55.6% configuration.
    half = dict(
        zip(("brightness", "contrast", "saturation", "hue"), (0.4, 0.4, 0.4, 0.1), strict=True)
    )
    for view in ("view1", "view2"):
        for key, value in half.items():
            choose(
                "simclr",
                f"augment.{view}.{key}",
                value,
                f"{SIMCLR_CIFAR10}; {SMALL_SOURCE}",
                "measured: s = 1 (solo-learn) 54.1% vs s = 0.5 55.6% " + NOISE,
            )
        choose(
            "simclr",
            f"augment.{view}.blur_p",
            0.0,
            f"{SIMCLR_CIFAR10}; {SMALL_SOURCE}",
            "measured: blur p 0.5 (a 3-px kernel at 16 px) 53.2% vs none 55.6% " + NOISE,
        )
    choose(
        "simclr",
        "method_args.proj_use_bn",
        True,
        f"{SMALL_SOURCE}; google-research/simclr model_util.py projection_head (BN)",
        "measured: without BN (solo-learn) 48.4% vs with BN 55.6%",
    )
    return rows


_CIFAR = _solo_recipe("cifar")
RECIPES: dict[str, dict[str, dict[str, Ref]]] = {
    "cifar": _CIFAR,
    "imagenet100": _solo_recipe("imagenet100"),
    "imagenet": _imagenet(),
    "small": _small_recipe(_CIFAR),
}
