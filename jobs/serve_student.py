"""The HTTP endpoint (Ray Serve); the job keeps running while it serves, as a Ray job:

    ray job submit --runtime-env jobs/runtime_env/cluster.yaml --working-dir . -- \
        python jobs/serve_student.py --config jobs/configs/cluster.yaml

Same as `steper-ray serve`; arguments are passed through (--json, key=value overrides).
"""

import sys

from steper_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
