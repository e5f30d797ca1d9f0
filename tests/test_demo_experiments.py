"""`python -m rpo.demo.experiments NAME --quick`: every experiment runs end to end at toy size,
writes its documented report, and every arm of a seed shares the seed's base policy and held-out
sessions (trained once, reused by later experiments); the paired interval is the hand-computed one."""

import json
import math
import subprocess
import sys

import pytest
from rpo.demo.experiments import EXPERIMENTS, chunks, claim_verdict, verdict
from rpo.demo.pipeline import QUICK
from rpo.eval.metrics import paired_difference

ORDER = ("gamma", "methods", "gap", "prompt", "online")
SEEDS = {"gamma": [0, 1]}  # one experiment over two seeds; the others reuse seed 0's base


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("experiments")
    done = {}
    for name in ORDER:
        seeds = ",".join(map(str, SEEDS.get(name, [0])))
        proc = subprocess.run(
            [sys.executable, "-m", "rpo.demo.experiments", name, "--quick", "--seeds", seeds, "--output_dir", "out"],
            capture_output=True, text=True, timeout=900, cwd=base, check=False,
        )
        assert proc.returncode == 0, f"{name}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        done[name] = (json.loads((base / "out" / f"{name}.json").read_text()), proc)
    return base, done


def test_paired_difference_is_the_hand_computed_delta_method_interval():
    # three units (sessions answered by both systems), one turn each
    first = [[[True, True]], [[True, False, False]], [[True]]]
    second = [[[True, False]], [[False, False, False]], [[True]]]
    pairs = list(zip(first, second))
    # CSR: 4/6 - 2/6; influences (x1 - R1 n1)/2 - (x2 - R2 n2)/2 = 1/6, 0, -1/6; sd 1/6
    half = 1.959964 * (1 / 6) / math.sqrt(3)
    csr = paired_difference(pairs, "CSR")
    assert csr["diff"] == round(1 / 3, 4) and csr["units"] == 3
    assert csr["ci95"] == pytest.approx([1 / 3 - half, 1 / 3 + half], abs=1e-4)
    # ISR: 2/3 - 1/3; influences 2/3, -1/3, -1/3; sd sqrt(1/3)
    half = 1.959964 * math.sqrt(1 / 3) / math.sqrt(3)
    isr = paired_difference(pairs, "ISR")
    assert isr["diff"] == round(1 / 3, 4)
    assert isr["ci95"] == pytest.approx([1 / 3 - half, 1 / 3 + half], abs=1e-4)
    # SSR: a unit whose streak is unknown for one system is left out of both
    ssr = paired_difference([*pairs, ([None], [[True]])], "SSR")
    assert ssr["units"] == 3 and ssr["diff"] == isr["diff"] and ssr["ci95"] == isr["ci95"]
    # identical systems differ by exactly zero
    assert paired_difference(list(zip(first, first)), "CSR") == {"diff": 0.0, "ci95": [0.0, 0.0], "units": 3}


def test_verdicts_read_the_interval():
    assert verdict([0.01, 0.2]) == "supported" and verdict([-0.2, -0.01]) == "reversed"
    assert verdict([-0.1, 0.1]) == "inconclusive"
    assert claim_verdict({"CSR": "supported", "ISR": "inconclusive", "SSR": "inconclusive"}) == "supported on CSR"
    assert claim_verdict({"CSR": "reversed", "ISR": "inconclusive", "SSR": "reversed"}).startswith("not supported")
    assert claim_verdict({"CSR": "supported", "ISR": "reversed", "SSR": "inconclusive"}).startswith("mixed")
    assert claim_verdict({m: "inconclusive" for m in ("CSR", "ISR", "SSR")}) == "inconclusive"
    assert chunks(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]


def test_every_experiment_writes_its_documented_report(runs):
    _, done = runs
    for name, (report, proc) in done.items():
        experiment = EXPERIMENTS[name]
        assert report["experiment"] == name and report["quick"] is True
        assert report["seeds"] == SEEDS.get(name, [0])
        assert list(report["arms"]) == [arm.name for arm in experiment.arms]
        for arm_name, arm in report["arms"].items():
            for metric in ("CSR", "ISR", "SSR"):
                assert 0.0 <= arm[metric] <= 1.0 and arm["sd"][metric] >= 0.0
            if arm_name == experiment.reference:
                assert "vs_reference" not in arm
            else:
                for difference in arm["vs_reference"].values():
                    low, high = difference["ci95"]
                    assert low <= difference["diff"] <= high
        assert [claim["claim"] for claim in report["claims"]] == [f"{a} > {b}" for a, b in experiment.claims]
        assert set(report["per_seed"]) == {str(seed) for seed in report["seeds"]}
        for seed_arms in report["per_seed"].values():
            assert set(seed_arms) == set(report["arms"])
        assert proc.stdout.count("QUICK mode is a smoke test") == 1 and "paired difference" in proc.stdout


def test_arms_share_one_base_and_one_held_out_set_across_experiments(runs):
    base, done = runs
    shared = [report["shared"]["0"] for report, _ in done.values()]
    assert all(entry == shared[0] for entry in shared)
    gamma = done["gamma"][0]["shared"]
    assert gamma["0"]["held_out"] == gamma["1"]["held_out"]  # every seed is scored on the same sessions
    assert gamma["0"]["base"] != gamma["1"]["base"]  # each seed has its own base
    assert len(shared[0]["held_out"]) == done["gamma"][0]["eval_sessions"]
    for name, (_, proc) in done.items():
        reused = "base policy reused" in proc.stdout
        assert reused == (name != "gamma"), name  # trained by the first experiment, reused by the others
    # the RPO arm at the budget's gamma is trained once and shared by gamma, methods and prompt
    assert done["methods"][0]["per_seed"]["0"]["RPO"] == done["gamma"][0]["per_seed"]["0"]["γ=0.05"]
    assert done["prompt"][0]["per_seed"]["0"]["triggered"] == done["gamma"][0]["per_seed"]["0"]["γ=0.05"]
    assert sorted(p.name for p in base.iterdir()) == ["out"]
    for name in ORDER:
        assert (base / "out" / f"{name}.png").stat().st_size > 10_000


def test_gap_buckets_have_equal_size_and_online_matches_offline_pairs_and_steps(runs):
    _, done = runs
    gap = done["gap"][0]["per_seed"]["0"]
    assert gap["g>=3"]["records"] == gap["g=2"]["records"] == gap["g=1"]["records"] > 0
    online = done["online"][0]
    rounds = online["curve"]["0"]
    assert [entry["round"] for entry in rounds] == [1, 2, 3] and online["rounds"] == 3
    assert sum(entry["steps"] for entry in rounds) == QUICK.pref_steps
    assert sum(entry["records"] for entry in rounds) == online["per_seed"]["0"]["offline"]["records"]
    assert online["per_seed"]["0"]["online"]["records"] == online["per_seed"]["0"]["offline"]["records"]
    assert online["per_seed"]["0"]["online"]["CSR"] == rounds[-1]["metrics"]["CSR"]
    assert "online RPO per round" in done["online"][1].stdout


def test_bad_arguments_are_one_line():
    proc = subprocess.run([sys.executable, "-m", "rpo.demo.experiments", "nonsense"], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: experiment 'nonsense': expected one of gap, gamma, methods, prompt, online"]
