"""Teacher-forced answer probabilities, the exact answer metrics, the divergences of a policy on its samples
and the held-out NLL of one synthetic task."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from scipy.special import entr, rel_entr

from divergence_lab.data.text.lm_datamodule import SyntheticLMDataModule
from divergence_lab.ground.errors import ConfigError
from divergence_lab.methods.answer_probabilities import (
    COVERAGE_FRACTION_OF_UNIFORM,
    answer_log_probabilities,
    exact_answer_metrics,
    heldout_nll,
    policy_sample_divergences,
    synthetic_task_of,
)
from divergence_lab.methods.lm_generation import (
    AnswerEvaluation,
    Sampling,
    completion_batch,
    evaluate_answers,
    generate_new_tokens,
    generation_config,
)
from divergence_lab.models.causal_lm import build_causal_lm

CPU = torch.device("cpu")
NO_DROPOUT = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
MIXED = {"task": "mixed", "train_prompts": 8, "val_prompts": 6, "test_prompts": 6, "digits": 2}
SUPPRESSED_LOGIT = -1e4  # exp underflows to exactly 0 in float64
EOS_BOOST = math.log(10)  # eos as likely as the ten digits together, for a model near uniform
SPREAD_INIT = 0.3  # initializer_range: logits that vary with the prompt, not a near-uniform model


def gpt2(dm: SyntheticLMDataModule, seed: int, width: int = 16, init: float = 0.02) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = OmegaConf.create(
        {
            "_target_": "divergence_lab.models.causal_lm.causal_lm_from_config",
            "model_type": "gpt2",
            "sizes": {
                "n_layer": 1,
                "n_embd": width,
                "n_head": 2,
                "n_positions": 32,
                "initializer_range": init,
                **NO_DROPOUT,
            },
        }
    )
    return build_causal_lm(cfg, dm.vocab_size, dm.pad_token_id, dm.eos_token_id, dm.bos_token_id).double()


def mixed_data() -> SyntheticLMDataModule:
    dm = SyntheticLMDataModule(**MIXED)
    dm.setup()
    return dm


def one_sequence_log_prob(model, ids: list[int], prompt_length: int, temperature: float = 1.0) -> float:
    """Σ log softmax(z_t / T)[ids[t + 1]] over the positions after the prompt, one unpadded sequence."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0] / temperature
    log_probs = F.log_softmax(logits, dim=-1)
    return sum(float(log_probs[t - 1, ids[t]]) for t in range(prompt_length, len(ids)))


# --- answer_log_probabilities ----------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_answer_log_probabilities_are_the_teacher_forced_sums_of_each_answer_and_eos(temperature):
    dm = mixed_data()
    model = gpt2(dm, seed=0, init=SPREAD_INIT)
    model.train()
    prompts = dm.eval_prompts("val")
    assert any(len(p.answers) > 1 for p in prompts) and any(len(p.answers) == 1 for p in prompts)
    got = answer_log_probabilities(model, dm, prompts, batch_size=3, device=CPU, temperature=temperature)
    assert model.training  # the mode is given back
    model.eval()
    for prompt, values in zip(prompts, got, strict=True):
        assert set(values) == prompt.answers
        for answer, value in values.items():
            ids = [
                *dm.tokenizer(prompt.prompt)["input_ids"],
                *dm.tokenizer(answer, add_special_tokens=False)["input_ids"],
            ]
            expected = one_sequence_log_prob(
                model, [*ids, dm.eos_token_id], len(prompt.prompt_ids), temperature
            )
            assert value == pytest.approx(expected, rel=1e-10, abs=1e-10)


# --- exact_answer_metrics --------------------------------------------------------------------------------


def test_exact_answer_metrics_match_hand_computed_values():
    log_probs = [
        {"a": math.log(0.2), "b": math.log(0.3)},  # p = 0.5, shares 0.4 / 0.6
        {"x": math.log(0.1)},  # p = 0.1, one answer
        {"c": math.log(0.01), "d": math.log(0.09), "e": math.log(0.9)},  # p = 1, shares 0.01 / 0.09 / 0.9
    ]
    got = exact_answer_metrics(log_probs, ks=(1, 2))
    h_two = -(0.4 * math.log(0.4) + 0.6 * math.log(0.6))
    h_three = -(0.01 * math.log(0.01) + 0.09 * math.log(0.09) + 0.9 * math.log(0.9))
    assert 0.01 < COVERAGE_FRACTION_OF_UNIFORM / 3 < 0.09  # the share 0.01 is not covered, 0.09 is
    expected = {
        "answer_prob": (0.5 + 0.1 + 1.0) / 3,
        "pass@1_exact": (0.5 + 0.1 + 1.0) / 3,
        "pass@2_exact": ((1 - 0.5**2) + (1 - 0.9**2) + 1.0) / 3,
        "answer_coverage": (1.0 + 1.0 + 2 / 3) / 3,
        "answer_coverage_mass": (math.exp(h_two) / 2 + 1.0 + math.exp(h_three) / 3) / 3,
        "correct_entropy": (h_two + 0.0 + h_three) / 3,
    }
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-12), name


def test_exact_answer_metrics_of_a_collapsed_and_of_an_even_model():
    answers = [f"{n:02d}" for n in range(4)]
    collapsed = exact_answer_metrics([{a: (0.0 if a == "00" else -800.0) for a in answers}], ks=(4,))
    even = exact_answer_metrics([{a: math.log(0.25) for a in answers}], ks=(4,))
    assert collapsed["answer_coverage"] == collapsed["answer_coverage_mass"] == pytest.approx(0.25)
    assert collapsed["correct_entropy"] == pytest.approx(0.0, abs=1e-12) and collapsed["pass@4_exact"] == 1.0
    assert even["answer_coverage"] == 1.0 and even["correct_entropy"] == pytest.approx(math.log(4))
    assert even["answer_coverage_mass"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least one prompt"):
        exact_answer_metrics([], ks=(1,))
    with pytest.raises(ValueError, match="k must be"):
        exact_answer_metrics([{"a": 0.0}], ks=(0,))


def test_pass_at_k_exact_agrees_with_the_sampled_pass_at_k_of_the_same_model():
    """One-digit multi-answer prompts ("3<?<8:" → 4, 5, 6, 7) and a model that cannot emit pad, bos or unk
    (which decoding would drop): a sample then decodes to a correct answer only by the canonical ids, so the
    sampled pass@k (Chen et al.'s unbiased estimate from n samples) estimates pass@k_exact. Tolerance: five
    standard deviations, bounded per prompt by Hoeffding's Var(U) ≤ (k / n) q (1 − q) for an order-k
    U-statistic whose kernel is Bernoulli(q), q = 1 − (1 − p)^k (for k = 1 the binomial variance itself)."""
    dm = SyntheticLMDataModule(task="multi_answer", train_prompts=4, val_prompts=8, test_prompts=4, digits=1)
    dm.setup()
    model = gpt2(dm, seed=3, init=SPREAD_INIT).eval()
    bias = torch.zeros(dm.vocab_size, dtype=torch.float64)
    bias[[dm.pad_token_id, dm.bos_token_id, dm.tokenizer.unk_token_id]] = SUPPRESSED_LOGIT
    bias[dm.eos_token_id] = EOS_BOOST
    model.lm_head.register_forward_hook(lambda module, inputs, output: output + bias)
    prompts, samples, ks = dm.eval_prompts("val"), 4000, (1, 4)
    log_probs = answer_log_probabilities(model, dm, prompts, 16, CPU)
    exact = exact_answer_metrics(log_probs, ks)
    evaluation = AnswerEvaluation(Sampling(1.0, dm.max_new_tokens), samples, ks, batch_size=2, seed=0)
    sampled = evaluate_answers(model, dm, "val", evaluation, CPU)
    assert 0.05 < exact["answer_prob"] < 0.95  # a test with something to find
    for k in ks:
        q = [1 - (1 - sum(math.exp(v) for v in values.values())) ** k for values in log_probs]
        sigma = math.sqrt(sum(k * x * (1 - x) / samples for x in q)) / len(prompts)
        assert abs(sampled[f"pass@{k}"] - exact[f"pass@{k}_exact"]) < 5 * sigma, k


# --- policy_sample_divergences ---------------------------------------------------------------------------


def test_policy_sample_divergences_are_the_explicit_full_vocabulary_sums():
    dm = mixed_data()
    policy, reference = gpt2(dm, seed=0, init=SPREAD_INIT), gpt2(dm, seed=1, init=SPREAD_INIT)
    prompts = [p.prompt_ids for p in dm.eval_prompts("val")[:4]]
    padded = dm.generation_batch(dm.eval_prompts("val")[:4])
    with torch.random.fork_rng():
        torch.manual_seed(0)
        config = generation_config(dm.max_new_tokens, dm.pad_token_id, dm.eos_token_id, Sampling(1.0, 5))
        new_tokens = generate_new_tokens(policy, padded, config)
    batch = completion_batch(prompts, new_tokens, dm.eos_token_id, dm.pad_token_id)
    policy.train()
    got = policy_sample_divergences(policy, reference, batch)
    assert policy.training and reference.training
    assert got == pytest.approx(policy_sample_divergences(policy, reference, batch, chunk_rows=2), rel=1e-12)
    reverse, forward, entropy, per_sequence = [], [], [], {"kl_reverse": [], "kl_forward": []}
    with torch.no_grad():
        for row in range(batch["input_ids"].shape[0]):
            labelled = (batch["labels"][row] != -100).nonzero().flatten().tolist()
            pi = F.softmax(policy.eval()(batch["input_ids"][row : row + 1]).logits[0], -1).numpy()
            ref = F.softmax(reference.eval()(batch["input_ids"][row : row + 1]).logits[0], -1).numpy()
            rows = [t - 1 for t in labelled]  # the prediction at t − 1 scores token t
            r, f = rel_entr(pi[rows], ref[rows]).sum(-1), rel_entr(ref[rows], pi[rows]).sum(-1)
            reverse += list(r)
            forward += list(f)
            entropy += list(entr(pi[rows]).sum(-1))
            per_sequence["kl_reverse"].append(r.sum())
            per_sequence["kl_forward"].append(f.sum())
    expected = {
        "kl_reverse": np.mean(reverse),
        "kl_forward": np.mean(forward),
        "entropy": np.mean(entropy),
        "kl_reverse_seq": np.mean(per_sequence["kl_reverse"]),
        "kl_forward_seq": np.mean(per_sequence["kl_forward"]),
    }
    assert got.keys() == expected.keys() and expected["kl_reverse"] > 0.01
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-9), name


# --- heldout_nll -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["arithmetic", "multi_answer"])
def test_heldout_nll_is_the_mean_token_nll_of_the_tasks_rows(task):
    dm = mixed_data()
    model = gpt2(dm, seed=2, init=SPREAD_INIT)
    split_examples = dm.task_splits()["val"]
    arithmetic_count = MIXED["val_prompts"] - MIXED["val_prompts"] // 2  # mixed: arithmetic first
    part = split_examples[:arithmetic_count] if task == "arithmetic" else split_examples[arithmetic_count:]
    total, tokens = 0.0, 0
    with torch.no_grad():
        for example in part:
            prompt_ids = dm.tokenizer(example.prompt)["input_ids"]
            for answer in example.answers:  # one validation row per correct answer
                completion = [*dm.tokenizer(answer, add_special_tokens=False)["input_ids"], dm.eos_token_id]
                total -= one_sequence_log_prob(model.eval(), [*prompt_ids, *completion], len(prompt_ids))
                tokens += len(completion)
    model.train()
    got = heldout_nll(model, dm, "val", task, batch_size=4, device=CPU)
    assert model.training
    assert got == pytest.approx(total / tokens, rel=1e-10)


def test_heldout_nll_refuses_a_task_absent_from_the_data_or_unknown():
    dm = SyntheticLMDataModule(task="arithmetic", train_prompts=4, val_prompts=2, test_prompts=2, digits=2)
    dm.setup()
    model = gpt2(dm, seed=0)
    with pytest.raises(ConfigError, match="no multi_answer rows"):
        heldout_nll(model, dm, "val", "multi_answer", 4, CPU)
    with pytest.raises(ConfigError, match="must be one of"):
        heldout_nll(model, dm, "val", "mixed", 4, CPU)


def test_the_task_of_a_prompt_is_read_from_its_form():
    dm = mixed_data()
    examples, arithmetic_count = dm.task_splits()["test"], MIXED["test_prompts"] - MIXED["test_prompts"] // 2
    arithmetic, multi = examples[:arithmetic_count], examples[arithmetic_count:]
    assert {synthetic_task_of(e.prompt) for e in arithmetic} == {"arithmetic"}
    assert {synthetic_task_of(e.prompt) for e in multi} == {"multi_answer"}
    with pytest.raises(ValueError, match="neither"):
        synthetic_task_of("hello")
