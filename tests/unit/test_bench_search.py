"""The search micro-benchmark (bench/search.py) in a small form: it runs, and every listing it measures
answers what judging every job answers (measure asserts it). No timing is asserted."""

from bench.search import listings, measure


def test_the_search_benchmark_measures_every_listing() -> None:
    figures = measure(2_000, runs=1)
    assert [figure["listing"] for figure in figures] == list(listings())
    matching = {figure["listing"]: figure["matching"] for figure in figures}
    assert matching["all (no filter)"] == 2_000
    assert 0 < matching["q=ward 7 (1 in 100)"] < matching["q=rest api (most Contents)"]
    assert matching["ids= (50 ids)"] == 50 and matching["resource= (a study)"] > 0
