"""Index building (BM25 or dense), as a Ray job:

    ray job submit --runtime-env jobs/runtime_env/cluster.yaml --working-dir . -- \
        python jobs/build_index.py --config jobs/configs/cluster.yaml --dataset /mnt/shared/data/hotpotqa/hotpot_dev_distractor_v1.json --out /mnt/shared/steper/index/hotpotqa

Same as `steper-ray index`; arguments are passed through (--json, key=value overrides).
"""

import sys

from steper_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["index", *sys.argv[1:]]))
