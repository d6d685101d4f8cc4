"""`bigtrain debug RECIPE --simulate DPxTP`: the recipe's own FSDP plan over fake ranks in one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch.distributed as dist

from bigtrain.commands.debug import main, parse
from bigtrain.errors import UserError
from bigtrain.models.attached import attached_datamodule
from bigtrain.models.config import fill_from_data, to_dict
from bigtrain.models.transformer import GPTModule
from bigtrain.models.transformer.model import GPT
from bigtrain.strategies.parallelize import parallelize

GPT_1B = "transformer/gpt-1b-fsdp"


class GPTMissingLastBlock(GPT):
    """A sharding plan with a hole: blocks() leaves out the last transformer block."""

    def blocks(self) -> list:
        return list(self.h)[:-1]


class MissedBlockGPT(GPTModule):
    """GPTModule building the network above, as the family's configure_model builds GPT."""

    network: type[GPT] = GPTMissingLastBlock

    def configure_model(self) -> None:
        if self.net is not None:
            return
        fill_from_data(
            self.cfg, attached_datamodule(self), {"vocab_size": "vocab_size", "block_size": "block_size"}
        )
        self.hparams["net"] = to_dict(self.cfg)
        self.net = parallelize(self, lambda: self.network(self.cfg))


class GPTWithoutBlocks(GPT):
    """A sharding plan that shards nothing one by one: blocks() returns no block."""

    def blocks(self) -> list:
        return []


class NoBlocksGPT(MissedBlockGPT):
    """GPTModule building the network above."""

    network = GPTWithoutBlocks


def simulate(tmp_path: Path, monkeypatch, capsys, recipe: str, *args: str) -> tuple[int, str, dict]:
    """Run `bigtrain debug RECIPE --tiny ARGS` in tmp_path: exit status, report, debug.json rows by check."""
    monkeypatch.chdir(tmp_path)
    code = main([recipe, "--tiny", *args])
    out = capsys.readouterr().out
    found = list(tmp_path.glob("runs/*/*/debug.json"))
    assert len(found) == 1, out
    assert not dist.is_initialized()  # the fake process group ended with the simulation
    return code, out, {c["check"]: c for c in json.loads(found[0].read_text())["checks"]}


def test_gpt_2x2_shards_match_the_data_and_tensor_parallel_arithmetic(tmp_path, monkeypatch, capsys):
    code, out, rows = simulate(tmp_path, monkeypatch, capsys, GPT_1B, "--simulate", "2x2", "--details")
    assert code == 0, out
    assert [rows[c]["status"] for c in ("layout", "tp", "shards", "fwdbwd")] == ["pass"] * 4
    assert "data.batch_size 512 -> 256 per data-parallel rank" in rows["layout"]["summary"]
    assert "forward and backward ran on ranks 0 and 3; every gradient" in rows["fwdbwd"]["summary"]
    assert "units GPT (root) " in rows["shards"]["summary"] and "Block x2 " in rows["shards"]["summary"]
    assert "sharded on cpu" in out
    for rank in ("0", "3"):
        shards = {s["name"]: s for s in rows["shards"]["details"]["ranks"][rank]}
        C = shards["wpe.weight"]["shape"][1]
        assert shards["h.0.attn.q.weight"]["shape"] == [C, C]
        assert shards["h.0.attn.q.weight"]["local"] == [C // 4, C]  # column-wise over TP 2, then DP 2
        assert shards["h.0.attn.proj.weight"]["local"] == [C // 2, C // 2]  # row-wise over TP 2, then DP 2
        assert shards["h.0.mlp.fc.weight"]["local"] == [4 * C // 4, C]
        assert shards["h.0.ln_1.weight"]["local"] == [C // 2]  # replicated over TP, sharded over DP
        assert shards["h.1.attn.q.weight"]["unit"] == "h.1" and shards["ln_f.weight"]["unit"] == "(root)"
        assert all(s["bytes"] == 4 * _numel(s["local"]) for s in shards.values())
    assert "h.0.attn.q.weight" in out and "16x64" in out  # --details prints each shard


def _numel(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def test_resnet152_over_4_data_parallel_ranks_passes(tmp_path, monkeypatch, capsys):
    code, out, rows = simulate(tmp_path, monkeypatch, capsys, "cnn/resnet152-fsdp", "--simulate", "4")
    assert code == 0, out
    assert "data.batch_size 1024 -> 256 per data-parallel rank" in rows["layout"]["summary"]
    shards = {s["name"]: s for s in rows["shards"]["details"]["ranks"]["3"]}
    head = shards["head.weight"]
    assert head["local"][0] == -(-head["shape"][0] // 4) or head["local"][0] == head["shape"][0] - 3 * -(
        -head["shape"][0] // 4
    )
    assert rows["fwdbwd"]["status"] == "pass"


def test_a_global_batch_that_does_not_split_over_the_layout_is_flagged(tmp_path, monkeypatch, capsys):
    code, out, rows = simulate(tmp_path, monkeypatch, capsys, "cnn/resnet152-fsdp", "--simulate", "3")
    assert code == 1
    assert rows["layout"]["status"] == "FAIL"
    assert "data.batch_size 1024 (the global batch) does not divide across 3 data-parallel ranks" in out
    assert rows["shards"]["status"] == "pass"  # the sharding itself is still checked


def test_the_recipe_at_its_own_size_is_sharded_on_the_meta_device(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main([GPT_1B, "--simulate", "4x2"])
    out = capsys.readouterr().out
    rows = {
        c["check"]: c for c in json.loads(next(tmp_path.glob("runs/*/*/debug.json")).read_text())["checks"]
    }
    assert code == 0, out
    assert "sharded on meta" in out and rows["fwdbwd"]["status"] == "skip"
    assert "4.1 GB of fp32 parameters stay on the meta device" in rows["fwdbwd"]["summary"]
    shards = {s["name"]: s for s in rows["shards"]["details"]["ranks"]["7"]}
    assert shards["h.23.attn.q.weight"]["shape"] == [1792, 1792]
    assert shards["h.23.attn.q.weight"]["local"] == [1792 // 8, 1792]
    assert shards["h.23.attn.proj.weight"]["local"] == [1792 // 4, 1792 // 2]
    assert not dist.is_initialized()


def test_a_block_left_out_of_the_plan_is_named(tmp_path, monkeypatch, capsys):
    code, out, rows = simulate(
        tmp_path, monkeypatch, capsys, GPT_1B, "--simulate", "2", "--model",
        "tests.debug.test_simulate.MissedBlockGPT",
    )  # fmt: skip
    assert code == 1
    assert rows["shards"]["status"] == "FAIL"
    assert "block h.1 is not an FSDP unit: blocks() left it out" in out
    assert "its parameters sit in the root unit" in rows["shards"]["summary"]


def test_a_plan_without_blocks_is_flagged(tmp_path, monkeypatch, capsys):
    code, out, rows = simulate(
        tmp_path,
        monkeypatch,
        capsys,
        GPT_1B,
        "--simulate",
        "2",
        "--model",
        "tests.debug.test_simulate.NoBlocksGPT",
    )
    assert code == 1
    assert "blocks() returned no block: the whole network is one FSDP unit" in rows["shards"]["summary"]


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("1x3", "h.0.attn.q.weight (64x64): dim 0 of size 64 does not divide by tensor_parallel_size 3"),
        ("1x4", "tensor_parallel_size 4 does not divide the 2 attention heads"),
    ],
)
def test_tensor_parallel_that_does_not_divide_is_flagged(tmp_path, monkeypatch, capsys, layout, message):
    code, out, rows = simulate(tmp_path, monkeypatch, capsys, GPT_1B, "--simulate", layout)
    assert code == 1
    assert rows["tp"]["status"] == "FAIL" and message in rows["tp"]["summary"]
    assert rows["shards"]["status"] == "skip"


@pytest.mark.parametrize("text", ["0", "x2", "3x", "axb", "2x2x2", "0x2", "2x0", " 2"])
def test_a_malformed_layout_is_a_one_line_user_error(text):
    with pytest.raises(UserError, match=r"--simulate: .* is not a layout DP or DPxTP") as err:
        parse(["cnn/glyphs", "--simulate", text])
    assert "\n" not in str(err.value) and repr(text) in str(err.value)


@pytest.mark.parametrize("text", ["1", "1x1"])
def test_a_single_rank_is_refused(text):
    with pytest.raises(UserError, match=r"is one rank, where FSDP shards nothing"):
        parse(["cnn/glyphs", "--simulate", text])


def test_the_layout_is_parsed():
    assert parse(["cnn/glyphs", "--simulate", "8"])[1].layout == (8, 1)
    assert parse(["cnn/glyphs", "--simulate", "4x2"])[1].layout == (4, 2)
    assert parse(["cnn/glyphs"])[1].layout is None


def test_tensor_parallel_on_a_family_without_a_plan_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"ResNet has no tensor-parallel plan") as err:
        main(["cnn/resnet152-fsdp", "--tiny", "--simulate", "2x2"])
    assert "\n" not in str(err.value)
    assert not dist.is_initialized()


@pytest.mark.parametrize("extra", [["--checks", "grads"], ["--trace"]])
def test_simulate_does_not_combine_with_the_one_device_checks(extra):
    with pytest.raises(UserError, match=r"--simulate runs the layout checks instead of the one-device ones"):
        parse(["cnn/glyphs", "--simulate", "2", *extra])


def test_a_recipe_without_fsdp_is_simulated_with_fsdp_defaults(tmp_path, monkeypatch, capsys):
    code, out, rows = simulate(tmp_path, monkeypatch, capsys, "transformer/builtin-char", "--simulate", "2")
    assert code == 0, out
    assert "the recipe's strategy 'auto' shards nothing: bigtrain's FSDP with its defaults instead" in out
    assert rows["fwdbwd"]["status"] == "pass"


def test_the_recipes_fsdp_settings_are_kept_and_its_layout_replaced():
    from bigtrain.debug.simulate import _fsdp_args

    fsdp = {
        "class_path": "bigtrain.strategies.FSDP",
        "init_args": {"mixed_precision": "bf16", "tensor_parallel_size": 2},
    }
    assert _fsdp_args({"strategy": fsdp}) == ({"mixed_precision": "bf16"}, "")
    assert _fsdp_args({"strategy": "fsdp"}) == ({}, "")
    assert _fsdp_args({"strategy": "ddp"}) == (
        {},
        "the recipe's strategy 'ddp' shards nothing: bigtrain's FSDP with its defaults instead",
    )
