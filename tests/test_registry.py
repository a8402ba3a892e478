"""The attack registry is the only list of attacks (issue 16 section 1) and the evaluation defaults
are declared once (issue 21 section 3): every other list and default reads it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ddcat import constants
from ddcat.attacks import APGD, SEA, Attack, Ensemble, registry
from ddcat.attacks.registry import ATTACK_NAMES, ENTRIES, build_attack, member_names, name_of
from ddcat.errors import DdcatError

SRC = Path(__file__).resolve().parents[1] / "src" / "ddcat"


def test_config_choices_of_the_training_attack_are_the_registry_s():
    from ddcat.config import CHOICES

    assert CHOICES["attack.name"] == registry.names(train=True) == ("fgsm-rs", "bim", "pgd", "segpgd")


def test_evaluation_settings_read_the_registry():
    from ddcat.evaluation import settings

    assert settings.EVAL_ATTACKS == ATTACK_NAMES
    assert set(settings.STEP_ATTACKS) | set(settings.BUDGET_ATTACKS) == set(ATTACK_NAMES)
    assert not set(settings.STEP_ATTACKS) & set(settings.BUDGET_ATTACKS)
    assert settings.BUDGET_ATTACKS == tuple(e.name for e in ENTRIES if e.cls.budget == "iters")
    assert settings.RANDOMIZED == tuple(e.name for e in ENTRIES if e.cls.randomized)
    assert settings.DEFAULT_ITERS == constants.ITERS


def test_report_labels_order_and_colours_are_the_registry_s():
    from ddcat.reporting import plots, summary

    assert set(summary.ATTACK_LABELS) == {"clean", *ATTACK_NAMES}
    assert summary.STRONG_ORDER == ("clean", *ATTACK_NAMES)
    assert all(summary.ATTACK_LABELS[e.name] == e.display for e in ENTRIES)
    assert set(plots.ATTACK_COLORS) <= set(ATTACK_NAMES)
    assert summary.DEFAULT_STEPS == constants.SWEEP_STEPS


def test_the_command_line_offers_exactly_the_registry_s_attacks():
    from ddcat.cli import build_parser, eval_plan

    parser = build_parser()
    eval_parser = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith("eval"))
    attack_help = next(a.help for a in eval_parser._actions if "--attack" in a.option_strings)
    listed = attack_help.split(" (")[0].split(" | ")
    assert tuple(listed) == ATTACK_NAMES
    steps = next(a for a in eval_parser._actions if "--steps" in a.option_strings)
    assert steps.default == "1-7"
    for name in ATTACK_NAMES:  # every name is accepted as an --attack
        plan = eval_plan(parser.parse_args(["eval", "--checkpoint", "x.pt", "--out", "o", "--attack", name]))
        # no --iters: no budget forced on every attack (each keeps its own: test_each_attack_keeps_its_own_budget)
        assert plan.attacks == (name,) and plan.iters is None and plan.steps == constants.SWEEP_STEPS
    with pytest.raises(DdcatError, match="valid: " + ", ".join(ATTACK_NAMES[:3])):
        eval_plan(parser.parse_args(["eval", "--checkpoint", "x.pt", "--out", "o", "--attack", "deepfool"]))


@pytest.mark.parametrize("e", ENTRIES, ids=lambda e: e.name)
def test_every_entry_builds_and_declares_itself(e):
    attack = build_attack(e.name, steps=2)
    assert isinstance(attack, Attack) and isinstance(attack, e.cls)
    assert e.budget in registry.BUDGETS and "linf" in e.norms and e.display
    for key, value in e.options.items():  # a variant is its class with its options fixed
        assert getattr(attack, key) == value
    assert attack.eps == constants.EPS  # the documented default eps of every attack
    assert name_of(attack) == e.name or e.cls in (Ensemble,) or e.name in ("worst", "sea")
    with pytest.raises(DdcatError, match="has no option 'bogus'"):
        build_attack(e.name, bogus=1)


def _declared_steps(e) -> int:
    """The ``steps`` default an entry's builder declares (its signature, not an instance)."""
    import inspect

    return inspect.signature(e.build or e.cls).parameters["steps"].default


def test_each_attack_keeps_its_own_budget_without_iters_and_records_it():
    """``ddcat eval --attack NAME`` without --iters runs the attack's own default budget (rse's 200 for
    PAdam and DAG, 500 for PDPGD and ALMA-prox, 300 for APGD, SEA and Tsallis; the ensemble
    constants.ITERS for every member) and the setting, hence the record, states it; --iters N sets
    N for each."""
    from ddcat.cli import build_parser, eval_plan
    from ddcat.evaluation.settings import BUDGET_ATTACKS, attack_settings, default_iters

    parser = build_parser()
    expected = {"apgd": constants.ITERS, "sea": constants.ITERS, "tsallis": constants.ITERS, "ensemble": constants.ITERS,
                "padam-ce": 200, "padam-cos": 200, "dag": 200, "dag-003": 200, "pdpgd": 500, "alma-prox": 500}
    for name in BUDGET_ATTACKS:
        e = registry.entry(name)
        plan = eval_plan(parser.parse_args(["eval", "--checkpoint", "x.pt", "--out", "o", "--attack", name]))
        (setting,) = attack_settings(plan, [("self", None)])[1:]
        assert setting.steps == setting.attack.steps == default_iters(name) == _declared_steps(e), name
        assert setting.steps == expected.get(name, constants.ITERS), name
        if name == "ensemble":
            assert {m.steps for m in setting.attack.members} == {constants.ITERS}  # one budget for every member
        plan = eval_plan(parser.parse_args(["eval", "--checkpoint", "x.pt", "--out", "o", "--attack", name, "--iters", "7"]))
        (setting,) = attack_settings(plan, [("self", None)])[1:]
        assert plan.iters == 7 and setting.steps == setting.attack.steps == 7, name


def test_attack_defaults_agree_with_the_documented_ones():
    assert APGD().eps == SEA().eps == constants.EPS
    assert APGD().steps == SEA().steps == constants.ITERS
    assert build_attack("ensemble").steps == constants.ITERS
    from ddcat.experiment_file import EVAL_DEFAULTS

    assert EVAL_DEFAULTS["steps"] == list(constants.SWEEP_STEPS) and EVAL_DEFAULTS["sea_iters"] == constants.ITERS


def test_each_evaluation_default_is_defined_once():
    """grep finds one definition each: the sweep 1..7, the 300-iteration budget and a 4/255 default
    appear as literals only in constants.py among the files that used to repeat them."""
    files = ["cli.py", "experiment_file.py", "reporting/summary.py", "evaluation/settings.py", "attacks/apgd.py", "attacks/sea.py"]
    for rel in files:
        code = "\n".join(line.split("#")[0] for line in (SRC / rel).read_text().splitlines())
        code = re.sub(r'"""(.|\n)*?"""', "", code)  # docstrings may mention the values
        assert "1, 2, 3, 4, 5, 6, 7" not in code, rel
        assert not re.search(r"\b300\b", code), rel
        assert not re.search(r"[=:]\s*4\s*/\s*255", code), rel  # a 4/255 default (examples in help texts are fine)
    assert "SWEEP_STEPS = (1, 2, 3, 4, 5, 6, 7)" in (SRC / "constants.py").read_text()
    assert "ITERS = 300" in (SRC / "constants.py").read_text()


def test_ensemble_members_are_the_flagged_entries_in_run_order():
    members = member_names()
    flagged = sorted((e for e in ENTRIES if e.member), key=lambda e: e.member)
    assert members == tuple(e.name for e in flagged)
    assert members[:4] == ("apgd-ce", "apgd-masked-ce", "apgd-balanced-masked-ce", "apgd-js")  # cheap, strong first
    assert {"pgd", "segpgd", "cospgd", "masked-ce", "js"} <= set(members[4:])  # the other members join after SEA's
    assert members[-4:] == ("dag", "dag-003", "pdpgd", "alma-prox")  # the minimum-norm attacks (no randomness) last
    ens = build_attack("ensemble", eps=0.02, alpha=0.005, steps=7, seed=3, class_counts=(1, 2, 3))
    assert ens.names == members and all(m.eps == 0.02 and m.steps == 7 for m in ens.members)
    assert all(getattr(m, "seed") == 3 for m in ens.members if m.randomized)
    assert [m.alpha for m in ens.members if hasattr(m, "alpha")] == [0.005] * 5
    # class counts reach only the members whose loss uses them: the others stay equal to standalone attacks
    assert [getattr(m, "class_counts", None) is not None for m in ens.members] == [n == "apgd-balanced-masked-ce" for n in members]
    assert ens.members[members.index("pgd")] == build_attack("pgd", eps=0.02, alpha=0.005, steps=7, seed=3, class_counts=(1, 2, 3))
    # SEA's members are the ensemble's APGD members: one cache serves both
    sea = build_attack("sea", eps=0.02, steps=7, seed=3, class_counts=(1, 2, 3))
    assert set(sea.members) <= set(ens.members)
    assert ens.version == "ddcat-ensemble-1"


def test_norm_and_box_choices_are_the_attack_layer_s():
    from ddcat.attacks.min_norm import BOXES
    from ddcat.attacks.norms import NORMS
    from ddcat.cli import build_parser
    from ddcat.config import CHOICES

    parser = build_parser()
    eval_parser = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith("eval"))
    choices = {o: a.choices for a in eval_parser._actions for o in a.option_strings}
    assert tuple(choices["--norm"]) == NORMS == CHOICES["eval.norm"]
    assert tuple(choices["--box"]) == BOXES
