"""The CPU paths: the GPT training loop (tiny config, two steps) and the collectives over gloo."""

import json

import pytest

torch = pytest.importorskip("torch", reason="PyTorch not installed: pip install '.[test]' (torch==2.13.0 CPU)")

from click.testing import CliRunner  # noqa: E402

from validator.bench import gpt, train_child  # noqa: E402


def test_tiny_gpt_trains_two_steps_on_cpu():
    run = train_child.rank_main(0, 1, 0, {"model": "gpt-tiny", "device": "cpu", "steps": 2, "warmup": 1,
                                          "micro_batch": 2, "compile": False})
    assert run.errors == []
    tok, tfl = run.figures
    assert tok.name == "gpt-tiny_tokens_per_s" and tok.value > 0
    assert tfl.meta["steps"] == 2 and tfl.meta["device"] == "cpu" and tfl.meta["micro_batch"] == 2
    # The loss of random tokens starts near ln(V).
    assert abs(tfl.meta["loss_first"] - __import__("math").log(256)) < 0.5


def test_model_matches_the_parameter_formula():
    cfg = gpt.get_config("gpt-tiny")
    model = gpt.build(torch, cfg)
    assert sum(p.numel() for p in model.parameters()) == cfg.params


def test_config_too_big_for_the_node_is_skipped_with_reason():
    run = train_child.run({"model": "gpt-175b", "device": "cpu", "result_path": "/nonexistent"})
    assert run.skipped and "64 GPUs" in run.skipped


@pytest.mark.subprocess
def test_cli_train_on_cpu_in_a_child(tmp_path):
    from validator.cli import main

    out = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["bench", "train", "--device", "cpu", "--model", "gpt-tiny", "--steps", "2",
                                    "--warmup", "1", "--save", str(out)])
    assert res.exit_code == 0, res.output
    assert "gpu.bench_train" in res.output and "gpt-tiny_tokens_per_s" in res.output
    doc = json.loads(out.read_text())["data"]["bench"]  # the report JSON keeps the raw runs
    assert doc["benchmarks"][0]["suite"] == "train" and doc["benchmarks"][0]["errors"] == []


@pytest.mark.subprocess
def test_collectives_over_gloo_two_ranks(tmp_path):
    from validator.cli import main

    out = tmp_path / "n.json"
    res = CliRunner().invoke(main, ["bench", "nccl", "--min-bytes", "64K", "--max-bytes", "256K",
                                    "--engine", "torch", "--backend", "gloo", "--save", str(out)])
    assert res.exit_code == 0, res.output
    b = json.loads(out.read_text())["data"]["bench"]["benchmarks"][0]
    assert b["info"]["backend"] == "gloo" and b["info"]["ranks"] == 2 and b["errors"] == []
    figs = {f["name"]: f for f in b["figures"]}
    assert sorted(figs) == ["all_gather", "all_reduce", "alltoall", "broadcast", "reduce_scatter"]
    for f in figs.values():
        assert f["meta"]["wrong"] == 0 and f["value"] > 0
        size, t_us, alg, bus = f["meta"]["sweep"][-1]
        assert bus == pytest.approx(alg * {"all_reduce": 1.0, "broadcast": 1.0}.get(f["name"], 0.5), rel=1e-2, abs=2e-3)


@pytest.mark.subprocess
def test_gpu_suites_skip_without_cuda(tmp_path):
    from validator.cli import main

    for suite in ("bandwidth", "train", "nccl"):
        res = CliRunner().invoke(main, ["bench", suite, "--save", str(tmp_path / "b.json")])
        assert res.exit_code == 0, res.output
        assert "SKIP" in res.output and "no CUDA GPU" in res.output


@pytest.mark.subprocess
@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp"])
def test_two_rank_training_on_cpu(tmp_path, fsdp):
    """The N-GPU path (one process per rank, DDP or FSDP2 sharding) with gloo between CPU processes."""
    run = train_child.run({"model": "gpt-tiny", "device": "cpu", "ranks": 2, "steps": 2, "warmup": 1,
                           "micro_batch": 2, "compile": False, "fsdp": fsdp, "result_path": str(tmp_path / "r")})
    assert run.errors == [] and run.skipped is None
    figs = {f.name: f for f in run.figures}
    tok = figs["gpt-tiny_tokens_per_s"]
    assert tok.gpu is None and tok.meta["ranks"] == 2
    # Tokens count every rank: 2 ranks x 2 sequences x 32 tokens x 2 steps.
    assert tok.value * tok.meta["step_ms"] * 2 / 1e3 == pytest.approx(2 * 2 * 32 * 2, rel=0.05)
    if fsdp:  # a sharded model does not fit one GPU: no 1-GPU phase to compare with
        assert "gpt-tiny_scaling" not in figs
    else:
        # The 1-GPU figure comes from the same job (rank 0 alone first) and the efficiency is stated next to it.
        sc = figs["gpt-tiny_scaling"]
        assert sc.value == pytest.approx(tok.value / (2 * sc.meta["tokens_per_s_1gpu"]), rel=1e-3)
        assert "on 1 GPU" in tok.detail and run.info["steps_1gpu"]["ranks"] == 1
        assert run.info["ddp"]["static_graph"] and run.info["ddp"]["bucket_cap_mb"] == 25
