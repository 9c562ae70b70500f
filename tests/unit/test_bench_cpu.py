"""The CPU paths: the GPT training loop (tiny config, two steps) and the collectives over gloo."""

import json

import pytest

torch = pytest.importorskip("torch", reason="PyTorch not installed: pip install '.[test]' (torch==2.13.0 CPU)")

from click.testing import CliRunner  # noqa: E402

from validator.bench import dataparallel, gpt, launch, train_child  # noqa: E402


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
@pytest.mark.parametrize("dp", ["blocks", "ddp", "fsdp"])
def test_two_rank_training_on_cpu(tmp_path, dp):
    """The N-GPU path (one process per rank: block all-reduce, DDP or FSDP2 sharding) with gloo between CPU
    processes."""
    fsdp = dp == "fsdp"
    run = train_child.run({"model": "gpt-tiny", "device": "cpu", "ranks": 2, "steps": 2, "warmup": 1,
                           "micro_batch": 2, "compile": False, "fsdp": fsdp, "dp": dp,
                           "result_path": str(tmp_path / "r")})
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
        how = run.info["data_parallel"]
        if dp == "ddp":
            assert how["method"] == "ddp" and how["static_graph"] and how["bucket_cap_mb"] == 25
        else:  # two blocks, one all-reduce each, then the embeddings and the last LayerNorm
            assert how["method"] == "block all-reduce" and how["all_reduces_per_step"] == 3
    if fsdp:
        assert run.info["data_parallel"] == {"method": "fsdp2"}


def test_block_groups_follow_the_backward_order_and_cover_every_parameter():
    model = gpt.build(torch, gpt.get_config("gpt-tiny"))
    one = dataparallel.plan(model, 1)
    assert [len(g) for g in one[:2]] == [len(list(model.blocks[1].parameters()))] * 2
    assert one[0][0] is next(model.blocks[1].parameters())  # the last block's gradients are ready first
    assert {id(p) for p in one[2]} == {id(model.wte.weight), id(model.wpe.weight), id(model.ln_f.weight),
                                       id(model.ln_f.bias)}
    two = dataparallel.plan(model, 2)
    assert len(two) == 2 and len(two[0]) == 2 * len(one[0])
    for groups in (one, two):
        assert sorted(id(p) for g in groups for p in g) == sorted(id(p) for p in model.parameters())
    assert dataparallel.blocks_per_group(40) == 3 and dataparallel.blocks_per_group(2) == 1


def _block_allreduce_rank(rank: int, port: int, out: str) -> None:
    """One rank of the check below: the gradients after wait() are the mean of both ranks' own gradients."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(rank)  # different weights: every rank must start from rank 0's
    model = gpt.build(torch, gpt.get_config("gpt-tiny"))
    sync = dataparallel.BlockAllReduce(torch, dist, model, per_group=1)
    params = list(model.parameters())
    w0 = params[5].detach().clone()
    dist.broadcast(w0, 0)
    res = {"same_start": torch.equal(w0, params[5]), "steps": []}
    for step in range(2):
        idx = torch.randint(0, 256, (2, 33), generator=torch.Generator().manual_seed(10 * step + rank))
        loss = model(idx[:, :-1], idx[:, 1:])
        own = torch.autograd.grad(loss, params, retain_graph=True)  # this rank's gradients (no hooks run)
        loss.backward()
        sync.wait()
        mean = [g.clone() for g in own]
        for g in mean:
            dist.all_reduce(g)
            g /= 2
        res["steps"].append({
            "mean": all(torch.allclose(p.grad, m, rtol=1e-5, atol=1e-8) for p, m in zip(params, mean)),
            "ranks_differ": any(not torch.allclose(o, m) for o, m in zip(own, mean))})
        model.zero_grad(set_to_none=True)
    try:
        sync.wait()  # no backward since: no group got its gradients
    except RuntimeError as e:
        res["missing"] = str(e)
    dist.destroy_process_group()
    with open(f"{out}.{rank}", "w") as f:
        json.dump(res, f)


@pytest.mark.subprocess
def test_block_allreduce_averages_the_gradients_over_gloo(tmp_path):
    out = str(tmp_path / "res")
    torch.multiprocessing.spawn(_block_allreduce_rank, args=(launch.free_port(), out), nprocs=2)
    for rank in (0, 1):
        res = json.loads(open(f"{out}.{rank}").read())
        assert res["same_start"]
        assert res["steps"] == [{"mean": True, "ranks_differ": True}] * 2
        assert "parameter groups [0, 1, 2] got no gradient" in res["missing"]
