"""Chapter 4: full fine-tuning sharded with FSDP over 2 CPU processes (gloo), against one plain process.

Both runs train the tiny test model on the same global batch of course conversations, launched as a learner would
(`accelerate launch --config_file ftkit/chapters/scaling/fsdp_cpu_2proc.yaml -m ftkit.chapters.scaling.worker`, and
plain python). The tiny model is too small for the memory rules to decide (they say so); notebook 4.1 measures the
built-in model, and the rules flip with made-up numbers below and in tests/test_claim_rules.py.
"""

import json
import time
from pathlib import Path

import pytest
import torch
import yaml

import ftkit
from ftkit.chapters import scaling as S
from ftkit.chapters.scaling import sharded, verdicts, worker
from ftkit.core.claims import NOT_SETTLED
from ftkit.tools.notebooks import ROOT
from ftkit.core.memory import GB
from ftkit.core.builtin import model_path

STEPS, BATCH, LR = 4, 4, 1e-3  # lr 1e-3: the tiny random model's loss moves visibly in 4 steps


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(single, sharded): metrics of a 1-process and a 2-process FSDP run, same global batch, both saved."""
    kw = dict(max_steps=STEPS, batch_size=BATCH, learning_rate=LR, progress=False)
    single = S.run_sharded("tiny-random", n_processes=1, output_dir=tmp_path_factory.mktemp("single"), **kw)
    sharded = S.run_sharded("tiny-random", n_processes=2, output_dir=tmp_path_factory.mktemp("fsdp"), **kw)
    return single, sharded


def test_two_processes_really_ran_fsdp(runs):
    single, sharded = runs
    assert (sharded["n_processes"], sharded["distributed_type"], sharded["fsdp_version"]) == (2, "FSDP", 2)
    assert (single["n_processes"], single["distributed_type"]) == (1, "NO")
    assert [row["rank"] for row in sharded["per_process_bytes"]] == [0, 1]
    units = sharded["fsdp_units"]  # one per decoder layer, and the tied embedding with the final norm
    assert len(units) == 3 and sum(u["params"] for u in units) == sharded["n_params"] and not single["fsdp_units"]
    assert {"lm_head", "model.norm", "model.embed_tokens"} in [set(u["modules"]) for u in units]


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
        est = ftkit.estimate_memory(cfg, "full", seq_len=run["row_length"], batch_size=BATCH // run["n_processes"],
                                    precision="fp32", **kw)
        rank0 = run["per_process_bytes"][0]
        assert est.weights == pytest.approx(rank0["weights"], rel=1e-3)
        assert est.gradients == pytest.approx(rank0["gradients"], rel=1e-3)
        assert est.optimizer == pytest.approx(rank0["optimizer"], rel=1e-3)


def test_memory_is_measured_and_the_tiny_model_is_too_small_to_decide(runs):
    single, sharded = runs
    assert S.bytes_per_param(single) == pytest.approx(16, abs=0.01)  # the count: fp32 4 + 4 + 8, by construction
    for run in runs:
        for rank in range(run["n_processes"]):
            after, peak = S.measured(run, rank=rank), S.measured(run, "peak", rank=rank)
            assert len(after) == STEPS and len(peak) == 1 and 0 < after[-1] <= peak[0]  # the last step's peak
    for v in (S.sixteen_bytes_verdict(single), S.sharding_verdict(single, sharded)):
        assert v.outcome == NOT_SETTLED and "too small" in v.detail, v.line()


def test_meter_sees_a_tensor_that_lives_only_inside_the_step():
    meter = worker.Meter(cuda=False)
    if "mallinfo2" not in meter.kind["allocated"]:
        pytest.skip("no glibc here: the CPU allocator reports nothing")
    size = 64 * 2**20
    before = meter.now()
    with meter.watch() as seen:
        x = torch.ones(size // 4)  # 64 MiB, freed before the block ends: no count of kept tensors sees it
        time.sleep(0.05)
        del x
    assert seen["trace"] and max(value for _, value in seen["trace"]) == seen["allocated"]
    after = meter.now()
    # the whole tensor, less 1 MiB for what the interpreter frees meanwhile (36 KB in one run); unseen it would be ~0
    assert seen["allocated"] - before["allocated"] >= size - 2**20
    assert abs(after["allocated"] - before["allocated"]) < size / 8


def test_loss_curve_matches_single_process(runs):
    single, sharded = runs
    v = S.loss_match_verdict(single, sharded)
    assert v.holds, v.detail
    assert single["losses"][-1] < single["losses"][0] - 0.01  # it trained (a broken loop would not move)
    rows = sharded["per_process_bytes"]
    ranks, tokens = [row["losses"] for row in rows], [row["answer_tokens"] for row in rows]
    # each process saw its own share of the batch: its loss is not the global one; weighted by its answer tokens it is
    assert max(abs(a - b) for a, b in zip(*ranks)) > 10 * verdicts.LOSS_TOLERANCE
    for step, loss in enumerate(sharded["losses"]):
        n = [t[step] for t in tokens]
        assert loss == pytest.approx((ranks[0][step] * n[0] + ranks[1][step] * n[1]) / sum(n), abs=1e-6)


def test_both_runs_train_as_the_course_does(runs):
    """Answer-only loss, clipping at the Trainer's 1.0 (and the DeepSpeed config's), cosine: the same in both runs."""
    single, sharded = runs
    rows = S.course_rows(model_path("tiny-random"), 2, 128)
    first_answer = (rows["labels"] != -100).int().argmax(dim=1)
    assert (first_answer > 10).all() and (rows["labels"][rows["attention_mask"] == 0] == -100).all()
    assert single["max_grad_norm"] == sharded["max_grad_norm"] == 1.0 and single["lr_scheduler"] == "cosine"
    assert single["learning_rates"] == pytest.approx(sharded["learning_rates"]) and single["learning_rates"][0] == LR
    assert single["learning_rates"][-1] < LR / 2  # cosine to 0 over the run
    assert single["grad_norms"] == pytest.approx(sharded["grad_norms"], rel=1e-4)  # the GLOBAL norm, not a shard's
    deepspeed = yaml.safe_load((ROOT / "configs" / "accelerate" / "deepspeed_zero3.yaml").read_text())
    assert deepspeed["deepspeed_config"]["gradient_clipping"] == worker.parse_args(["--out", "x"]).max_grad_norm


@pytest.mark.parametrize("name", worker.SCHEDULES)
def test_the_schedules_are_transformers_own(name):
    from transformers import get_scheduler

    ours = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD([torch.zeros(1)], lr=1.0), worker.lr_factor(name, 3, 10))
    theirs = get_scheduler(name, torch.optim.SGD([torch.zeros(1)], lr=1.0), num_warmup_steps=3, num_training_steps=10)
    for _ in range(10):
        assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr())
        ours.step()
        theirs.step()


def test_a_deepspeed_config_that_clips_otherwise_is_refused():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    plugin = SimpleNamespace(deepspeed_config={"gradient_clipping": 0.5})
    accelerator = SimpleNamespace(distributed_type=DistributedType.DEEPSPEED,
                                  state=SimpleNamespace(deepspeed_plugin=plugin))
    with pytest.raises(SystemExit, match="clips at 0.5"):
        worker.check_clipping(accelerator, 1.0)
    worker.check_clipping(accelerator, 0.5)


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
    with pytest.raises(ValueError, match="steps"):
        S.loss_gap(single, run(2, 200, [2.0]))


def test_memory_verdicts_flip_with_made_up_measurements():
    """A model of 10^8 parameters (1.6 GB of states) measured over 3 steps; tests/test_claim_rules.py does the rest."""
    def run(n, after, peak, params=10**8):
        memory = {"allocated": {"start": 0, "after_update": after, "peak": peak}}
        rows = [{"rank": r, "weights": 4 * params // n, "gradients": 4 * params // n, "optimizer": 8 * params // n,
                 "memory": memory} for r in range(n)]
        return {"n_processes": n, "n_params": params, "per_process_bytes": rows}

    single = run(1, [1.62e9, 1.63e9, 1.62e9], [1.8e9] * 3)
    assert S.sixteen_bytes_verdict(single).holds
    assert not S.sixteen_bytes_verdict(run(1, [2.0e9] * 3, [2.2e9] * 3)).holds  # 20 bytes a parameter
    assert S.sixteen_bytes_verdict(run(1, [1.5e9, 1.7e9, 1.65e9], [1.8e9] * 3)).outcome == NOT_SETTLED  # noisy
    assert S.sharding_verdict(single, run(2, [0.83e9] * 3, [1.1e9] * 3)).holds
    assert not S.sharding_verdict(single, run(2, [1.2e9] * 3, [1.4e9] * 3)).holds  # ZeRO-1's share, not 1/2
    tiny = run(1, [1.7e6] * 3, [2e6] * 3, params=10**5)
    assert S.sixteen_bytes_verdict(tiny).outcome == NOT_SETTLED


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


def test_offload_leaves_the_16_bit_weights_and_gradients_on_the_gpus():
    """ZeRO-Offload / FSDP CPU offload: 12 of the 16 bytes go to host RAM; 70B over 8 GPUs keeps ~32 GiB on each."""
    rows = S.sharding_table({"70B": "meta-llama/Llama-2-70b-hf"}, device_counts=(8,), stages=("zero3", S.OFFLOAD))
    zero3, offload = rows
    params = zero3["params_b"] * 1e9
    assert offload["bytes_per_param"] == pytest.approx(4 / 8, rel=1e-3) and zero3["bytes_per_param"] == pytest.approx(2)
    assert offload["gib"] == pytest.approx(4 * params / 8 / GB, rel=1e-3) and 31 < offload["gib"] < 33
    assert offload["host_gib"] * GB / 1e9 == pytest.approx(12 * params / 1e9, rel=1e-3)  # ~828 GB
    assert zero3["host_gib"] == 0


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


def test_cluster_verdict_flips_and_says_without_offload():
    models = {"1B": "meta-llama/Llama-3.2-1B", "7B": "meta-llama/Llama-2-7b-hf", "70B": "meta-llama/Llama-2-70b-hf"}
    rows = S.sharding_table(models, stages=("zero3", S.OFFLOAD))
    qlora_7b = ftkit.estimate_memory(models["7B"], "qlora", seq_len=512, batch_size=1, gradient_checkpointing=True)
    v = S.cluster_verdict(rows, qlora_7b, ftkit.GPUS["H100 80 GB"] - 1)
    assert v.holds and "without offload" in v.detail and "more than one 8-GPU node" in v.detail
    assert "32 GiB on each of 8 GPUs: one node holds it" in v.detail
    assert not S.cluster_verdict(rows, qlora_7b, 1000.0, gpu="1 TB").holds  # 1 TB cards: 70B fits a node
    assert not S.cluster_verdict(rows, qlora_7b, ftkit.GPUS["H100 80 GB"] - 1, bytes_per_param_measured=8).holds
