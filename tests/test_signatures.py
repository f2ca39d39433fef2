"""annumap's functions take every parameter of the installed scanpy's and ehrapy's, same defaults.

So a scanpy or ehrapy release that adds or changes a parameter fails here rather than in a
user's notebook. annumap's own extra parameters are allowed. Skips when a package is absent.
"""

from __future__ import annotations

import inspect
import warnings

import pytest

import annumap

#: Defaults spelled differently that mean the same (name, theirs, ours), each with its reason.
EQUIVALENT_DEFAULTS = [
    # scanpy >= 1.12 spells it None: "'euclidean' unless distances= is given" (1.11: 'euclidean')
    ("metric", None, "euclidean"),
    # scanpy's tl.umap spells it 'neighbors', ehrapy's None; both read .uns['neighbors']
    ("neighbors_key", "neighbors", None),
]

CASES = [
    ("scanpy", "tl.umap", annumap.tl.umap),
    ("scanpy", "pp.neighbors", annumap.pp.neighbors),
    ("ehrapy", "tl.umap", annumap.tl.umap),
]


def _function(package: str, path: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # import-time noise of the peers (not ours to fix)
        module = pytest.importorskip(package)
        for part in path.split("."):
            module = getattr(module, part)
    return module


def _equal(a, b) -> bool:
    return a is b or (type(a) is type(b) and a == b)


def _same_default(name: str, theirs, ours) -> bool:
    if any(name == n and _equal(theirs, t) and _equal(ours, o) for n, t, o in EQUIVALENT_DEFAULTS):
        return True
    return _equal(theirs, ours)


def mismatches(theirs, ours) -> list[str]:
    """What a call written for ``theirs`` would trip over in ``ours``."""
    t_params = list(inspect.signature(theirs).parameters.values())
    o_params = list(inspect.signature(ours).parameters.values())
    o_by_name = {p.name: p for p in o_params}
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    problems = []
    # the data argument is passed by position (ehrapy calls it edata, scanpy and annumap adata)
    for i, p in enumerate(t_params[1:], start=1):
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        mine = o_by_name.get(p.name)
        if mine is None:
            problems.append(f"{p.name!r} is missing (theirs: default {p.default!r})")
            continue
        if p.kind in positional and (mine.kind not in positional or o_params.index(mine) != i):
            problems.append(f"{p.name!r} is positional number {i} in theirs, not in ours")
        if p.default is inspect.Parameter.empty:
            if mine.default is not inspect.Parameter.empty:
                continue  # required there, optional here: every call still works
        elif not _same_default(p.name, p.default, mine.default):
            problems.append(f"{p.name!r} defaults to {p.default!r} in theirs, {mine.default!r}")
    return problems


@pytest.mark.parametrize(("package", "path", "ours"), CASES, ids=[f"{p}.{f}" for p, f, _ in CASES])
def test_every_peer_parameter_exists_with_its_default(package, path, ours):
    theirs = _function(package, path)
    assert mismatches(theirs, ours) == [], f"{package}.{path} vs annumap"


def test_mismatches_finds_a_missing_parameter_and_a_changed_default():
    def peer(adata, n_neighbors=15, *, new_option=1, metric="cosine"):
        pass

    assert mismatches(peer, annumap.pp.neighbors) == [
        "'new_option' is missing (theirs: default 1)",
        "'metric' defaults to 'cosine' in theirs, 'euclidean'",
    ]


def test_mismatches_sees_a_positional_order_change():
    def peer(adata, n_pcs=None, n_neighbors=15):
        pass

    problems = mismatches(peer, annumap.pp.neighbors)
    assert problems == [
        "'n_pcs' is positional number 1 in theirs, not in ours",
        "'n_neighbors' is positional number 2 in theirs, not in ours",
    ]
