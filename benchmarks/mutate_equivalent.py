"""Surviving mutants of `make mutate` that are equivalent to the original code, and why (by mutmut's name).

A mutant belongs here only when no input the program can reach tells it from the original; any other
survivor needs a test that kills it.
"""

from __future__ import annotations

EQUIVALENT: dict[str, str] = {
    "bigtrain.strategies.batch.x__near__mutmut_2": (
        "`_near` is only asked about a value that is not among the divisors (it did not divide), so `<` and "
        "`<=` pick the same ones"
    ),
    "bigtrain.strategies.batch.x__near__mutmut_6": (
        "as above: the value asked about is never a divisor, so `>` and `>=` pick the same ones"
    ),
    "bigtrain.strategies.batch.x__divisors__mutmut_7": "n + 1 never divides n (n >= 1): the same divisors",
    "bigtrain.strategies.batch.x_split_batch__mutmut_24": (
        "the example batch sizes are 0 or multiples of dp.size >= 2 (dp 1 always divides), so `v > 0` and "
        "`v > 1` keep the same ones"
    ),
    "bigtrain.strategies.batch.x_data_parallel__mutmut_8": (
        '`None` and `""` are both falsy, the only way the value is read (`if kwargs:`)'
    ),
    "bigtrain.checkpoints.manifest.x_sha256__mutmut_5": (
        "`read(None)` reads the whole file in one block: the same digest (only the memory it takes differs)"
    ),
}
EQUIVALENT.update(
    {
        f"bigtrain.checkpoints.discover.x__warn__mutmut_{n}": (
            "`flush` only decides when the line reaches stderr, not what it says"
        )
        for n in (5, 8, 9)
    }
)
# How the manifest's JSON is laid out (indentation, key order) is not read by anything: `json.loads` gives
# the same dict, so these change only the whitespace and order of the file.
EQUIVALENT.update(
    {
        f"bigtrain.checkpoints.manifest.x_write_manifest__mutmut_{n}": (
            "layout of the manifest's JSON only (indentation or key order): it reads back the same"
        )
        for n in (9, 10, 13, 14, 15, 16)
    }
)
