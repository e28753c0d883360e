"""Compositional explanations (Mu & Andreas 2020): a logical formula over concepts for every unit.

    from dissect.formulas import explain_run
    explain_run("runs/r18", layers=["layer4"], length=3, beam=5)   # adds formula columns to units.csv

Modules: grammar (formula text and tuples), labels (packed concept masks), unitmask (a unit's
active pixels), search (pruned beam search, its naive reference, exhaustive bounded search),
null (image permutations), explain (a run folder in, columns out).
"""
