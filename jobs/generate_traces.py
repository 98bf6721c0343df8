"""Teacher trace generation as a Ray job:

    ray job submit --runtime-env jobs/runtime_env/cluster.yaml --working-dir . -- \
        python jobs/generate_traces.py --config jobs/configs/cluster.yaml

Same as `steper-ray generate`; arguments are passed through (--json, key=value overrides).
"""

import sys

from steper_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["generate", *sys.argv[1:]]))
