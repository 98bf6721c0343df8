"""The whole pipeline (index, generate, train, evaluate; --serve to serve after), as a Ray job:

    ray job submit --runtime-env jobs/runtime_env/cluster.yaml --working-dir . -- \
        python jobs/run_pipeline.py --config jobs/configs/cluster.yaml

Same as `steper-ray pipeline`; arguments are passed through (--json, key=value overrides).
"""

import sys

from steper_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["pipeline", *sys.argv[1:]]))
