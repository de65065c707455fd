"""The zoo's two training budgets: the tests' brief one, and the learned one the
explanation and int8 benchmarks measure on; each cached under its own key."""

from __future__ import annotations

import pytest

from benchmarks import zoo


def test_the_brief_budget_is_the_architecture_as_written() -> None:
    for arch in zoo.ARCHS.values():
        assert arch.budget(learned=False) is arch


@pytest.mark.parametrize("name", sorted(zoo.ARCHS))
def test_the_learned_budget_trains_longer_under_its_own_key(name: str) -> None:
    pytest.importorskip("torch")
    brief, learned = zoo.ARCHS[name], zoo.ARCHS[name].budget(learned=True)
    assert learned.steps >= 10 * brief.steps and learned.lr > 0
    assert zoo._key(name, learned=True) != zoo._key(name)
