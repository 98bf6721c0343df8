"""Evaluation of the trained student on the dev sets, as a Ray job:

    ray job submit --runtime-env jobs/runtime_env/cluster.yaml --working-dir . -- \
        python jobs/evaluate_student.py --config jobs/configs/cluster.yaml

Same as `steper-ray evaluate`; arguments are passed through (--json, key=value overrides).
"""

import sys

from steper_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
