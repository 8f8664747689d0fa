"""How long `make test` takes from a clean clone: the project's five-minute bound.

Each run clones the repository's committed HEAD into a new temporary directory and times,
as CI runs it (``CI=true``), ``make install`` (a new virtual environment, the install and
the bytecode of what the tests import) and then ``make test``. Writes ``OUT/make_test_time.json`` with the
commit, each run's install, test and total seconds, pytest's summary line and exit
status, and the median and range over the runs, beside the bound (300 s). Exits 1 when a
run's tests failed; the bound itself is reported, not enforced (a noisy machine decides it
run by run).

    python benchmarks/make_test_time.py --out DIR            # one run
    python benchmarks/make_test_time.py --out DIR --runs 3
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import clean_clone, head_commit, machine, timed, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BOUND_S = 300.0


def one_run(repo: Path, timeout: float) -> dict:
    with clean_clone(repo) as clone:
        rc_i, install_s, out_i = timed(["make", "install"], clone, timeout)
        if rc_i != 0:
            return {"install_s": round(install_s, 1), "rc": rc_i, "error": out_i[-2000:]}
        rc_t, test_s, out_t = timed(["make", "test"], clone, timeout)
    summary = next((ln.strip() for ln in reversed(out_t.splitlines())
                    if re.search(r"\d+ (passed|failed)", ln)), "")
    # make test runs pytest -q: its short summary names each failed test
    failed = [ln.strip() for ln in out_t.splitlines() if ln.startswith(("FAILED ", "ERROR "))]
    return {"install_s": round(install_s, 1), "test_s": round(test_s, 1),
            "total_s": round(install_s + test_s, 1), "pytest": summary, "rc": rc_t,
            **({"failed": failed, "output_tail": out_t[-4000:]} if rc_t != 0 else {})}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=1, help="clean clones, one after the other")
    ap.add_argument("--repo", type=Path, default=ROOT, help="the repository to clone")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per make call")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine("cpu"), "commit": head_commit(args.repo), "bound_s": BOUND_S,
              "runs": []}
    for i in range(args.runs):
        run = one_run(args.repo, args.timeout)
        result["runs"].append(run)
        print(f"run {i + 1}: install {run['install_s']} s, tests {run.get('test_s')} s, "
              f"total {run.get('total_s')} s, {run.get('pytest') or run.get('error', '')[-200:]}")
        totals = [r["total_s"] for r in result["runs"] if "total_s" in r]
        if totals:
            result.update(median_total_s=statistics.median(totals),
                          range_total_s=[min(totals), max(totals)],
                          within_bound=f"{sum(t <= BOUND_S for t in totals)} of {len(totals)}")
        write_json(args.out, "make_test_time.json", result)
    print(f"median {result.get('median_total_s')} s over {len(result['runs'])} run(s), "
          f"range {result.get('range_total_s')}; within {BOUND_S:.0f} s: "
          f"{result.get('within_bound')}")
    return 1 if any(r["rc"] != 0 for r in result["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
