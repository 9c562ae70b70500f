"""Launcher environments (torchrun, srun, mpirun), NCCL settings derived from a node, NCCL INFO logs."""

from pathlib import Path

import pytest

from validator.bench import launch, ncclenv
from validator.bench.cuda_nccl import transport_summary
from validator.bench.evaluate import outcomes
from validator.bench.parsers import parse_nccl_info
from validator.bench.results import BenchRun
from validator.node import Node

NCCL_LOGS = Path(__file__).parent.parent / "fixtures" / "nccl"


# ---------------------------------------------------------------- who am I
def test_no_launcher_is_none():
    assert launch.detect({"HOME": "/root"}) is None


def test_torchrun_two_nodes():
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "GROUP_WORLD_SIZE": "2",
           "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29400"}
    la = launch.detect(env)
    assert (la.rank, la.world, la.local_rank, la.launcher, la.nodes, la.multi_node) == (3, 4, 1, "torchrun", 2, True)
    assert launch.rendezvous_env(la, env)["MASTER_ADDR"] == "10.0.0.1"


def test_srun_derives_rendezvous_from_the_node_list_and_job_id():
    env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "5", "SLURM_NTASKS_PER_NODE": "8(x2)",
           "SLURM_STEP_NUM_NODES": "2", "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "123456",
           "SLURM_STEP_ID": "0"}
    la = launch.detect(env)
    assert (la.launcher, la.rank, la.world, la.local_world, la.nodes) == ("slurm", 5, 16, 8, 2)
    rdv = launch.rendezvous_env(la, env)
    assert rdv["MASTER_ADDR"] == "gpu07" and rdv["MASTER_PORT"] == str(20000 + 123456 % 20000)


@pytest.mark.parametrize("nodelist,first", [("node1", "node1"), ("gpu[07-09,12],login1", "gpu07"),
                                             ("a-b[003,010]", "a-b003"), ("x[1],y[2-3]", "x1")])
def test_first_host_of_a_slurm_node_list(nodelist, first):
    assert launch.first_host(nodelist) == first


def test_mpirun_needs_an_exported_master_addr():
    env = {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "0",
           "OMPI_COMM_WORLD_LOCAL_SIZE": "1"}
    la = launch.detect(env)
    assert (la.launcher, la.nodes) == ("mpi", 2)
    with pytest.raises(launch.LaunchError, match="no rendezvous address") as e:
        launch.rendezvous_env(la, env)
    assert "mpirun -x MASTER_ADDR" in e.value.hint
    assert launch.rendezvous_env(la, dict(env, MASTER_ADDR="n1"))["MASTER_PORT"] == "29500"


@pytest.mark.parametrize("env,match", [
    ({"SLURM_PROCID": "1"}, "SLURM_PROCID is set but SLURM_NTASKS is not"),
    ({"SLURM_PROCID": "0", "SLURM_STEP_ID": "3"}, "SLURM_PROCID is set but SLURM_NTASKS is not"),
    ({"SLURM_NTASKS": "4"}, "SLURM_NTASKS is set but SLURM_PROCID is not"),
    ({"RANK": "0"}, "RANK is set but WORLD_SIZE is not"),
    ({"WORLD_SIZE": "2"}, "WORLD_SIZE is set but RANK is not"),
    ({"OMPI_COMM_WORLD_RANK": "0"}, "OMPI_COMM_WORLD_RANK is set but OMPI_COMM_WORLD_SIZE is not"),
    ({"PMI_SIZE": "2"}, "PMI_SIZE is set but PMI_RANK is not"),
    ({"RANK": "2", "WORLD_SIZE": "2"}, "not a rank of WORLD_SIZE=2"),
    ({"RANK": "x", "WORLD_SIZE": "2"}, "not an integer"),
    ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "2"}, "local rank 3"),
])
def test_half_set_launcher_environment_is_a_clear_error(env, match):
    with pytest.raises(launch.LaunchError, match=match) as e:
        launch.detect(env)
    assert e.value.exit_code == 2 and e.value.hint


def test_sbatch_script_alone_is_an_allocation_not_a_launch():
    # sbatch sets SLURM_PROCID=0 in the batch script itself; without an srun step the benchmark spawns its ranks.
    assert launch.detect({"SLURM_PROCID": "0", "SLURM_JOB_ID": "7"}) is None
    assert launch.detect({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) is None


def test_cli_half_set_environment_exits_2_before_any_work(monkeypatch):
    from click.testing import CliRunner

    from validator.cli import main

    monkeypatch.setenv("SLURM_PROCID", "1")
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    res = CliRunner().invoke(main, ["bench", "nccl", "--backend", "gloo"])
    assert res.exit_code == 2 and "SLURM_PROCID is set but SLURM_NTASKS is not" in res.output


# ---------------------------------------------------------------- NCCL settings from the node
def _ib_port(root: Path, hca: str, port: int, state="4: ACTIVE", phys="5: LinkUp", layer="InfiniBand",
             rate="400 Gb/sec (4X NDR)"):
    d = root / "sys/class/infiniband" / hca / "ports" / str(port)
    d.mkdir(parents=True)
    (d / "state").write_text(state + "\n")
    (d / "phys_state").write_text(phys + "\n")
    (d / "link_layer").write_text(layer + "\n")
    (d / "rate").write_text(rate + "\n")
    return d


def test_derived_nccl_settings_and_their_sources(tmp_path):
    _ib_port(tmp_path, "mlx5_0", 1)
    _ib_port(tmp_path, "mlx5_1", 1, state="1: DOWN", phys="2: Polling")
    roce = _ib_port(tmp_path, "mlx5_2", 1, layer="Ethernet", rate="200 Gb/sec (4X HDR)")
    for idx, (typ, gid) in enumerate([("IB/RoCE v1", "fe80:0000:0000:0000:0000:0000:0000:0001"),
                                      ("RoCE v2", "fe80:0000:0000:0000:0000:0000:0000:0001"),
                                      ("RoCE v2", "0000:0000:0000:0000:0000:ffff:0a00:0005")]):
        (roce / "gid_attrs/types").mkdir(parents=True, exist_ok=True)
        (roce / "gids").mkdir(exist_ok=True)
        (roce / f"gid_attrs/types/{idx}").write_text(typ + "\n")
        (roce / f"gids/{idx}").write_text(gid + "\n")
    (tmp_path / "proc/net").mkdir(parents=True)
    (tmp_path / "proc/net/route").write_text(
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
        "docker0\t00000000\t010011AC\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        "ens10f0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n")
    node = Node(tmp_path, runner=lambda *a: None, live=False)
    ne = ncclenv.derive(node, {"NCCL_DEBUG": "WARN"}, multi_node=True)
    assert ne.values["NCCL_IB_HCA"] == "=mlx5_0:1,mlx5_2:1"  # the DOWN port is left out
    assert ne.values["NCCL_IB_GID_INDEX"] == "2"  # the first RoCE v2 GID that is not link-local
    assert ne.values["NCCL_SOCKET_IFNAME"] == "ens10f0"  # docker0's default route is not a node interface
    assert ne.sources["NCCL_DEBUG"] == "environment" and ne.sources["NCCL_IB_HCA"].startswith("derived")
    # The operator wins: the environment over what was derived, --nccl-env over both.
    ne = ncclenv.derive(node, {"NCCL_SOCKET_IFNAME": "lo"}, multi_node=True,
                        overrides=ncclenv.parse_overrides(["NCCL_IB_HCA=mlx5_1"]))
    assert ne.values["NCCL_SOCKET_IFNAME"] == "lo" and ne.sources["NCCL_SOCKET_IFNAME"] == "environment"
    assert ne.values["NCCL_IB_HCA"] == "mlx5_1" and ne.sources["NCCL_IB_HCA"] == "--nccl-env"
    # One node: the socket interface is NCCL's business.
    assert "NCCL_SOCKET_IFNAME" not in ncclenv.derive(node, {}, multi_node=False).values


def test_no_hca_and_no_route_derives_nothing_and_says_why(tmp_path):
    node = Node(tmp_path, runner=lambda *a: None, live=False)
    ne = ncclenv.derive(node, {}, multi_node=True)
    assert ne.values == {} and "NCCL_SOCKET_IFNAME" in ne.notes[0]


@pytest.mark.parametrize("bad", ["NCCL_IB_HCA", "nccl_x=1", "=3"])
def test_bad_nccl_env_override_is_a_usage_error(bad):
    with pytest.raises(Exception, match="KEY=VALUE"):
        ncclenv.parse_overrides([bad])


def test_debug_env_keeps_the_operators_own_log():
    assert ncclenv.debug_env({"NCCL_DEBUG_FILE": "/var/log/x.%h"}, "/tmp/a") == {}
    assert ncclenv.debug_env({}, "/tmp/a") == {"NCCL_DEBUG_FILE": "/tmp/a", "NCCL_DEBUG": "INFO",
                                                "NCCL_DEBUG_SUBSYS": "INIT,NET,ENV"}
    assert ncclenv.debug_env({"NCCL_DEBUG": "info"}, "/tmp/a") == {"NCCL_DEBUG_FILE": "/tmp/a"}


# ---------------------------------------------------------------- NCCL INFO logs (recorded on two H200)
def test_nccl_log_inside_one_node_is_p2p():
    t = parse_nccl_info((NCCL_LOGS / "h200x2-innode-rank0.log").read_text())
    assert t.version == "2.28.9+cuda13.0" and t.network == "Socket" and t.ib_found is False
    assert (t.nranks, t.nnodes, t.local_ranks) == (2, 1, 2)
    assert t.channels == {"P2P/CUMEM": 24} and not t.gdr


def test_nccl_log_of_two_socket_nodes():
    t = parse_nccl_info((NCCL_LOGS / "h200x2-two-nodes-sockets-rank0.log").read_text())
    assert t.net_devices == ["lo:127.0.0.1"] and (t.nnodes, t.local_ranks) == (2, 1)
    assert t.channels == {"NET/Socket": 4}


def test_nccl_log_over_infiniband_with_gpudirect():
    # Lines in the format of NCCL's net.cc / p2p.cc / init.cc INFO messages (2.28 source), IB plugin in use.
    text = "\n".join([
        "n1:10:10 [0] NCCL INFO NET/Plugin: Could not find: libnccl-net.so",
        "n1:10:10 [0] NCCL INFO NET/IB : Using [0]mlx5_0:1/IB [1]mlx5_3:1/IB ; OOB ens10f0:10.0.0.5<0>",
        "n1:10:10 [0] NCCL INFO Using network IB",
        "n1:10:10 [0] NCCL INFO comm 0x1 rank 0 nRanks 16 nNodes 2 localRanks 8 localRank 0 MNNVL 0",
        "n1:10:10 [0] NCCL INFO Channel 00/0 : 8[0] -> 0[0] [receive] via NET/IB/0/GDRDMA",
        "n1:10:10 [0] NCCL INFO Channel 00/0 : 0[0] -> 8[0] [send] via NET/IB/0/GDRDMA",
        "n1:10:10 [0] NCCL INFO Channel 01/0 : 0[0] -> 1[1] via P2P/CUMEM/read",
        "n1:10:10 [0] NCCL INFO Channel 02/0 : 0[0] -> 2[2] via SHM/direct/direct",
    ])
    t = parse_nccl_info(text)
    assert t.network == "IB" and t.ib_found and t.net_devices == ["mlx5_0:1/IB", "mlx5_3:1/IB"]
    assert t.channels == {"NET/IB": 2, "P2P/CUMEM": 1, "SHM": 1} and t.gdr


def _nccl_run(views, ranks=2):
    summary = transport_summary(views, None)
    return BenchRun("nccl", info={"backend": "nccl", "ranks": ranks, "transport": summary})


def _view(host, log, ib=()):
    return {"host": host, "log": parse_nccl_info((NCCL_LOGS / log).read_text()).to_dict(),
            "ib_devices": list(ib), "ib_up": [], "ib_up_gbps": 0}


def test_multi_node_on_sockets_warns_only_where_rdma_devices_exist():
    log = "h200x2-two-nodes-sockets-rank0.log"
    out = outcomes(_nccl_run([_view("a", log), _view("b", log)]), None)["nccl_transport"]
    assert [o.status for o in out] == ["pass"] and "2 node(s)" in out[0].observed
    out = outcomes(_nccl_run([_view("a", log, ["mlx5_0:1"]), _view("b", log)]), None)["nccl_transport"]
    assert out[0].status == "warn" and "mlx5_0:1" in out[0].observed and "NCCL_IB_HCA" in out[0].remedy


def test_one_node_on_p2p_passes_and_on_the_network_warns():
    run = _nccl_run([_view("a", "h200x2-innode-rank0.log"), _view("a", "h200x2-innode-rank1.log")])
    assert outcomes(run, None)["nccl_transport"][0].status == "pass"
    log = parse_nccl_info((NCCL_LOGS / "h200x2-two-nodes-sockets-rank0.log").read_text()).to_dict()
    log["nnodes"] = 1
    views = [{"host": "a", "log": log, "ib_devices": [], "ib_up": [], "ib_up_gbps": 0}] * 2
    assert outcomes(_nccl_run(views), None)["nccl_transport"][0].status == "warn"
