"""The paper's loss ablations (train and evaluate every mode, one table) as a Ray job:

    ray job submit --runtime-env jobs/runtime_env/cluster.yaml --working-dir . -- \
        python jobs/ablate.py --config jobs/configs/cluster.yaml

Same as `steper-ray ablate`; arguments are passed through (--modes, --out, --json, key=value
overrides).
"""

import sys

from steper_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["ablate", *sys.argv[1:]]))
