"""`reasonless eval`: prompts from suites, generation, both verifier modes, per-example JSONL and summaries.

The exact test drives eval with a generator whose answers are fixed per prompt (correct, corrupted in known ways,
garbage, never stopping), so every reported count is known by hand."""
import json
import types

import numpy as np
import pytest

from reasonless import checkpoint as ck
from reasonless import evaluate as ev
from reasonless.corpus import Corpus, generate
from reasonless.verifier import verify
from reasonless.vocab import CLOSE, CREATE, END, EOS, QUERY, REASONING, SOLUTION, START, WALL, vocab_for

ROWS = COLS = 6


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A study-shaped directory with two suites."""
    root = tmp_path_factory.mktemp("suites")
    generate(root / "test" / "caves", "drunkards_walk", 8, rows=ROWS, cols=COLS, seed=5)
    generate(root / "test" / "wilson", "wilson", 5, rows=ROWS, cols=COLS, seed=6)
    return root


def fake_model(vocab_size=None, max_seq_len=4096):
    vocab_size = len(vocab_for(ROWS, COLS)) if vocab_size is None else vocab_size
    return types.SimpleNamespace(config=types.SimpleNamespace(vocab_size=vocab_size, max_seq_len=max_seq_len))


class ScriptedGenerator:
    """Answers each prompt with a fixed token list (or, for None, `close` of the start forever), cut to the
    budget like a sampler: the stop token is kept, stopped = a stop token came within the budget."""

    def __init__(self, answers: dict[bytes, list | None]):
        self.answers = answers
        self.calls = []

    def __call__(self, model, prompts, budgets, *, stop_ids, sampling=None, batch_size=64, device=None,
                 progress=False):
        self.calls.append({"budgets": list(budgets), "stop_ids": tuple(stop_ids), "sampling": sampling})
        tokens, stopped = [], []
        for p, b in zip(prompts, budgets):
            answer = self.answers[np.asarray(p).tobytes()]
            if answer is None:
                answer = [CLOSE, int(p[3]), int(p[4]), 14 + 6, 14 + 6] * (b // 5 + 1)
            out = []
            for t in answer[:b]:
                out.append(t)
                if t in stop_ids:
                    break
            tokens.append(np.array(out, dtype=np.int64))
            stopped.append(bool(out) and out[-1] in stop_ids)
        return types.SimpleNamespace(tokens=tokens, stopped=np.array(stopped),
                                     prompt_lengths=np.array([len(p) for p in prompts]))


def reference_response(example) -> list[int]:
    """reasoning … end of an example's own A* trace and plan."""
    toks = example.tokens().astype(np.int64).tolist()
    return toks[toks.index(REASONING):-1]


def after_goal_neighbour(example):
    """A free neighbour of the goal that A* never closed (None if there is none)."""
    closed = {(x, y) for kind, x, y, _, _ in example.operations if kind == "close"}
    gx, gy = example.goal
    for dx, dy in ((0, -1), (1, 0), (0, 1), (-1, 0)):
        x, y = gx + dx, gy + dy
        if 0 <= x < COLS and 0 <= y < ROWS and not example.walls[y, x] and (x, y) not in closed:
            return x, y
    return None


def test_scripted_answers_give_the_hand_checked_counts(study, tmp_path):
    corpus = Corpus(study / "test" / "caves")
    vocab = corpus.vocab
    problems = ev.load_problems(corpus)
    examples = [corpus[i] for i in range(len(corpus))]
    special = next(i for i, e in enumerate(examples) if i >= 2 and after_goal_neighbour(e) is not None)
    others = iter(["correct", "first_g", "none_arm", "garbage", "never_stops", "correct", "correct"])
    kinds = ["after_goal" if i == special else next(others) for i in range(len(examples))]
    assert len(examples) == 8 and kinds.count("correct") == 3
    answers, expect = {}, []
    for i, (kind, e) in enumerate(zip(kinds, examples)):
        ref = reference_response(e)
        s = ref.index(SOLUTION)
        if kind == "correct":
            resp = ref
            # plan valid, optimal, trace valid, in both modes
            exp = {m: (True, True, True, None, None) for m in ("paper", "strict")}
        elif kind == "first_g":  # the start is closed with g = 1: that entry is not on the open list
            resp = list(ref)
            resp[4] = vocab.cost(1)
            exp = {m: (True, True, False, "close_not_in_open_list", 0) for m in ("paper", "strict")}
        elif kind == "after_goal":  # one more create after the goal's close: the paper's rules allow it
            x, y = after_goal_neighbour(e)
            g_goal = e.operations[-1][3]
            extra = [CREATE, vocab.coord(x), vocab.coord(y), vocab.cost(g_goal + 1),
                     vocab.cost(abs(x - e.goal[0]) + abs(y - e.goal[1]))]
            resp = ref[:s] + extra + ref[s:]
            exp = {"paper": (True, True, True, None, None),
                   "strict": (True, True, False, "after_goal", len(e.ops))}
        elif kind == "none_arm":  # no trace: the plan alone
            resp = [REASONING] + ref[s:]
            exp = {m: (True, True, False, "goal_not_reached", 0) for m in ("paper", "strict")}
        elif kind == "garbage":
            resp = [REASONING, QUERY, START, WALL, 14, END]
            exp = {m: (False, False, False, "operation_syntax_error", 0) for m in ("paper", "strict")}
        else:
            resp = None
            exp = None
        answers[problems.prompts[i].tobytes()] = resp
        expect.append((kind, exp))
    gen = ScriptedGenerator(answers)
    out = tmp_path / "eval.jsonl"
    summary = ev.evaluate_model(fake_model(), [ev.Suite("caves", corpus)], out, generate_fn=gen,
                                meta={"arm": "correct", "run_name": "r"}, mode="strict", sampling={"seed": 3})

    # the budget: twice the longest reference response (reasoning … end) of the suite, for every prompt
    longest = max(len(reference_response(e)) for e in examples)
    assert gen.calls[0]["budgets"] == [2 * longest] * len(examples)
    assert set(gen.calls[0]["stop_ids"]) == {END, EOS}

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(len(examples)))
    for r, (kind, exp), e in zip(rows, expect, examples):
        assert r["suite"] == "caves" and r["reference_ops"] == len(e.ops)
        assert r["optimal_plan_len"] == len(e.plan_cells)
        if kind == "never_stops":
            assert r["hit_budget"] and r["generated_tokens"] == r["budget"] == 2 * longest
            assert not r["paper"]["plan_valid"] and not r["strict"]["trace_valid"]
            continue
        assert not r["hit_budget"], kind
        for mode in ("paper", "strict"):
            v = r[mode]
            got = (v["plan_valid"], v["plan_optimal"], v["trace_valid"], v["first_error"], v["first_error_at"])
            assert got == exp[mode], (kind, mode)
        if kind == "correct":
            assert r["response"] == e.text().split(" reasoning ", 1)[1].join(["reasoning ", ""])
            assert r["generated_ops"] == len(e.ops) and r["plan_len"] == len(e.plan_cells)

    s = summary["suites"]["caves"]
    n = len(examples)
    n_correct = kinds.count("correct")
    assert s["n"] == n and s["hit_budget"]["k"] == 1
    paper, strict = s["modes"]["paper"], s["modes"]["strict"]
    plan_ok = n_correct + 3  # correct, first_g, after_goal, none_arm
    assert paper["plan_valid"]["k"] == strict["plan_valid"]["k"] == plan_ok
    assert paper["plan_optimal"]["k"] == plan_ok
    assert paper["trace_valid"]["k"] == n_correct + 1 and strict["trace_valid"]["k"] == n_correct
    assert paper["trace_valid_among_valid_plans"] == {**paper["trace_valid_among_valid_plans"], "k": n_correct + 1,
                                                      "n": plan_ok}
    assert strict["confusion"] == {"plan_valid": {"trace_valid": n_correct, "trace_invalid": 3},
                                   "plan_invalid": {"trace_valid": 0, "trace_invalid": 2}}
    assert ["after_goal", 1] in strict["first_errors"] and all(e != "after_goal" for e, _ in paper["first_errors"])
    lo, hi = paper["plan_valid"]["ci95"]
    assert lo < 100 * plan_ok / n < hi
    meta = json.loads(ev.summary_path(out).read_text())
    assert meta["meta"]["mode"] == "strict" and meta["meta"]["arm"] == "correct"
    assert meta["meta"]["sampling"] == {"seed": 3} and meta["suites"] == summary["suites"]
    assert "caves" in ev.format_summary(summary) and "after_goal 1" in ev.format_summary(summary)


def test_budget_is_capped_by_the_context(study, tmp_path):
    corpus = Corpus(study / "test" / "wilson")
    problems = ev.load_problems(corpus, 3)
    examples = [corpus[i] for i in range(3)]
    answers = {p.tobytes(): reference_response(e) for p, e in zip(problems.prompts, examples)}
    context = max(len(p) for p in problems.prompts) + 20
    gen = ScriptedGenerator(answers)
    summary = ev.evaluate_model(fake_model(max_seq_len=context), [ev.Suite("wilson", corpus)], tmp_path / "e.jsonl",
                                n=3, generate_fn=gen, budget=1000)
    assert gen.calls[0]["budgets"] == [min(1000, context - len(p)) for p in problems.prompts]
    rows = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    for r, e in zip(rows, examples):
        cut = len(reference_response(e)) > r["budget"]
        assert r["hit_budget"] == cut and r["paper"]["trace_valid"] == (not cut)
    assert summary["suites"]["wilson"]["budget"]["rule"] == "fixed"
    with pytest.raises(ValueError, match="context"):
        ev.evaluate_model(fake_model(max_seq_len=10), [ev.Suite("wilson", corpus)], tmp_path / "f.jsonl",
                          generate_fn=gen)
    assert not (tmp_path / "f.jsonl").exists()


def test_prompts_are_the_training_prompt_span(study):
    corpus = Corpus(study / "test" / "wilson")
    problems = ev.load_problems(corpus, 2)
    assert len(problems.prompts) == 2
    for i, p in enumerate(problems.prompts):
        full = corpus[i].tokens().astype(np.int64)
        assert p.tolist() == full[:full.tolist().index(REASONING)].tolist()
        assert p[0] == 2 and p[1] == QUERY  # <|bos|> query
    # the suite-wide reference lengths agree with the tokenized responses
    assert ev.reference_response_lengths(corpus)[:2].tolist() == problems.reference_tokens.tolist()
    assert ev.load_problems(corpus, 100).index.tolist() == list(range(len(corpus)))


def test_suites_layouts_and_errors(study, tmp_path):
    assert [s.name for s in ev.find_suites(study)] == ["caves", "wilson"]
    assert [s.name for s in ev.find_suites(study / "test")] == ["caves", "wilson"]
    assert [s.name for s in ev.find_suites(study / "test" / "wilson")] == ["wilson"]
    assert [s.name for s in ev.find_suites(study, ["wilson"])] == ["wilson"]
    with pytest.raises(ValueError, match="no test suite 'dfs'.*caves, wilson"):
        ev.find_suites(study, ["dfs"])
    with pytest.raises(FileNotFoundError):
        ev.find_suites(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a corpus"):
        ev.find_suites(tmp_path / "empty")
    suite = ev.find_suites(study, ["wilson"])
    gen = ScriptedGenerator({})
    with pytest.raises(ValueError, match="vocabulary"):
        ev.evaluate_model(fake_model(vocab_size=944), suite, tmp_path / "x.jsonl", generate_fn=gen)
    with pytest.raises(ValueError, match="trained on 8x8"):
        ev.evaluate_model(fake_model(), suite, tmp_path / "x.jsonl", generate_fn=gen, grid=[8, 8])
    assert not gen.calls  # refused before generating
    (tmp_path / "run").mkdir()
    with pytest.raises(ValueError, match="no checkpoint"):
        ck.resolve_checkpoint(tmp_path / "run")
    with pytest.raises(FileNotFoundError):
        ck.resolve_checkpoint(tmp_path / "missing")


# ------------------------------------------------------------------------------------------------ real models
def _problems_and_rows(corpus, out):
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return ev.load_problems(corpus, len(rows)), rows


def test_random_model_through_the_sampler(study, tmp_path):
    """Plumbing with a real (untrained) model: whatever it writes, the stored verdicts are those of re-verifying
    the stored response texts, budget hits are rows, not crashes, and sampling is reproducible."""
    import torch

    from reasonless.model import Model, ModelConfig
    from reasonless.sample import Sampling

    torch.manual_seed(0)
    config = ModelConfig(vocab_size=len(vocab_for(ROWS, COLS)), n_layer=1, d_model=32, n_head=2, n_kv_head=1,
                         d_ff=64, max_seq_len=512)
    model = Model(config).eval()
    corpus = Corpus(study / "test" / "wilson")
    suite = [ev.Suite("wilson", corpus)]
    summary = ev.evaluate_model(model, suite, tmp_path / "g.jsonl", n=4, budget=30, device="cpu")
    problems, rows = _problems_and_rows(corpus, tmp_path / "g.jsonl")
    assert len(rows) == 4
    for mode in ("paper", "strict"):
        again = verify(problems.walls, problems.start, problems.goal, [r["response"] for r in rows], rows=ROWS,
                       cols=COLS, mode=mode)
        for i, r in enumerate(rows):
            assert r[mode]["plan_valid"] == bool(again.plan_valid[i])
            assert r[mode]["trace_valid"] == bool(again.trace_valid[i])
            assert r[mode]["first_error"] == again.first_error_name(i)
        assert summary["suites"]["wilson"]["modes"][mode]["trace_valid"]["k"] == int(again.trace_valid.sum())
    for r in rows:
        n_words = len(r["response"].split())
        assert n_words == r["generated_tokens"] <= 30
        last = r["response"].split()[-1] if n_words else None
        assert r["hit_budget"] == (last not in ("end", "<|eos|>"))
        if r["hit_budget"]:
            assert r["generated_tokens"] == 30
    assert summary["suites"]["wilson"]["hit_budget"]["k"] == sum(r["hit_budget"] for r in rows)

    sampled = [ev.evaluate_model(model, suite, tmp_path / f"s{k}.jsonl", n=4, budget=30, device="cpu",
                                 sampling=Sampling(temperature=1.0, seed=5)) for k in range(2)]
    assert (tmp_path / "s0.jsonl").read_text() == (tmp_path / "s1.jsonl").read_text()
    assert sampled[0]["meta"]["sampling"] == {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": 5}


@pytest.fixture(scope="module")
def memorised(tmp_path_factory):
    """A tiny model trained until it reproduces the three problems of its corpus (about 60 optimizer steps)."""
    from reasonless.interchange import export_tokens
    from reasonless.train import train

    root = tmp_path_factory.mktemp("memorise")
    corpus = generate(root / "c", "wilson", 3, rows=5, cols=5, seed=2)
    export_tokens(corpus, root / "tok")
    train(root / "tok", root / "run", preset="tiny",
          model_overrides=dict(n_layer=2, d_model=64, n_head=4, n_kv_head=2, d_ff=128, max_seq_len=512),
          steps=60, seq_len=512, rows=1, lr=1e-2, warmup=10, weight_decay=0.0, val_fraction=0.0, progress=False,
          device="cpu")
    return root


@pytest.mark.slow
def test_cli_eval_of_a_model_that_memorised_its_problems(memorised, tmp_path, capsys):
    from reasonless.cli import main

    out = tmp_path / "mem.jsonl"
    code = main(["eval", str(memorised / "run"), "--suites", str(memorised / "c"), "--out", str(out), "--quiet",
                 "--device", "cpu", "--checkpoint", "latest"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "c " in captured.out and "verifier mode paper" in captured.out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    corpus = Corpus(memorised / "c")
    for r in rows:
        assert r["response"] == "reasoning " + corpus[r["index"]].text().split(" reasoning ", 1)[1]
        assert all(r[m]["plan_valid"] and r[m]["plan_optimal"] and r[m]["trace_valid"] for m in ("paper", "strict"))
    summary = json.loads(ev.summary_path(out).read_text())
    assert summary["meta"]["arm"] == "correct" and summary["meta"]["step"] == 60
    assert summary["meta"]["checkpoint_choice"] == "latest"
    assert summary["suites"]["c"]["modes"]["strict"]["trace_valid"]["pct"] == 100.0


def test_cli_eval_help_and_errors(study, memorised, tmp_path, capsys):
    from reasonless.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["eval", "--help"])
    assert exit_.value.code == 0 and "--suites" in capsys.readouterr().out
    (tmp_path / "empty_run").mkdir()
    cases = [
        (["eval", str(tmp_path / "empty_run"), "--suites", str(study)], "no checkpoint"),
        (["eval", str(memorised / "run"), "--suites", str(tmp_path / "nope")], "no such suite directory"),
        (["eval", str(memorised / "run"), "--suites", str(study), "--suite", "dfs"], "no test suite 'dfs'"),
        (["eval", str(memorised / "run"), "--suites", str(study)], "5x5"),  # a 6x6 study for a 5x5 model
        (["eval", str(memorised / "run"), "--suites", str(memorised / "c"), "--n", "0"], "n=0"),
        (["eval", str(memorised / "run"), "--suites", str(memorised / "c"), "--temperature", "-1"], "temperature"),
    ]
    for argv, message in cases:
        code = main(argv + ["--out", str(tmp_path / "x.jsonl"), "--device", "cpu", "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and message in err, (argv, err)
        assert not (tmp_path / "x.jsonl").exists()


def test_rerun_after_a_crash_generates_only_the_missing_suites(study, tmp_path):
    suites = ev.find_suites(study)
    assert [s.name for s in suites] == ["caves", "wilson"]
    never_stop = {p.tobytes(): None for s in suites for p in ev.load_problems(s.corpus).prompts}

    class CrashOnSecondSuite(ScriptedGenerator):
        def __call__(self, *args, **kwargs):
            if self.calls:
                raise RuntimeError("power cut")
            return super().__call__(*args, **kwargs)

    straight = tmp_path / "straight.jsonl"
    ev.evaluate_model(fake_model(), suites, straight, generate_fn=ScriptedGenerator(never_stop), budget=12)
    out = tmp_path / "eval.jsonl"
    with pytest.raises(RuntimeError, match="power cut"):
        ev.evaluate_model(fake_model(), suites, out, generate_fn=CrashOnSecondSuite(never_stop), budget=12)
    assert not out.exists() and [p.name for p in ev.parts_dir(out).iterdir()] == ["caves.json"]
    again = ScriptedGenerator(never_stop)
    summary = ev.evaluate_model(fake_model(), suites, out, generate_fn=again, budget=12)
    assert len(again.calls) == 1 and len(again.calls[0]["budgets"]) == 5  # the wilson suite only
    assert out.read_text() == straight.read_text()
    assert summary["suites"] == json.loads(ev.summary_path(straight).read_text())["suites"]
    assert not ev.parts_dir(out).exists()
    # a kept suite from another configuration is not reused
    with pytest.raises(RuntimeError):
        ev.evaluate_model(fake_model(), suites, out, generate_fn=CrashOnSecondSuite(never_stop), budget=12)
    other = ScriptedGenerator(never_stop)
    ev.evaluate_model(fake_model(), suites, out, generate_fn=other, budget=10)
    assert len(other.calls) == 2
