"""Writes the ensemble (robot_rt.learning.distill.PolicyEnsemble: the mean of the networks' actions) of distilled
policy files, e.g. DAgger runs from different training seeds.

    python tools/ensemble_distilled.py --out runs/ensemble.pt runs/a/policy.pt runs/b/policy.pt runs/c/policy.pt

The result is a distilled policy file like its members: `examples/evaluate_rally.py --policy`, `load_distilled`
and the real-time loop's `EnvPolicyAdapter` read it unchanged.
"""

from __future__ import annotations

import argparse

from robot_rt.learning.distill import load_distilled, save_ensemble


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="the ensemble's policy file (written atomically)")
    ap.add_argument("policies", nargs="+", help="distilled policy files (at least two; same tracker and shape)")
    args = ap.parse_args(argv)
    path = save_ensemble(args.out, args.policies)
    members = len(load_distilled(path).model.members)
    print(f"{path}: ensemble of {members} networks")
    return str(path)


if __name__ == "__main__":
    main()
