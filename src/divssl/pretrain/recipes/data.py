"""The recipe table: solo-learn's published configs and the official repositories, value by value.

Sources (every row names one):

* solo-learn, ``vturrisi/solo-learn`` at commit 9187ea3: ``scripts/pretrain/{cifar,imagenet-100,
  imagenet}/<method>.yaml``, their ``augmentations/*.yaml`` and, for keys a yaml leaves unset, the
  default in the code that reads it (``solo/args/pretrain.py``, ``solo/methods/*.py``). solo-learn's
  ``optimizer.lr`` is per 256 images (``solo/args/pretrain.py`` multiplies it by
  ``batch_size * len(devices) / 256``), as divssl's ``optim.base_lr``; its ``optimizer.batch_size``
  is per device, so the global batch is ``batch_size * len(devices)``.
* where solo-learn has no ImageNet file (SimCLR, MoCo v3, DINO, SwAV, VICReg), the method's
  official repository at the commit that was read (``owner/name@commit file key`` in each row).
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
    repo: str,
    keys: dict[str, str],
    note: str = "",
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
    warmup_start_lr: float = 0.0,
    final_lr_fraction: float = 0.0,
    grad_clip: float = 0.0,
    final_wd: float | None = None,
) -> dict[str, Ref]:
    """Optimizer rows of an official repository's recipe.

    Args:
        repo: ``owner/name@commit``.
        keys: for each row, the ``file key`` (flag, default or code line) its value was read from.
        note: caveat shared by every row (empty when honoured).
    """
    values: dict[str, Any] = {
        "batch_size": batch,
        "optim.name": name,
        "optim.base_lr": lr,
        "optim.weight_decay": wd,
        "optim.final_weight_decay": wd if final_wd is None else final_wd,
        "optim.momentum": 0.9,
        "optim.lars_eta": eta,
        "optim.lars_clip": clip,
        "optim.exclude_bias_norm": exclude,
        "optim.warmup_epochs": warmup,
        "optim.warmup_start_lr": warmup_start_lr,
        "optim.final_lr_fraction": final_lr_fraction,
        "optim.grad_clip": grad_clip,
        "schedule.reference_epochs": float(epochs),
        "sync_batchnorm": True,
    }
    if set(keys) != set(values):
        raise KeyError(f"official rows without a source key: {sorted(set(values) ^ set(keys))}")
    return {k: Ref(v, f"{repo} {keys[k]}", note) for k, v in values.items()}


# The official repositories, at the commits read for the rows below.
SIMCLR_V1 = "google-research/simclr@85e8552"  # SimCLR v1 code, before the v2 commit 244e712
MOCOV3 = "facebookresearch/moco-v3@c349e6e"
DINO = "facebookresearch/dino@7c446df"
SWAV = "facebookresearch/swav@06b1b7c"
VICREG = "facebookresearch/vicreg@4e12602"


def _simclr_imagenet() -> dict[str, Ref]:
    cmd = "README.md ImageNet pretrain command"
    lars = "model.py LARSOptimizer(exclude_from_weight_decay=['batch_normalization', 'bias'])"
    rows = _official(
        SIMCLR_V1,
        {
            "batch_size": f"{cmd} --train_batch_size=4096",
            "optim.name": "run.py --optimizer (default lars)",
            "optim.base_lr": f"{cmd} --learning_rate=0.3 (x batch / 256: model_util.py)",
            "optim.weight_decay": f"{cmd} --weight_decay=1e-6",
            "optim.final_weight_decay": f"{cmd} --weight_decay=1e-6 (constant)",
            "optim.momentum": "run.py --momentum (default 0.9)",
            "optim.lars_eta": "lars_optimizer.py EETA_DEFAULT = 0.001",
            "optim.lars_clip": "lars_optimizer.py (no clipping)",
            "optim.exclude_bias_norm": f"{lars} (adaptation excluded alike)",
            "optim.warmup_epochs": "run.py --warmup_epochs (default 10)",
            "optim.warmup_start_lr": "model_util.py learning_rate_schedule (step / warmup x lr)",
            "optim.final_lr_fraction": "model_util.py learning_rate_schedule (cosine_decay to 0)",
            "optim.grad_clip": "model.py (no gradient clipping)",
            "schedule.reference_epochs": f"{cmd} --train_epochs=100",
            "sync_batchnorm": "run.py --global_bn (default True)",
        },
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
    rows["optim.lars_eta"] = Ref(
        1e-3,
        rows["optim.lars_eta"].source,
        "trust ratio eta ||w|| / ||g + wd w||; divssl's LARS uses solo-learn's "
        "eta ||w|| / (||g|| + wd ||w||), equal when wd = 0",
    )
    head = "model_util.py projection_head (--head_proj_mode nonlinear, --num_nlh_layers 1)"
    rows.update(
        _kwargs(
            SIMCLR_V1,
            {
                "proj_hidden_dim": (2048, f"{head} nl_0 width = hiddens.shape[-1] (ResNet-50)"),
                "proj_output_dim": (128, "run.py --head_proj_dim (default 128)"),
                "proj_layers": (2, f"{head} nl_0, nl_1"),
                "proj_use_bn": (True, f"{head} linear_layer(use_bn=True)"),
                "temperature": (0.1, "README.md ImageNet pretrain command --temperature=0.1"),
            },
        )
    )
    rows["method_args.proj_last_bn"] = Ref(
        True,
        f"{SIMCLR_V1} {head} nl_1 linear_layer(use_bias=False, use_bn=True)",
        "the reference's last BN has a scale but no shift (center=use_bias=False); divssl's is "
        "affine",
    )
    aug = f"{SIMCLR_V1} data_util.py"
    sym = _view((0.08, 1.0), SYM_JITTER, 0.5, 0.0)
    for i in (1, 2):
        for key, value in sym.items():
            rows[f"augment.view{i}.{key}"] = Ref(value, f"{aug} {_SIMCLR_AUG_KEYS[key]}")
    rows["augment.n_local_crops"] = Ref(0, f"{SIMCLR_V1} data.py (two views: xs)")
    rows.update(
        _norm_rows(
            IDENTITY_STATS,
            f"{aug} preprocess_image (float images in [0, 1], no mean/std normalisation)",
        )
    )
    return rows


# Where data_util.py (SimCLR v1) sets each view value (--color_jitter_strength default 1.0).
_SIMCLR_AUG_KEYS = {
    "scale_min": "crop_and_resize area_range=(0.08, 1.0)",
    "scale_max": "crop_and_resize area_range=(0.08, 1.0)",
    "flip_p": "preprocess_for_train random_flip_left_right",
    "jitter_p": "random_color_jitter random_apply(color_jitter, p=0.8)",
    "brightness": "color_jitter brightness = 0.8 * strength",
    "contrast": "color_jitter contrast = 0.8 * strength",
    "saturation": "color_jitter saturation = 0.8 * strength",
    "hue": "color_jitter hue = 0.2 * strength",
    "gray_p": "random_color_jitter random_apply(to_grayscale, p=0.2)",
    "blur_p": "batch_random_blur(blur_probability=0.5) (run.py --use_blur default True)",
    "solarize_p": "(no solarization)",
}


def _mocov3_imagenet() -> dict[str, Ref]:
    cmd = "CONFIG.md ResNet-50 300-epoch command"
    vit = "CONFIG.md ViT-Small command"
    main = "main_moco.py"
    rows = _official(
        MOCOV3,
        {
            "batch_size": f"{main} --batch-size (default 4096)",
            "optim.name": f"{main} --optimizer (default lars)",
            "optim.base_lr": f"{cmd} --lr=.3 (x batch / 256: {main})",
            "optim.weight_decay": f"{main} --wd (default 1e-6)",
            "optim.final_weight_decay": f"{main} --wd (constant)",
            "optim.momentum": "moco/optimizer.py LARS momentum=0.9",
            "optim.lars_eta": "moco/optimizer.py LARS trust_coefficient=0.001",
            "optim.lars_clip": "moco/optimizer.py LARS (no clipping)",
            "optim.exclude_bias_norm": "moco/optimizer.py LARS (p.ndim > 1 only)",
            "optim.warmup_epochs": f"{main} --warmup-epochs (default 10)",
            "optim.warmup_start_lr": f"{main} adjust_learning_rate (lr x epoch / warmup)",
            "optim.final_lr_fraction": f"{main} adjust_learning_rate (half-cycle cosine to 0)",
            "optim.grad_clip": f"{main} (no gradient clipping)",
            "schedule.reference_epochs": f"{cmd} --epochs=300",
            "sync_batchnorm": f"{main} torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)",
        },
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
            MOCOV3,
            {
                "proj_hidden_dim": (4096, f"{main} --moco-mlp-dim (default 4096)"),
                "proj_output_dim": (256, f"{main} --moco-dim (default 256)"),
                "pred_hidden_dim": (4096, f"{main} --moco-mlp-dim (default 4096)"),
                "temperature": (
                    ByBackbone(1.0, 0.2),
                    f"{main} --moco-t (default 1.0); {vit} --moco-t=.2",
                ),
                "base_tau": (0.99, f"{main} --moco-m (default 0.99); {cmd} --moco-m-cos"),
                "final_tau": (1.0, f"{main} adjust_moco_momentum (cosine to 1)"),
                "proj_layers": (
                    ByBackbone(2, 3),
                    "moco/builder.py MoCo_ResNet / MoCo_ViT _build_projector_and_predictor_mlps",
                ),
                "pred_last_bn": (
                    ByBackbone(False, True),
                    "moco/builder.py MoCo_ResNet predictor _build_mlp(last_bn=False)",
                ),
                "freeze_patch_embed": (ByBackbone(False, True), f"vits.py stop_grad_conv1; {vit}"),
            },
        )
    )
    rows.update(
        {
            "optim.name": Ref(
                ByBackbone("lars", "adamw"),
                f"{MOCOV3} {main} --optimizer (default lars); {vit} --optimizer=adamw",
            ),
            "optim.base_lr": Ref(
                ByBackbone(0.3, 1.5e-4), f"{MOCOV3} {cmd} --lr=.3; {vit} --lr=1.5e-4"
            ),
            "optim.weight_decay": Ref(
                ByBackbone(1e-6, 0.1),
                f"{MOCOV3} {main} --wd (default 1e-6); {vit} --weight-decay=.1",
            ),
            "optim.final_weight_decay": Ref(
                ByBackbone(1e-6, 0.1), f"{MOCOV3} {main} --wd; {vit} --weight-decay=.1 (constant)"
            ),
            "optim.warmup_epochs": Ref(
                ByBackbone(10.0, 40.0),
                f"{MOCOV3} {main} --warmup-epochs (default 10); {vit} --warmup-epochs=40",
            ),
        }
    )
    views = [
        _view((0.2, 1.0), ASYM_JITTER, 1.0, 0.0),
        _view((0.2, 1.0), ASYM_JITTER, 0.1, 0.2),
    ]
    rows.update(
        _official_views(
            views, f"{MOCOV3} {main} augmentation1 / augmentation2 ({cmd} --crop-min=.2)"
        )
    )
    rows["augment.n_local_crops"] = Ref(0, f"{MOCOV3} {main} moco.loader.TwoCropsTransform")
    rows.update(_norm_rows(IMAGENET_STATS, f"{MOCOV3} {main} transforms.Normalize"))
    return rows


def _dino_imagenet() -> dict[str, Ref]:
    cmd = "README.md ResNet-50 command"
    main = "main_dino.py"
    rows = _official(
        DINO,
        {
            "batch_size": f"{cmd} --nproc_per_node=8 x {main} --batch_size_per_gpu (default 64)",
            "optim.name": f"{cmd} --optimizer sgd",
            "optim.base_lr": f"{cmd} --lr 0.03 (x batch / 256: {main})",
            "optim.weight_decay": f"{cmd} --weight_decay 1e-4",
            "optim.final_weight_decay": f"{cmd} --weight_decay_end 1e-4",
            "optim.momentum": f"{main} torch.optim.SGD(momentum=0.9)",
            "optim.lars_eta": f"{cmd} --optimizer sgd (LARS unused)",
            "optim.lars_clip": f"{cmd} --optimizer sgd (LARS unused)",
            "optim.exclude_bias_norm": "utils.py get_params_groups (no decay on biases and norms)",
            "optim.warmup_epochs": f"{main} --warmup_epochs (default 10)",
            "optim.warmup_start_lr": "utils.py cosine_scheduler start_warmup_value=0",
            "optim.final_lr_fraction": f"{main} --min_lr (default 1e-6) / peak (0.03 x 512 / 256)",
            "optim.grad_clip": f"{main} --clip_grad (default 3.0)",
            "schedule.reference_epochs": f"{main} --epochs (default 100)",
            "sync_batchnorm": f"{main} nn.SyncBatchNorm.convert_sync_batchnorm (has_batchnorms)",
        },
        final_lr_fraction=1e-6 / 0.06,
        grad_clip=3.0,
        name="sgd",
        batch=512,
        lr=0.03,
        wd=1e-4,
        epochs=100,
        warmup=10,
        eta=1e-3,
        clip=False,
        exclude=True,
    )
    rows["optim.grad_clip"] = Ref(
        3.0,
        rows["optim.grad_clip"].source,
        "not honoured exactly: DINO clips each parameter's gradient norm (utils.py "
        "clip_gradients), divssl the global norm",
    )
    head = "vision_transformer.py DINOHead"
    rows.update(
        _kwargs(
            DINO,
            {
                "proj_hidden_dim": (2048, f"{head} hidden_dim=2048"),
                "proj_output_dim": (256, f"{head} bottleneck_dim=256"),
                "proj_layers": (3, f"{head} nlayers=3"),
                "num_prototypes": (65536, f"{main} --out_dim (default 65536)"),
                "use_bn_in_head": (False, f"{main} --use_bn_in_head (default False)"),
                "norm_last_layer": (True, f"{main} --norm_last_layer (default True)"),
                "student_temp": (0.1, f"{main} DINOLoss student_temp=0.1"),
                "teacher_temp": (0.04, f"{main} --teacher_temp (default 0.04)"),
                "warmup_teacher_temp": (0.04, f"{main} --warmup_teacher_temp (default 0.04)"),
                "warmup_teacher_temp_epochs": (
                    0.0,
                    f"{main} --warmup_teacher_temp_epochs (default 0)",
                ),
                "center_momentum": (0.9, f"{main} DINOLoss center_momentum=0.9"),
                "base_tau": (0.996, f"{main} --momentum_teacher (default 0.996)"),
                "final_tau": (1.0, f"{main} cosine_scheduler(momentum_teacher, 1, ...)"),
                "freeze_last_layer_epochs": (1.0, f"{main} --freeze_last_layer (default 1)"),
            },
        )
    )
    aug = f"{DINO} {main} DataAugmentationDINO ({cmd} --global_crops_scale 0.14 1)"
    views = [
        _view((0.14, 1.0), ASYM_JITTER, 1.0, 0.0),
        _view((0.14, 1.0), ASYM_JITTER, 0.1, 0.2),
    ]
    rows.update(_official_views(views, aug))
    rows.update(_norm_rows(IMAGENET_STATS, f"{DINO} {main} DataAugmentationDINO normalize"))
    local = _view((0.05, 0.14), ASYM_JITTER, 0.5, 0.0)
    rows.update(
        _local_views(
            local,
            8,
            96,
            f"{DINO} {main} --local_crops_number (default 8), DataAugmentationDINO "
            f"RandomResizedCrop(96), {cmd} --local_crops_scale 0.05 0.14",
        )
    )
    return rows


def _swav_imagenet() -> dict[str, Ref]:
    sh = "scripts/swav_800ep_pretrain.sh"
    main = "main_swav.py"
    rows = _official(
        SWAV,
        {
            "batch_size": f"{sh} --batch_size 64 x #SBATCH --gpus=64",
            "optim.name": f"{main} LARC(torch.optim.SGD)",
            "optim.base_lr": f"{sh} --base_lr 4.8 at batch 4096 (= 0.3 per 256)",
            "optim.weight_decay": f"{sh} --wd 0.000001",
            "optim.final_weight_decay": f"{sh} --wd 0.000001 (constant)",
            "optim.momentum": f"{main} torch.optim.SGD(momentum=0.9)",
            "optim.lars_eta": f"{main} LARC(trust_coefficient=0.001)",
            "optim.lars_clip": f"{main} LARC(clip=False)",
            "optim.exclude_bias_norm": f"{main} SGD(model.parameters(), weight_decay=wd) + LARC "
            "(every parameter decayed and adapted)",
            "optim.warmup_epochs": f"{sh} --warmup_epochs 10",
            "optim.warmup_start_lr": f"{sh} --start_warmup 0.3 (absolute, at batch 4096)",
            "optim.final_lr_fraction": f"{sh} --final_lr 0.0048 / --base_lr 4.8",
            "optim.grad_clip": f"{main} (no gradient clipping)",
            "schedule.reference_epochs": f"{sh} --epochs 800",
            "sync_batchnorm": f"{sh} --sync_bn apex",
        },
        name="lars",
        batch=4096,
        lr=0.3,
        wd=1e-6,
        epochs=800,
        warmup=10,
        eta=1e-3,
        clip=False,
        exclude=False,
        warmup_start_lr=0.3,
        final_lr_fraction=0.001,
    )
    rows.update(
        _kwargs(
            SWAV,
            {
                "proj_hidden_dim": (2048, f"{main} --hidden_mlp (default 2048)"),
                "proj_output_dim": (128, f"{sh} --feat_dim 128"),
                "num_prototypes": (3000, f"{sh} --nmb_prototypes 3000"),
                "queue_size": (0, f"{sh} --queue_length 0 (no queue at batch 4096)"),
                "temperature": (0.1, f"{sh} --temperature 0.1"),
                "sk_epsilon": (0.05, f"{sh} --epsilon 0.05"),
                "sk_iters": (3, f"{sh} --sinkhorn_iterations 3"),
                "queue_start_epochs": (
                    15.0,
                    f"{main} --epoch_queue_starts (default 15; unused with no queue)",
                ),
                "freeze_prototypes_epochs": (
                    1.0,
                    f"{sh} --freeze_prototypes_niters 313 (1 epoch at batch 4096)",
                ),
            },
        )
    )
    aug = (
        "src/multicropdataset.py MultiCropDataset (get_color_distortion(s=1), "
        "PILRandomGaussianBlur(p=0.5))"
    )
    glob = _view((0.14, 1.0), SYM_JITTER, 0.5, 0.0)
    rows.update(
        _official_views(
            [glob, glob], f"{SWAV} {aug}; {sh} --min_scale_crops 0.14 --max_scale_crops 1."
        )
    )
    rows.update(_norm_rows(SWAV_STATS, f"{SWAV} src/multicropdataset.py MultiCropDataset"))
    local = _view((0.05, 0.14), SYM_JITTER, 0.5, 0.0)
    rows.update(
        _local_views(
            local,
            6,
            96,
            f"{SWAV} {sh} --nmb_crops 2 6 --size_crops 224 96 --min_scale_crops 0.14 0.05 "
            "--max_scale_crops 1. 0.14",
        )
    )
    return rows


def _vicreg_imagenet() -> dict[str, Ref]:
    cmd = "README.md 1000-epoch SLURM command"
    main = "main_vicreg.py"
    rows = _official(
        VICREG,
        {
            "batch_size": f"{cmd} --batch-size 2048",
            "optim.name": f"{main} LARS",
            "optim.base_lr": f"{cmd} --base-lr 0.2 (x batch / 256: adjust_learning_rate)",
            "optim.weight_decay": f"{main} --wd (default 1e-6)",
            "optim.final_weight_decay": f"{main} --wd (constant)",
            "optim.momentum": f"{main} LARS momentum=0.9",
            "optim.lars_eta": f"{main} LARS eta=0.001",
            "optim.lars_clip": f"{main} LARS (no clipping)",
            "optim.exclude_bias_norm": f"{main} weight_decay_filter = lars_adaptation_filter = "
            "exclude_bias_and_norm (p.ndim == 1)",
            "optim.warmup_epochs": f"{main} adjust_learning_rate warmup_steps = 10 * len(loader)",
            "optim.warmup_start_lr": f"{main} adjust_learning_rate (base_lr * step / warmup)",
            "optim.final_lr_fraction": f"{main} adjust_learning_rate end_lr = base_lr * 0.001",
            "optim.grad_clip": f"{main} (no gradient clipping)",
            "schedule.reference_epochs": f"{cmd} --epochs 1000",
            "sync_batchnorm": f"{main} nn.SyncBatchNorm.convert_sync_batchnorm",
        },
        name="lars",
        batch=2048,
        lr=0.2,
        wd=1e-6,
        epochs=1000,
        warmup=10,
        eta=1e-3,
        clip=False,
        exclude=True,
        final_lr_fraction=0.001,
    )
    rows["optim.lars_eta"] = Ref(
        1e-3,
        rows["optim.lars_eta"].source,
        "trust ratio eta ||w|| / ||g + wd w||; divssl's LARS uses solo-learn's "
        "eta ||w|| / (||g|| + wd ||w||), equal when wd = 0",
    )
    rows.update(
        _kwargs(
            VICREG,
            {
                "proj_hidden_dim": (8192, f"{main} --mlp (default 8192-8192-8192)"),
                "proj_output_dim": (8192, f"{main} --mlp (default 8192-8192-8192)"),
                "proj_layers": (3, f"{main} --mlp (default 8192-8192-8192)"),
                "sim_coeff": (25.0, f"{main} --sim-coeff (default 25.0)"),
                "std_coeff": (25.0, f"{main} --std-coeff (default 25.0)"),
                "cov_coeff": (1.0, f"{main} --cov-coeff (default 1.0)"),
                "variance_halved": (True, f"{main} VICReg.forward std_loss (each term / 2)"),
            },
        )
    )
    views = [
        _view((0.08, 1.0), ASYM_JITTER, 1.0, 0.0),
        _view((0.08, 1.0), ASYM_JITTER, 0.1, 0.2),
    ]
    rows.update(
        _official_views(
            views,
            f"{VICREG} augmentations.py TrainTransform transform / transform_prime "
            "(RandomResizedCrop default scale 0.08-1)",
        )
    )
    rows["augment.n_local_crops"] = Ref(0, f"{VICREG} {main} (two views: x, y)")
    rows.update(_norm_rows(IMAGENET_STATS, f"{VICREG} augmentations.py TrainTransform Normalize"))
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
        "at ~10^2 steps with these values (with LR 0.3: 24.9%) nor with any setting tried: its "
        "code equals solo-learn's step for step, it loses feature rank early (docs/benchmarks.md, "
        "'BYOL in short runs')"
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
