"""Every bad pretraining input exits 2, names the field and the valid range, and writes nothing.

The table reproduces the hardening issue's cases (issue 11); the fuzz test feeds a few hundred
generated ``KEY=VALUE`` combinations through the same validation the CLI runs before any compute.
The CLI is run in-process (``divssl.cli.main`` with ``sys.argv`` set), so a traceback fails the
test as an uncaught exception; two cases also run as real subprocesses to check the exit code.
"""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from divssl import cli
from divssl.data.pool import parse_spec
from divssl.errors import ConfigError
from divssl.pretrain.build import resolve_device
from divssl.pretrain.config import Config, load_config

POOL = "data.pool=world:classes=4:per_class=16:size=16:seed=0"


def run_main(args: list[str], cwd: Path, monkeypatch, capsys) -> tuple[int, str]:
    """Run ``divssl ARGS`` in-process; return (exit code, stderr)."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["divssl", *args])
    with pytest.raises(SystemExit) as info:
        cli.main()
    return int(info.value.code or 0), capsys.readouterr().err


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.name != "config_in")


NO_CUDA = not torch.cuda.is_available()

# (overrides, field named in the message, text that says the valid range or choices)
BAD_OVERRIDES = [
    (["budget.images=1000000000000000"], "budget.images", "[1, 1000000000000]"),
    (["budget.epochs=-1", "budget.images=null"], "budget.epochs", "> 0"),
    (["image_size=100000"], "image_size", "[1, 1024]"),
    (["batch_size=100000000"], "batch_size", "[1, 65536]"),
    (["out={nosuchfield}"], "out", "valid choices: backbone, budget, method, n, seed"),
    (["out="], "out", "empty"),
    (["out=."], "out", "current"),
    (["out=runs/{method.__class__}"], "out", "unknown format field {method.__class__}"),
    (["out=runs/{seed:q}"], "out", "bad format string"),
    (["device=banana"], "device", "valid choices: auto, cpu, cuda, cuda:N"),
    (["optim.base_lr=-1"], "optim.base_lr", "(0, inf)"),
    (["optim.base_lr=nan"], "optim.base_lr", "finite"),
    (["optim.base_lr=.inf"], "optim.base_lr", "finite"),
    (["seed=-1"], "seed", "[0, 4294967295]"),
    (["seeds.order=-5"], "seeds.order", "[0, 4294967295]"),
    (["optim.warmup_epochs=-5"], "optim.warmup_epochs", "[0, inf)"),
    (["optim.grad_clip=-1"], "optim.grad_clip", "[0, inf)"),
    (["optim.momentum=1.5"], "optim.momentum", "[0, 1)"),
    (["optim.weight_decay=-0.1"], "optim.weight_decay", "[0, inf)"),
    (["data.max_pixels=0"], "data.max_pixels", "[1, inf)"),
    (["data.workers=-1"], "data.workers", "[0, 256]"),
    (["augment.n_local_crops=1000"], "augment.n_local_crops", "[0, 32]"),
    (["data.pool=world:classes=1000000:per_class=1000000"], "world.classes", "1..400"),
    (["data.pool=world:classes=400:per_class=1000000"], "world.per_class", "GiB"),
]


@pytest.mark.parametrize(("args", "field", "says"), BAD_OVERRIDES)
def test_bad_override_exits_2_names_field_and_range(
    tmp_path, monkeypatch, capsys, args, field, says
):
    code, err = run_main(
        ["pretrain", POOL, f"out={tmp_path / 'run'}", "tracking=none", *args],
        tmp_path,
        monkeypatch,
        capsys,
    )
    assert code == 2, err
    flat = " ".join(err.split())  # rich wraps long lines
    assert f"{field}:" in flat and says in flat, flat
    assert _files(tmp_path) == []


@pytest.mark.skipif(not NO_CUDA, reason="checks the error on a machine without a GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:7"])
def test_missing_gpu_exits_2_before_writing(tmp_path, monkeypatch, capsys, device):
    code, err = run_main(
        ["pretrain", POOL, f"out={tmp_path / 'run'}", f"device={device}"],
        tmp_path,
        monkeypatch,
        capsys,
    )
    assert code == 2 and "device:" in err and "no GPU" in " ".join(err.split())
    assert _files(tmp_path) == []


def test_nonexistent_gpu_index_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    cfg = load_config(None, ["device=cuda:7"])
    with pytest.raises(ConfigError, match="cuda:7 does not exist") as info:
        resolve_device(cfg)
    assert info.value.field == "device" and "cuda:1" in (info.value.choices or [])


def _config_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / "config_in"
    if kind == "binary":
        path.write_bytes(bytes(range(256)) * 4)
    elif kind == "invalid":
        path.write_text("method: [simclr\nbudget: {images: 10\n")
    elif kind == "python_tag":
        path.write_text("method: !!python/object/apply:os.system ['echo pwned > pwned.txt']\n")
    elif kind == "nul":
        path.write_text("method: simclr\x00\n")
    elif kind == "list":
        path.write_text("- 1\n- 2\n")
    return path


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("binary", "not UTF-8"),
        ("invalid", "not valid YAML"),
        ("python_tag", "YAML tag that is not allowed"),
        ("nul", "NUL"),
        ("list", "mapping"),
    ],
)
def test_bad_config_file_exits_2(tmp_path, monkeypatch, capsys, kind, says):
    path = _config_file(tmp_path, kind)
    code, err = run_main(
        ["pretrain", "--config", str(path), f"out={tmp_path / 'run'}"],
        tmp_path,
        monkeypatch,
        capsys,
    )
    assert code == 2, err
    assert "--config:" in err and says in " ".join(err.split())
    assert _files(tmp_path) == []  # in particular no pwned.txt


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["binary", "python_tag"])
def test_bad_config_file_exit_code_in_a_subprocess(tmp_path, kind):
    path = _config_file(tmp_path, kind)
    out = subprocess.run(
        [sys.executable, "-m", "divssl.cli", "pretrain", "--config", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and "--config:" in out.stderr
    assert _files(tmp_path) == []


# ------------------------------------------------------------------------------------ fuzz


def _dotted_keys() -> list[str]:
    keys: list[str] = []
    for name, info in Config.model_fields.items():
        sub = info.annotation
        if isinstance(sub, type) and hasattr(sub, "model_fields"):
            keys += [f"{name}.{child}" for child in sub.model_fields]
        else:
            keys.append(name)
    return keys


FUZZ_VALUES = [
    "", "0", "1", "-1", "2", "0.5", "1e-3", "nan", ".nan", "inf", "-.inf", "1e309",
    "1000000000000000", "99999999999999999999999", "true", "null", "[]", "[1, 2]", "{}",
    "{a: 1}", "'x'", "banana", "cuda:99", "{nosuchfield}", "..", "/", "world:classes=2",
    "!!python/object/apply:os.system ['echo hi']", "\x00", "é", "runs/{method}", "1:2:3",
    "{seed:q}", "{n[0]}", "{}",
]  # fmt: skip
FUZZ_EXTRA_KEYS = ["nope", "data.nope", "optim.base_lr.x", "method_args.temperature", "a..b"]


def validate_like_the_cli(overrides: list[str]) -> None:
    """What ``divssl pretrain`` checks before any compute or write (no data decoded)."""
    cfg = load_config(None, overrides)
    parse_spec(cfg.data.pool)
    if cfg.device in ("cpu", "auto"):
        resolve_device(cfg)


def test_fuzz_overrides_give_config_error_or_a_valid_config(tmp_path, monkeypatch):
    """A few hundred generated KEY=VALUE lists: ConfigError (exit 2) or a valid config (exit 0),
    never another exception (a traceback), and nothing written either way."""
    monkeypatch.chdir(tmp_path)
    rng = random.Random(11)
    keys = _dotted_keys() + FUZZ_EXTRA_KEYS
    singles = [[f"{k}={v}"] for k, v in itertools.product(keys, FUZZ_VALUES)]
    cases = rng.sample(singles, 250)
    cases += [
        [f"{rng.choice(keys)}={rng.choice(FUZZ_VALUES)}" for _ in range(3)] for _ in range(100)
    ]
    outcomes = {"ok": 0, "error": 0}
    for overrides in cases:
        try:
            validate_like_the_cli(overrides)
        except ConfigError as exc:
            assert exc.field, overrides
            outcomes["error"] += 1
        else:
            outcomes["ok"] += 1
    assert list(tmp_path.iterdir()) == []
    assert outcomes["ok"] > 10 and outcomes["error"] > 100  # both paths are exercised
