"""Export: one consolidated file from a run, a Lightning checkpoint or a sharded one.

A sharded checkpoint is read in one process, the way `torch.distributed.checkpoint.format_utils.
dcp_to_torch_save` does, but through the one safe loader (`bigtrain.checkpoints.load`): DCP's metadata goes
through the unpickler that builds only DCP's own metadata classes, and every other object through
`torch.load(..., weights_only=True)`. The command line is `bigtrain.commands.checkpoint`.

Outputs:
  weights (default)   the network's tensors, keys as in the unsharded `module.net.state_dict()` (or the
                      LightningModule's with --module): `torch.save` of a dict of tensors, or safetensors when
                      the name ends in `.safetensors` (tensors that share memory, such as tied weights, are
                      written as separate copies, since safetensors refuses shared memory; each key still
                      loads strictly);
  --full              a Lightning checkpoint with everything consolidated (weights, optimizer states keyed
                      by parameter name in the optimizer's order, loops, schedulers, hyper-parameters): it
                      resumes under any strategy and any number of ranks through `--ckpt_path`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bigtrain.checkpoints.discover import find_resume_checkpoint
from bigtrain.checkpoints.load import load_checkpoint
from bigtrain.checkpoints.sharded import is_sharded
from bigtrain.errors import UserError
from bigtrain.files import atomic_path

NET_PREFIX = "net."


def find_source(path: str | Path) -> Path:
    """The checkpoint a path names: a .ckpt file, a sharded folder, or a run directory's newest checkpoint."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist; give a run directory, a .ckpt file or a sharded checkpoint")
    if path.is_file() or is_sharded(path):
        return path
    found = find_resume_checkpoint(path)
    if found is None:
        raise UserError(
            f"{path} is neither a sharded checkpoint (no .metadata) "
            "nor a run directory with a complete checkpoint in checkpoints/ (one matching its manifest)"
        )
    return found


def lightning_checkpoint(path: Path) -> dict[str, Any]:
    """A Lightning checkpoint (file or sharded folder) as plain data, with a state_dict of tensors."""
    import torch

    checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint.get("state_dict"), Mapping):
        raise UserError(f"{path} is not a Lightning checkpoint: it has no 'state_dict'")
    if not all(isinstance(v, torch.Tensor) for v in checkpoint["state_dict"].values()):
        raise UserError(f"{path}: the state_dict holds values that are not tensors")
    return checkpoint


def network_weights(state_dict: Mapping[str, Any], keep_module_keys: bool = False) -> dict[str, Any]:
    """The network's tensors: `net.` stripped from the LightningModule's keys unless told to keep them."""
    if keep_module_keys or not all(k.startswith(NET_PREFIX) for k in state_dict):
        return dict(state_dict)
    return {k[len(NET_PREFIX) :]: v for k, v in state_dict.items()}


def named_optimizer_state(state: Mapping[str, Any], names: list[str] | None) -> dict[str, Any]:
    """An optimizer state keyed by parameter names, in the optimizer's order (as sharded checkpoints hold it).

    torch's `Optimizer.load_state_dict` pairs saved and live parameters by position, whatever the keys, so
    this form loads under single and ddp; FSDP2's `set_optimizer_state_dict` needs the names. A positional
    state (from a single-device or DDP checkpoint) is renamed with `names`, the optimizer's parameter names
    in order; without them it stays positional.
    """
    ids = [i for group in state["param_groups"] for i in group["params"]]
    if names is None or not all(isinstance(i, int) for i in ids):
        return dict(state)
    if len(names) != len(ids):
        raise UserError(
            f"the checkpoint's optimizer has {len(ids)} parameters but the model's has {len(names)}"
        )
    name = dict(zip(ids, names, strict=True))
    groups = [{**g, "params": [name[i] for i in g["params"]]} for g in state["param_groups"]]
    return {"state": {name[i]: s for i, s in state["state"].items()}, "param_groups": groups}


def standalone(tensors: Mapping[str, Any]) -> dict[str, Any]:
    """Contiguous CPU tensors that own their memory, one per key (tied or shared ones are copied)."""
    out, seen = {}, set()
    for key, tensor in tensors.items():
        t = tensor.detach().cpu().contiguous()
        storage = t.untyped_storage()
        if storage.data_ptr() in seen or storage.nbytes() != t.nbytes:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[key] = t
    return out


def first_difference(expected: Mapping[str, Any], found: Mapping[str, Any]) -> str | None:
    """The first key missing, unexpected or of another shape in `found` (name -> tensor or shape), or None."""
    for key, shape in expected.items():
        if key not in found:
            return f"key '{key}' of the model is missing from the checkpoint"
        if tuple(found[key].shape) != tuple(getattr(shape, "shape", shape)):
            have, want = list(found[key].shape), list(getattr(shape, "shape", shape))
            return f"key '{key}' has shape {have} in the checkpoint but {want} in the model"
    extra = [k for k in found if k not in expected]
    return f"the checkpoint has key '{extra[0]}', which the model has not" if extra else None


def meta_module(config: str) -> Any:
    """The LightningModule a config YAML or recipe describes, its network built on the meta device."""
    from bigtrain.lightning_cli import resolve
    from bigtrain.plan import fill_data_sizes, instantiate, meta_copy, recipe_args

    resolved = resolve("fit", recipe_args(config))
    model, data = instantiate(resolved["model"]), instantiate(resolved["data"])
    fill_data_sizes(data)
    return meta_copy(model, data)


def optimizer_param_names(module: Any) -> list[list[str]]:
    """For each optimizer the module configures: its parameters' names, in the optimizer's order."""
    from bigtrain.lightning_compat import optimizers_of

    optimizers = optimizers_of(module)
    names = {id(p): n for n, p in module.named_parameters()}
    return [[names[id(p)] for g in opt.param_groups for p in g["params"]] for opt in optimizers]


def _run_config(source: Path, given: str | None) -> str | None:
    if given:
        return given
    for folder in (source, source.parent, source.parent.parent):
        if (folder / "config.yaml").is_file():
            return str(folder / "config.yaml")
    return None


def model_class_path(config: str) -> str | None:
    """`model.class_path` of a config YAML or recipe, read without building anything."""
    from bigtrain.recipes import base_chain, find, lookup

    path = Path(config) if Path(config).is_file() else find(config)
    class_path = lookup(base_chain(path), "model.class_path")  # a recipe may leave it to its base
    return class_path if isinstance(class_path, str) else None


def _resumable(checkpoint: dict[str, Any], weights: dict[str, Any], config: str | None) -> dict[str, Any]:
    """The full checkpoint: optimizer states keyed by name, and the model class beside its hyper-parameters.

    LightningCLI parses a checkpoint file's hyper-parameters as the model's config when `--ckpt_path` is
    given; without `_class_path` it cannot tell which LightningModule they belong to and refuses them.
    """
    optims = checkpoint.get("optimizer_states", [])
    positional = any(isinstance(k, int) for o in optims for k in o.get("state", {}))
    names: list[Any] = [None] * len(optims)
    if positional and config:
        names = optimizer_param_names(meta_module(config))
    elif positional:
        print(
            "no config.yaml found (give --config): optimizer states stay positional, fine for single and ddp"
        )
    out = {**checkpoint, "state_dict": weights}
    out["optimizer_states"] = [named_optimizer_state(o, n) for o, n in zip(optims, names, strict=False)]
    hparams = checkpoint.get("hyper_parameters")
    class_path = model_class_path(config) if config and isinstance(hparams, dict) else None
    if class_path and "_class_path" not in hparams:
        out["hyper_parameters"] = {"_class_path": class_path, **hparams}
    return out


def _save(obj: Any, out: Path, safetensors: bool) -> None:
    """Write atomically: a partial file never carries the final name."""
    import torch

    with atomic_path(out) as tmp:
        if safetensors:
            from safetensors.torch import save_file

            save_file(obj, str(tmp), metadata={"format": "pt"})
        else:
            torch.save(obj, tmp)


def check_destination(src: Path, out: Path, *, force: bool) -> None:
    """Refuse an output that would destroy a checkpoint or a folder: the source, any checkpoint (a file with
    a manifest, a sharded folder, a `.ckpt`), or an existing folder; `force` allows replacing a plain file."""
    from bigtrain.checkpoints.manifest import manifest_path

    if out.is_dir():
        raise UserError(f"{out} is a folder; give a file name such as {out / 'model.safetensors'}")
    if out.exists() and out.resolve() == src.resolve():
        raise UserError(f"{out} is the checkpoint being exported; give another output name")
    if not out.exists() and not out.is_symlink():
        return
    is_checkpoint = out.suffix == ".ckpt" or manifest_path(out).exists() or out.is_symlink()
    if is_checkpoint:
        raise UserError(f"{out} exists and is a checkpoint; bigtrain never overwrites one: give another name")
    if not force:
        raise UserError(f"{out} exists; give another name, or --force to replace it")


def export(
    source: str | Path,
    out: str | Path,
    *,
    full: bool = False,
    module_keys: bool = False,
    strict: bool = False,
    config: str | None = None,
    force: bool = False,
) -> Path:
    """Write the consolidated weights (or, with `full`, a whole Lightning checkpoint) of `source` to `out`."""
    src, out = find_source(source), Path(out)
    check_destination(src, out, force=force)
    safetensors = out.suffix == ".safetensors"
    if full and safetensors:
        raise UserError("--full writes a Lightning checkpoint; name it .ckpt, not .safetensors")
    checkpoint = lightning_checkpoint(src)
    reference = _run_config(src, config)
    if strict:
        if reference is None:
            raise UserError(f"--strict needs the model's config: no config.yaml beside {src}; give --config")
        shapes = {k: v.shape for k, v in meta_module(reference).state_dict().items()}
        diff = first_difference(shapes, checkpoint["state_dict"])
        if diff:
            raise UserError(f"{src} does not match the model of {reference}: {diff}")
    weights = standalone(checkpoint["state_dict"])
    if full:
        _save(_resumable(checkpoint, weights, reference), out, safetensors=False)
    else:
        _save(network_weights(weights, module_keys), out, safetensors)
    count = sum(t.numel() for t in weights.values())
    kind = "sharded checkpoint" if is_sharded(src) else "checkpoint"
    what = "Lightning checkpoint" if full else f"{len(weights)} tensors"
    print(f"exported {kind} {src} ({count:,} values) -> {out} ({what})")
    return out
