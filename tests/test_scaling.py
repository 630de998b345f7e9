"""Chapter 4: full fine-tuning sharded with FSDP over 2 CPU processes (gloo), against one plain process.

Both runs train the tiny test model on the same global batch of packed course text, launched as a learner would
(`accelerate launch --config_file ftkit/chapters/scaling/fsdp_cpu_2proc.yaml -m ftkit.chapters.scaling.worker`, and
plain python).
"""

import json
from pathlib import Path

import pytest

import ftkit
from ftkit.chapters import scaling as S
from ftkit.chapters.scaling import sharded, verdicts
from ftkit.tools.notebooks import ROOT
from ftkit.core.memory import GB
from ftkit.core.builtin import model_path

STEPS, BATCH, SEQ, LR = 4, 4, 64, 1e-3  # lr 1e-3: the tiny random model's loss moves visibly in 4 steps


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(single, sharded): metrics of a 1-process and a 2-process FSDP run, same global batch, both saved."""
    kw = dict(max_steps=STEPS, batch_size=BATCH, seq_len=SEQ, learning_rate=LR, progress=False)
    single = S.run_sharded("tiny-random", n_processes=1, output_dir=tmp_path_factory.mktemp("single"), **kw)
    sharded = S.run_sharded("tiny-random", n_processes=2, output_dir=tmp_path_factory.mktemp("fsdp"), **kw)
    return single, sharded


def test_two_processes_really_ran_fsdp(runs):
    single, sharded = runs
    assert (sharded["n_processes"], sharded["distributed_type"], sharded["fsdp_version"]) == (2, "FSDP", 2)
    assert (single["n_processes"], single["distributed_type"]) == (1, "NO")
    assert [row["rank"] for row in sharded["per_process_bytes"]] == [0, 1]


@pytest.mark.parametrize("bucket", ["parameters", "gradients", "optimizer"])
def test_each_process_holds_half(runs, bucket):
    single, sharded = runs
    holds, detail = S.sharding_holds(single, sharded, bucket)
    assert holds, detail
    whole = single["per_process_bytes"][0][bucket]
    assert whole == sharded["unsharded_bytes"][bucket]  # the 2-process run saw the same model whole before sharding
    assert sum(S.per_process(sharded, bucket)) == pytest.approx(whole, rel=1e-3)  # halves, not two copies


def test_estimator_predicts_the_per_process_bytes(runs):
    """estimate_memory(..., n_devices=2, sharding="fsdp") against what each process measured."""
    single, sharded = runs
    cfg = model_path("tiny-random")
    for run, kw in ((single, {}), (sharded, dict(n_devices=2, sharding="fsdp"))):
        est = ftkit.estimate_memory(cfg, "full", seq_len=SEQ, batch_size=BATCH // run["n_processes"],
                                    precision="fp32", **kw)
        rank0 = run["per_process_bytes"][0]
        assert est.weights == pytest.approx(rank0["weights"], rel=1e-3)
        assert est.gradients == pytest.approx(rank0["gradients"], rel=1e-3)
        assert est.optimizer == pytest.approx(rank0["optimizer"], rel=1e-3)


def test_sixteen_bytes_per_parameter(runs):
    v = S.sixteen_bytes_verdict(runs[0])
    assert v.holds, v.detail


def test_loss_curve_matches_single_process(runs):
    single, sharded = runs
    v = S.loss_match_verdict(single, sharded)
    assert v.holds, v.detail
    assert single["losses"][-1] < single["losses"][0] - 0.01  # it trained (a broken loop would not move)
    ranks = [row["losses"] for row in sharded["per_process_bytes"]]
    # each process saw its own half of the batch: its loss is not the global one, their mean is
    assert max(abs(a - b) for a, b in zip(*ranks)) > 10 * verdicts.LOSS_TOLERANCE
    for step, loss in enumerate(sharded["losses"]):
        assert loss == pytest.approx((ranks[0][step] + ranks[1][step]) / 2, abs=1e-6)


def test_gathered_checkpoint_loads_and_equals_single_process(runs):
    single, sharded = runs
    diff = S.max_weight_diff(sharded["checkpoint"], single["checkpoint"])
    v = S.checkpoint_verdict(diff)
    assert v.holds, v.detail
    trained = S.max_weight_diff(sharded["checkpoint"], model_path("tiny-random"))
    assert trained > 1e-4  # it holds the trained weights, not the initial ones
    cfg = json.loads(Path(sharded["checkpoint"], "config.json").read_text())
    assert cfg["model_type"] == "llama"


def test_verdicts_flip_with_made_up_numbers():
    def run(n, weights, losses, rank_losses=None):
        rows = [{"rank": r, "weights": weights, "gradients": weights, "optimizer": 2 * weights,
                 "losses": (rank_losses or [losses] * n)[r]} for r in range(n)]
        return {"n_processes": n, "n_params": 100, "losses": losses, "per_process_bytes": rows}

    single = run(1, 400, [2.0, 1.5])
    assert S.sharding_holds(single, run(2, 200, [2.0, 1.5]))[0]
    assert not S.sharding_holds(single, run(2, 400, [2.0, 1.5]))[0]  # two whole copies: plain data parallel
    assert S.loss_match_verdict(single, run(2, 200, [2.0, 1.5 + 5e-5])).holds
    assert not S.loss_match_verdict(single, run(2, 200, [2.0, 1.52])).holds
    assert S.checkpoint_verdict(1e-7).holds and not S.checkpoint_verdict(1e-2).holds
    assert S.sixteen_bytes_verdict(single).holds
    assert not S.sixteen_bytes_verdict(run(1, 200, [2.0])).holds  # 8 bytes per parameter: bf16 everything
    with pytest.raises(ValueError, match="steps"):
        S.loss_gap(single, run(2, 200, [2.0]))


def test_launch_command():
    one = sharded.launch_command(1, ["--out", "x"])
    assert one[1:3] == ["-m", "ftkit.chapters.scaling.worker"] and "accelerate" not in " ".join(one)
    two = sharded.launch_command(2, ["--out", "x"])
    assert two[1:4] == ["-m", "accelerate.commands.launch", "--config_file"]
    assert two[two.index("--num_processes") + 1] == "2" and two[-4:] == ["--module", sharded.WORKER, "--out", "x"]
    with pytest.raises(ValueError, match="n_processes"):
        sharded.launch_command(0, [])


def test_zero_paper_figure_1():
    """ZeRO paper, fig. 1: a 7.5B model on 64 GPUs needs 120 / 31.4 / 16.6 / 1.9 GB per GPU for its model states."""
    rows = S.sharding_table({"7.5B": "meta-llama/Llama-2-7b-hf"}, device_counts=(1, 64))
    per_param = {(r["sharding"], r["n_devices"]): r["bytes_per_param"] for r in rows}
    for stage, gb in (("none", 120), ("zero1", 31.4), ("zero2", 16.6), ("zero3", 1.9)):
        assert 7.5 * per_param[stage, 64] == pytest.approx(gb, rel=0.02), stage
    assert per_param["none", 1] == per_param["none", 64] == pytest.approx(16, rel=1e-6)
    gib = {(r["sharding"], r["n_devices"]): r["gib"] for r in rows}
    assert S.smallest_n(rows, "7.5B", "zero3", 80) == 64 and S.smallest_n(rows, "7.5B", "none", 80) is None
    assert gib["zero3", 64] * 64 == pytest.approx(gib["zero3", 1], rel=1e-6)


def test_sharding_arguments_are_checked():
    with pytest.raises(ValueError, match="sharding"):
        ftkit.estimate_memory("Qwen2.5-0.5B", "full", seq_len=8, batch_size=1, sharding="zero4")
    with pytest.raises(ValueError, match="n_devices"):
        ftkit.estimate_memory("Qwen2.5-0.5B", "full", seq_len=8, batch_size=1, n_devices=0)
    with pytest.raises(ValueError, match="stage"):
        S.sharding_table({"x": "Qwen2.5-0.5B"}, stages=("zero9",))
    # QLoRA + FSDP (the 70B recipe): the 4-bit base is sharded like any weight
    one = ftkit.estimate_memory("Llama-2-70b-hf", "qlora", seq_len=512, batch_size=1)
    two = ftkit.estimate_memory("Llama-2-70b-hf", "qlora", seq_len=512, batch_size=1, n_devices=2, sharding="fsdp")
    assert two.weights == pytest.approx(one.weights / 2, rel=1e-6) and two.activations == one.activations
    assert one.weights > 30 * GB > two.weights



@pytest.mark.parametrize("config_file", [ROOT / "configs" / "accelerate" / "fsdp_1node_gpus.yaml", sharded.CPU_CONFIG])
@pytest.mark.parametrize("model_type, layer_class", [("llama", "LlamaDecoderLayer"), ("qwen2", "Qwen2DecoderLayer")])
def test_fsdp_configs_wrap_each_decoder_layer_of_any_model(monkeypatch, config_file, model_type, layer_class):
    # the GPU config's example trains Qwen2.5-7B: a class named in the config (LlamaDecoderLayer) would not be found
    from accelerate import FullyShardedDataParallelPlugin
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from accelerate.utils.launch import prepare_multi_gpu_env
    from transformers import AutoConfig, AutoModelForCausalLM

    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(["--config_file", str(config_file), "x.py"]))
    for key, value in prepare_multi_gpu_env(args).items():  # the FSDP_* variables `accelerate launch` sets
        if key.startswith("FSDP_"):
            monkeypatch.setenv(key, value)
    config = AutoConfig.for_model(model_type, vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=2, num_key_value_heads=1)
    model = AutoModelForCausalLM.from_config(config)
    policy = fsdp2_prepare_auto_wrap_policy(FullyShardedDataParallelPlugin(), model)
    assert sorted({type(m).__name__ for m in model.modules() if policy(m)}) == [layer_class]


def test_sharding_and_cluster_verdicts_flip():
    single = {"n_processes": 1, "per_process_bytes": [{"rank": 0, "weights": 400, "gradients": 400, "optimizer": 800}]}
    halves = {"n_processes": 2, "per_process_bytes": [{"rank": r, "weights": 200, "gradients": 200, "optimizer": 400}
                                                      for r in (0, 1)]}
    assert S.sharding_verdict(single, halves).holds
    halves["per_process_bytes"][1]["optimizer"] = 800  # one bucket not sharded: the verdict must see it
    assert not S.sharding_verdict(single, halves).holds
    models = {"1B": "meta-llama/Llama-3.2-1B", "7B": "meta-llama/Llama-2-7b-hf", "70B": "meta-llama/Llama-2-70b-hf"}
    rows = S.sharding_table(models, stages=("zero3",))
    qlora_7b = ftkit.estimate_memory(models["7B"], "qlora", seq_len=512, batch_size=1, gradient_checkpointing=True)
    v = S.cluster_verdict(rows, qlora_7b, ftkit.GPUS["H100 80 GB"] - 1)
    assert v.holds and "more than one 8-GPU node" in v.detail
    assert not S.cluster_verdict(rows, qlora_7b, 1000.0, gpu="1 TB").holds  # 1 TB cards: 70B fits a node
