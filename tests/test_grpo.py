"""GRPO (issue 12): advantages and losses against hand-computed numbers, reward wiring through the verifier, one
log-prob code path for sampling and training, learning a toy task with every loss, exact resume, dynamic
sampling, and `reasonless grpo` end to end on a tiny trained run."""
import json
import math
import shutil

import numpy as np
import pytest
import torch

from reasonless import checkpoint as ck
from reasonless import grpo as G
from reasonless.cli import main
from reasonless.corpus import generate
from reasonless.evaluate import load_problems
from reasonless.interchange import export_tokens
from reasonless.model import Model, ModelConfig
from reasonless.sample import Sampling, generate_groups
from reasonless.vocab import CLOSE, CREATE, END, PLAN, REASONING, SOLUTION

TINY = dict(n_layer=1, d_model=32, n_head=2, n_kv_head=1, d_ff=64)
TARGET = 7  # the toy task's answer, also its stop token


def toy_model(seed=0, dtype=torch.float32, vocab=16):
    torch.manual_seed(seed)
    return Model(ModelConfig(vocab_size=vocab, max_seq_len=64, **TINY)).to(dtype)


def save_init(path, model):
    ck.save_checkpoint(path, 0, model, model.config.to_dict(), None, {})
    return path


def toy_task(n_prompts=16, reward=None, components=("hit",), budget=3):
    """Reward 1 when the response's first token is TARGET (which also stops it): optimum 1.0."""
    rng = np.random.default_rng(0)
    prompts = [rng.integers(4, 16, size=3) for _ in range(n_prompts)]
    if reward is None:
        def reward(problems, responses):
            return {"hit": np.array([float(len(r) > 0 and r[0] == TARGET) for r in responses])}
    return G.PromptTask(prompts, reward, components, budget=budget, stop_ids=(TARGET,))


@pytest.fixture(autouse=True)
def one_thread():
    """Generating a corpus (numba) leaves torch's OpenMP pool at every core, and tiny models on shared cores are
    then many times slower; the runs below also pass threads=1, as a user on a busy machine would."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def stable(record):
    """A metrics line without its wall-clock fields."""
    return {k: v for k, v in record.items() if not k.startswith("time_") and k != "tokens_per_s"}


# ------------------------------------------------------------------------------------------------ advantages


def test_advantages_by_hand():
    rewards = [[1, 0, 0, 1], [0, 0, 0, 0]]
    # group: mean 0.5, sample std sqrt(1/3) = 0.57735; 0.5 / (0.57735 + 1e-4)
    a = 0.8658754297607016
    np.testing.assert_allclose(G.group_advantages(rewards, "group"), [[a, -a, -a, a], [0, 0, 0, 0]], atol=1e-12)
    # batch: std of all eight rewards (mean 0.25, squares 1.5 / 7) = 0.46291
    b = 1.0798901667961847
    np.testing.assert_allclose(G.group_advantages(rewards, "batch"), [[b, -b, -b, b], [0, 0, 0, 0]], atol=1e-12)
    np.testing.assert_allclose(G.group_advantages(rewards, "none"), [[.5, -.5, -.5, .5], [0, 0, 0, 0]])
    # a masked row takes no part: mean 2/3 of the three valid rows, std sqrt(1/3)
    got = G.group_advantages([[1, 0, 1, 0]], "group", valid=[[True, True, True, False]])
    np.testing.assert_allclose(got, [[0.5772502865071344, -1.1545005730142688, 0.5772502865071344, 0]], atol=1e-12)
    with pytest.raises(ValueError, match="scale_rewards"):
        G.group_advantages(rewards, "rank")
    signal = G.groups_with_signal([[1, 1, 1], [1, 0, 1], [0, 1, 1]], valid=[[1, 1, 1], [1, 1, 1], [0, 1, 1]])
    assert signal.tolist() == [False, True, False]


# ------------------------------------------------------------------------------------------------ losses


def loss_inputs():
    """Two rows, A = +1 (3 tokens) and A = -2 (1 token; the padding holds junk that must not count).
    Row 0: ratio e^0.5 (clipped above), 1, 0.5 (below 1 - eps with A > 0: the unclipped term wins);
    row 1: ratio e^-0.5 (clipped below)."""
    old = torch.zeros(2, 3, dtype=torch.float64)
    logp = torch.tensor([[0.5, 0.0, math.log(0.5)], [-0.5, 5.0, -7.0]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    adv = torch.tensor([1.0, -2.0], dtype=torch.float64)
    return logp, old, adv, mask


@pytest.mark.parametrize("loss_type,expected", [
    ("grpo", ((-1.2 - 1.0 - 0.5) / 3 + 1.6) / 2),   # mean per row, then over rows = 0.35
    ("dapo", (-1.2 - 1.0 - 0.5 + 1.6) / 4),          # mean over the 4 tokens = -0.275
    ("dr_grpo", (-1.2 - 1.0 - 0.5 + 1.6) / (2 * 5)),  # token sum / (rows x budget 5) = -0.11
])
def test_loss_by_hand(loss_type, expected):
    logp, old, adv, mask = loss_inputs()
    loss, stats = G.policy_loss(logp, old, adv, mask, loss_type, budget=5)
    assert float(loss.detach()) == pytest.approx(expected, abs=1e-12)
    assert stats["clip_frac_low"] == 0.25 and stats["clip_frac_high"] == 0.25 and stats["kl"] is None


def test_clipped_tokens_carry_no_gradient():
    logp, old, adv, mask = loss_inputs()
    loss, _ = G.policy_loss(logp, old, adv, mask, "grpo")
    loss.backward()
    # grpo weights: 1 / (3 tokens x 2 rows) on row 0; d/dlogp of -A·ratio is -A·ratio
    np.testing.assert_allclose(logp.grad.numpy(), [[0.0, -1 / 6, -0.5 / 6], [0.0, 0.0, 0.0]], atol=1e-12)


def test_asymmetric_clip_by_hand():
    logp, old, adv, mask = loss_inputs()
    loss, stats = G.policy_loss(logp, old, adv, mask, "grpo", clip_low=0.1, clip_high=0.28)
    # row 0 first token clipped at 1.28; row 1 at 0.9: -(-2)·0.9 = 1.8
    assert float(loss.detach()) == pytest.approx(((-1.28 - 1.0 - 0.5) / 3 + 1.8) / 2, abs=1e-12)
    loss, stats = G.policy_loss(logp, old, adv, mask, "dapo", clip_low=0.1, clip_high=0.7)
    # e^0.5 = 1.6487 < 1.7: no longer clipped above
    assert float(loss.detach()) == pytest.approx((-math.exp(0.5) - 1.0 - 0.5 + 1.8) / 4, abs=1e-12)
    assert stats["clip_frac_high"] == 0.0 and stats["clip_frac_low"] == 0.25


def test_k3_kl_by_hand():
    logp = torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64)
    ref = torch.tensor([0.5, -0.5, 0.0], dtype=torch.float64)
    _, info = G.token_losses(logp, logp, torch.zeros(3, dtype=torch.float64), 0.2, 0.2, beta=1.0, ref_logp=ref)
    # e^d - d - 1 with d = ref - logp
    np.testing.assert_allclose(info["kl"].numpy(), [math.exp(0.5) - 1.5, math.exp(-0.5) - 0.5, 0.0], atol=1e-15)
    logp, old, adv, mask = loss_inputs()
    ref = logp.detach() + 0.5
    loss, stats = G.policy_loss(logp, old, adv, mask, "grpo", beta=0.1, ref_logp=ref)
    k3 = math.exp(0.5) - 1.5
    assert float(loss.detach()) == pytest.approx(0.35 + 0.1 * k3, abs=1e-12)
    assert stats["kl"] == pytest.approx(k3, abs=1e-12)
    with pytest.raises(ValueError, match="reference"):
        G.token_losses(logp, old, adv[:, None], 0.2, 0.2, beta=0.1)
    with pytest.raises(ValueError, match="budget"):
        G.row_weights([3, 1], "dr_grpo")


def test_config_and_reward_spec_errors():
    assert G.parse_reward("plan_valid=1, trace_valid_strict=0.5") == {"plan_valid": 1.0, "trace_valid_strict": 0.5}
    for spec, msg in (("plan_valid=x", "not a number"), ("=1", "NAME=WEIGHT"), ("a=1,a=2", "twice"),
                      ("a=inf", "finite")):
        with pytest.raises(ValueError, match=msg):
            G.parse_reward(spec)
    for kw, msg in ((dict(group=1), "--group"), (dict(temperature=0.0), "--temperature"), (dict(loss="ppo"), "--loss"),
                    (dict(scale_rewards="x"), "--scale-rewards"), (dict(truncated="drop"), "--truncated"),
                    (dict(clip_low=1.0), "--clip-low"), (dict(beta=-1.0), "--beta"), (dict(minibatch=0), "--minibatch"),
                    (dict(reward={"plan_vaild": 1.0}), "plan_vaild"), (dict(lr=0.0), "--lr")):
        with pytest.raises(ValueError, match=msg):
            G.GRPOConfig(**kw).validate(G.MAZE_COMPONENTS)


# ------------------------------------------------------------------------------------------------ rewards


@pytest.fixture(scope="module")
def maze_corpus(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("grpo_corpus") / "c", "kruskal", 6, rows=5, cols=5, seed=3)


def reference(example, costs=True):
    """`reasoning` … `end` of the example's own A* trace and plan (without cost tokens if not costs)."""
    toks = example.tokens().astype(np.int64).tolist()
    resp = toks[toks.index(REASONING):-1]
    if costs:
        return resp
    out, k = [], 0
    while k < len(resp):
        if resp[k] in (CREATE, CLOSE):
            out += resp[k:k + 3]
            k += 5
        else:
            out.append(resp[k])
            k += 1
    return out


def test_reward_wiring_on_hand_made_responses(maze_corpus):
    task = G.MazeTask(maze_corpus, "correct")
    idx = np.array([0, 1])
    batch = task.problems(idx)
    expected_prompts = load_problems(maze_corpus, 2).prompts
    assert all(np.array_equal(a, b) for a, b in zip(batch.prompts, expected_prompts))
    ex0, ex1 = maze_corpus[0], maze_corpus[1]
    good = reference(ex0)
    plan = good[good.index(SOLUTION):]
    no_trace = [REASONING] + plan                              # valid plan, no search at all
    swapped = reference(ex1)[:reference(ex1).index(SOLUTION)] + plan  # another maze's search, own plan
    assert reference(ex1)[:-3] != good[:-3]
    garbage = [PLAN, 3, 9, 11, 2, 40, END]
    responses = [good, no_trace, swapped, garbage, good]
    stopped = np.array([True, True, True, True, False])  # the last one hit its budget
    rows = np.zeros(len(responses), dtype=np.int64)
    raw = task.rewards(batch, rows, [np.array(r) for r in responses])
    assert raw["plan_valid"].tolist() == [1, 1, 1, 0, 1]
    assert raw["plan_optimal"].tolist() == [1, 1, 1, 0, 1]
    assert raw["trace_valid_paper"].tolist() == [1, 0, 0, 0, 1]
    assert raw["trace_valid_strict"].tolist() == [1, 0, 0, 0, 1]
    comp, reward, valid = G.shape_rewards(raw, stopped, G.parse_reward("plan_valid=1,trace_valid_strict=0.5"))
    assert reward.tolist() == [1.5, 1.0, 1.0, 0.0, 0.0]
    assert comp["plan_valid"].tolist() == [1, 1, 1, 0, 0] and valid.all()
    _, _, valid = G.shape_rewards(raw, stopped, {"plan_valid": 1.0}, "mask")
    assert valid.tolist() == [True, True, True, True, False]
    # the correct_no_costs arm writes no cost tokens and is verified that way (a trace with costs is malformed)
    bare = G.MazeTask(maze_corpus, "correct_no_costs")
    raw = bare.rewards(batch, np.array([0, 0, 0]), [np.array(r) for r in (reference(ex0, costs=False), no_trace, good)])
    assert raw["trace_valid_strict"].tolist() == [1, 0, 0] and raw["plan_valid"].tolist() == [1, 1, 1]
    assert task.default_budget == 2 * max(len(reference(maze_corpus[i])) for i in range(len(maze_corpus)))


# ------------------------------------------------------------------------------------------------ log-probs


def test_training_forward_logprobs_equal_the_samplers_distribution():
    """The sampler's decode path (prefix-shared KV cache) and the packed training forward give the same
    log-probability to every sampled token, in float64: no drift between the two code paths."""
    model = toy_model(seed=1, dtype=torch.float64)
    rng = np.random.default_rng(2)
    prompts = [rng.integers(0, 16, size=n) for n in (3, 7, 5)]
    seen = []
    prefill, decode = model.prefill, model.decode

    def record(fn):
        def wrapped(*args, **kwargs):
            out = fn(*args, **kwargs)
            seen.append(out.detach().clone())
            return out
        return wrapped

    model.prefill, model.decode = record(prefill), record(decode)
    temperature, group, budget = 0.7, 3, 6
    gen = generate_groups(model, prompts, group, budget, stop_ids=(), sampling=Sampling(temperature, seed=5))
    del model.prefill, model.decode
    # The sampler runs prompts longest first: cache row r holds prompt order[r // group].
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    rows = [i * group + j for i in order for j in range(group)]
    back = torch.as_tensor(np.argsort(rows))
    tokens = torch.tensor(np.stack(gen.tokens), dtype=torch.int64)
    steps = [s[back] for s in [seen[0].repeat_interleave(group, dim=0)] + seen[1:]]
    assert len(steps) == budget
    sampler_lp = torch.stack([torch.log_softmax(s / temperature, -1).gather(1, tokens[:, t:t + 1]).squeeze(1)
                              for t, s in enumerate(steps)], dim=1)
    row_prompts = [p for p in prompts for _ in range(group)]
    with torch.no_grad():
        train_lp, ent = G.response_logprobs(model, row_prompts, gen.tokens, temperature=temperature, entropy=True)
    assert train_lp.dtype == torch.float64
    np.testing.assert_allclose(train_lp.numpy(), sampler_lp.reshape(-1).numpy(), rtol=0, atol=1e-9)
    assert (ent > 0).all()


@pytest.mark.parametrize("loss_type", G.LOSS_TYPES)
def test_gradient_does_not_depend_on_how_the_forward_is_cut(loss_type):
    model = toy_model(seed=2, dtype=torch.float64)
    rng = np.random.default_rng(4)
    prompts = [rng.integers(0, 16, size=n) for n in (3, 6, 4, 5)]
    responses = [rng.integers(0, 16, size=n) for n in (2, 5, 1, 3)]
    batch = G.RolloutBatch(prompts, responses, rng.normal(size=4))
    ref = toy_model(seed=3, dtype=torch.float64)
    G.score_rollout(model, batch, temperature=1.0, forward_tokens=10_000, ref_model=ref)
    batch.old_logp = batch.old_logp + torch.as_tensor(rng.normal(scale=0.3, size=batch.old_logp.shape))
    grads = []
    for forward_tokens in (1, 10_000):
        cfg = G.GRPOConfig(loss=loss_type, beta=0.05, forward_tokens=forward_tokens, budget=5)
        model.zero_grad()
        stats = G.minibatch_backward(model, batch, np.array([3, 0, 2, 1]), cfg, 5)
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
        assert stats["tokens"] == 11 and stats["clipped_low"] + stats["clipped_high"] > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------------ the loop


@pytest.mark.parametrize("loss_type", G.LOSS_TYPES)
def test_toy_task_is_learned_with_every_loss(tmp_path, loss_type, monkeypatch):
    def no_reference(model):
        raise AssertionError("the reference model was built with beta = 0")

    monkeypatch.setattr(G, "reference_model", no_reference)
    init = save_init(tmp_path / "init", toy_model())
    cfg = G.GRPOConfig(steps=14, prompts=8, group=8, lr=3e-2, loss=loss_type, reward={"hit": 1.0})
    result = G.run_grpo(toy_task(), tmp_path / "out", cfg, init=init, device="cpu", threads=1, progress=False)
    rewards = [m["reward_mean"] for m in result["metrics"]]
    assert rewards[0] < 0.2 and min(rewards[-3:]) > 0.9, rewards
    last = result["metrics"][-1]
    assert last["rollout_step"] == 14 and last["grad_steps"] == 14 and last["kl"] is None
    assert result["checkpoint"].endswith("step-000014")


@pytest.mark.parametrize("truncated", G.TRUNCATED)
def test_truncated_responses_score_zero_or_leave_the_loss(tmp_path, truncated):
    init = save_init(tmp_path / "init", toy_model(seed=6))
    cfg = G.GRPOConfig(steps=2, prompts=4, group=4, lr=1e-2, reward={"hit": 1.0}, truncated=truncated)
    for m in G.run_grpo(toy_task(), tmp_path / "out", cfg, init=init, device="cpu", threads=1,
                        progress=False)["metrics"]:
        n_cut = round(m["frac_truncated"] * m["samples"])
        assert n_cut > 0 and m["reward_hit_mean"] <= 1 - m["frac_truncated"]
        total = round(m["response_len_mean"] * m["samples"])
        # a cut response used its whole budget of 3 tokens
        assert m["train_tokens"] == (total if truncated == "zero" else total - 3 * n_cut)


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    init = save_init(tmp_path / "init", toy_model(seed=4))
    cfg = G.GRPOConfig(steps=4, prompts=4, group=4, lr=2e-2, beta=0.05, updates=2, minibatch=6, reward={"hit": 1.0},
                       clip_low=0.1, clip_high=0.1, filter_zero_std=True, max_resample=1)
    kw = dict(init=init, device="cpu", threads=1, progress=False, save_every=2)
    whole = G.run_grpo(toy_task(n_prompts=5), tmp_path / "a", cfg, **kw)
    assert whole["grad_steps"] == sum(2 * math.ceil(m["prompts"] * 4 / 6) for m in whole["metrics"])
    assert all(m["kl"] is not None and m["clip_frac"] is not None for m in whole["metrics"] if m["prompts"])
    assert any(m["clip_frac"] for m in whole["metrics"] if m["prompts"])
    # a crash after step 3: the step-2 checkpoint survives and metrics.jsonl already has lines 3 and 4
    G.run_grpo(toy_task(n_prompts=5), tmp_path / "b", cfg, **kw)
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step-000004")
    with pytest.raises(ValueError, match="--resume"):
        G.run_grpo(toy_task(n_prompts=5), tmp_path / "b", cfg, **kw)
    with pytest.raises(ValueError, match="lr"):
        G.run_grpo(toy_task(n_prompts=5), tmp_path / "b", G.GRPOConfig(**{**cfg.to_dict(), "lr": 1e-3}), resume=True,
                   **kw)
    resumed = G.run_grpo(toy_task(n_prompts=5), tmp_path / "b", cfg, resume=True, **kw)
    assert resumed["start_step"] == 2
    lines = [json.loads(ln) for ln in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [m["rollout_step"] for m in lines] == [1, 2, 3, 4]
    assert [stable(m) for m in lines] == [stable(m) for m in whole["metrics"]]
    a = ck.load_safetensors(tmp_path / "a" / "checkpoints" / "step-000004" / "model.safetensors")
    b = ck.load_safetensors(tmp_path / "b" / "checkpoints" / "step-000004" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_zero_std_filter_fills_the_batch_and_logs_the_fraction(tmp_path):
    """Problems whose prompt starts with an odd token always score 1, so their groups carry no signal; the others
    score the parity of the response's token. Every response is one token long and stops (nothing is cut)."""
    prompts = toy_task(n_prompts=12)._prompts
    odd = [bool(p[0] % 2) for p in prompts]
    assert 0 < sum(odd) < 12

    def parity(problems, responses):
        return {"hit": np.array([1.0 if odd[i] else float(r[0] % 2) for i, r in zip(problems.tolist(), responses)])}

    task = G.PromptTask(prompts, parity, ["hit"], budget=1, stop_ids=range(16))
    init = save_init(tmp_path / "init", toy_model(seed=5))
    cfg = G.GRPOConfig(steps=2, prompts=4, group=8, lr=1e-3, reward={"hit": 1.0}, filter_zero_std=True, max_resample=6)
    for m in G.run_grpo(task, tmp_path / "f", cfg, init=init, device="cpu", threads=1, progress=False)["metrics"]:
        assert m["prompts"] == 4 and m["train_tokens"] == 32  # the batch is full
        assert m["attempts"] >= 2 and 0 < m["frac_reward_zero_std"] < 1
        assert m["samples"] > 32 and m["samples"] % 8 == 0
    plain = G.GRPOConfig(**{**cfg.to_dict(), "filter_zero_std": False})
    for m in G.run_grpo(task, tmp_path / "p", plain, init=init, device="cpu", threads=1, progress=False)["metrics"]:
        assert m["attempts"] == 1 and m["prompts"] == 4 and m["samples"] == 32 and m["frac_reward_zero_std"] > 0
    # no group ever has signal: the retries are bounded and the step trains on nothing
    flat = G.PromptTask(prompts, lambda problems, responses: np.ones(len(responses)), ["hit"], budget=1,
                        stop_ids=range(16))
    result = G.run_grpo(flat, tmp_path / "c", cfg, init=init, device="cpu", threads=1, progress=False)
    assert result["grad_steps"] == 0
    assert all(m["attempts"] == 7 and m["prompts"] == 0 and m["frac_reward_zero_std"] == 1.0 and m["loss"] is None
               for m in result["metrics"])


# ------------------------------------------------------------------------------------------------ the CLI


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A study-shaped directory (train corpus, one test suite, the correct arm) and a run trained on it."""
    from reasonless.train import train

    root = tmp_path_factory.mktemp("grpo_study")
    study = root / "study"
    corpus = generate(study / "train", "kruskal", 24, rows=5, cols=5, seed=1)
    generate(study / "test" / "wilson", "wilson", 4, rows=5, cols=5, seed=2)
    export_tokens(corpus, study / "arms" / "correct", arm="correct")
    train(study, root / "run", arm="correct", preset="tiny", model_overrides=TINY, steps=3, seq_len=256, rows=2,
          warmup=1, val_fraction=0.2, save_minutes=0, threads=1, progress=False)
    return study, root / "run"


def test_cli_grpo_then_eval_and_export_hf(trained, tmp_path, capsys):
    study, run = trained
    out = tmp_path / "grpo"
    argv = ["grpo", "--init", run, "--data", study, "--arm", "correct", "--out", out, "--steps", 2, "--prompts", 3,
            "--group", 4, "--budget", 24, "--lr", 1e-3, "--reward", "plan_valid=1,trace_valid_strict=0.5",
            "--eval-every", 2, "--eval-n", 2, "--device", "cpu", "--threads", 1, "--quiet"]
    assert main([str(a) for a in argv]) == 0, capsys.readouterr().err
    assert "rollout steps 0..2" in capsys.readouterr().out
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["rollout_step"] for m in lines] == [1, 2] and lines[-1]["grad_steps"] == 2
    for key in ("reward_mean", "reward_std", "reward_plan_valid_mean", "reward_trace_valid_strict_std",
                "rate_plan_valid", "rate_trace_valid_paper", "rate_trace_valid_strict", "response_len_mean",
                "response_len_max", "frac_truncated", "entropy", "kl", "clip_frac", "grad_norm", "time_sample_s",
                "time_verify_s", "time_logprob_s", "time_update_s", "tokens_per_s", "frac_reward_zero_std"):
        assert key in lines[-1], key
    assert lines[-1]["samples"] == 12 and lines[-1]["response_len_max"] <= 24
    assert "eval_wilson_plan_valid" in lines[-1] and (out / "evals" / "step-000002.jsonl").is_file()
    state = json.loads((out / "checkpoints" / "step-000002" / "trainer.json").read_text())
    assert state["data"]["grid"] == [5, 5] and state["data"]["arm"] == "correct" and state["grpo"]["grad_steps"] == 2

    assert main(["export-hf", str(out), "--out", str(tmp_path / "hf")]) == 0
    assert json.loads((tmp_path / "hf" / "reasonless.json").read_text())["step"] == 2
    capsys.readouterr()
    ev = tmp_path / "ev.jsonl"
    assert main(["eval", str(out), "--suites", str(study), "--n", "2", "--budget", "16", "--out", str(ev),
                 "--quiet"]) == 0
    meta = json.loads((tmp_path / "ev.jsonl.summary.json").read_text())["meta"]
    assert meta["arm"] == "correct" and meta["step"] == 2

    # errors name the bad argument
    def options(changes):
        opts = {**dict(zip(argv[1::2], argv[2::2])), **changes}  # argv: "grpo", flag/value pairs, "--quiet"
        return ["grpo"] + [str(x) for kv in opts.items() for x in kv] + ["--quiet"]

    cases = [({"--reward": "plan_vaild=1", "--out": tmp_path / "e1"}, "plan_vaild"),
             ({"--arm": "swapped", "--out": tmp_path / "e2"}, "trained on arm 'correct'"),
             ({}, "already holds checkpoints"),
             ({"--data": study / "arms" / "correct", "--out": tmp_path / "e3"}, "token dir")]
    for changes, msg in cases:
        assert main(options(changes)) == 2
        assert msg in capsys.readouterr().err
