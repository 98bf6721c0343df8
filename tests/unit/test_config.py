from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from steper_ray.config import ConfigError, SteperConfig, load_config, parse_overrides

REPO = Path(__file__).resolve().parents[2]
SHIPPED_YAML = sorted(
    p for p in REPO.rglob("*.y*ml")
    if p.suffix in {".yaml", ".yml"} and ".venv" not in p.parts and "runs" not in p.parts
    and "configs" in p.parts
)


def _models(model: type[BaseModel], seen: set[type] | None = None) -> set[type[BaseModel]]:
    seen = seen if seen is not None else set()
    if model in seen:
        return seen
    seen.add(model)
    for field in model.model_fields.values():
        for cand in (field.annotation, *getattr(field.annotation, "__args__", ())):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                _models(cand, seen)
            for inner in getattr(cand, "__args__", ()) or ():
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    _models(inner, seen)
    return seen


def test_every_field_has_a_description() -> None:
    missing = [
        f"{m.__name__}.{name}"
        for m in _models(SteperConfig)
        for name, field in m.model_fields.items()
        if not field.description
    ]
    assert len(_models(SteperConfig)) >= 8
    assert missing == []


def test_shipped_yaml_files_exist() -> None:
    names = {p.name for p in SHIPPED_YAML}
    assert {"local.yaml", "local_dense.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED_YAML, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_yaml_loads_and_validates(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, SteperConfig)


def test_local_yaml_is_the_embedded_default() -> None:
    assert load_config(REPO / "jobs/configs/local.yaml") == SteperConfig()


def test_overrides_are_typed_and_nested() -> None:
    cfg = load_config(None, ["index.kind=dense", "index.bm25.k1=1.2", "retrieval.recall_at=[1, 5]"])
    assert cfg.index.kind == "dense"
    assert cfg.index.bm25.k1 == 1.2
    assert cfg.retrieval.recall_at == [1, 5]


def test_all_errors_reported_at_once_with_fixes(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("index:\n  kind: bm26\n  bm25:\n    k: 3\nretrieval:\n  k: 0\nrun_dirr: x\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, ["tiny_model.num_heads=3", "novalue"])
    problems = info.value.problems
    text = str(info.value)
    assert len(problems) == 6, problems
    assert "index.kind" in text and "'bm25' or 'dense'" in text
    assert "did you mean 'index.bm25.k1'" in text
    assert "did you mean 'run_dir'" in text
    assert "retrieval.k" in text and "greater than or equal to 1" in text
    assert "hidden_size must be a multiple of num_heads" in text
    assert "'novalue' is not key=value" in text
    assert "Fix:" in text


def test_each_value_error_names_the_concrete_fix_and_default() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, ["retrieval.k=abc", "reasoning.max_steps=0", "train.zero_stage=5",
                           "train.lr=-1", "data.train=[{name: x}]"])
    fixes = {p.split(":", 1)[0]: p.split("Fix: ", 1)[1] for p in info.value.problems}
    assert fixes["retrieval.k"].startswith("write a whole number (default 4)")
    assert fixes["reasoning.max_steps"].startswith("set it to 2 or more (default 5)")
    assert fixes["train.zero_stage"].startswith("set it to one of 2 or 3 (default 3)")
    assert fixes["train.lr"].startswith("set it above 0")
    assert fixes["data.train.0.path"].startswith("add it")
    assert not any("fix the value" in p for p in info.value.problems)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("index: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="the config file path is empty"):
        load_config("")  # `--config ''`, not the current directory


def test_blank_output_directories_are_refused() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["ablate.out='  '", "train.out=' '", "run_dir=''"])
    assert err.value.problems[0].startswith("run_dir: is blank; give a directory path; got")
    assert [p.split(":")[0] for p in err.value.problems] == ["run_dir", "train.out", "ablate.out"]


def test_a_path_under_home_is_expanded() -> None:
    # `run_dir=~/runs` reaches us unexpanded (one shell word): it must not make a directory named "~"
    cfg = load_config(None, ["run_dir=~/runs/a", "ablate.out=~/abl", "data.dev=[{name: d, path: ~/dev.jsonl}]",
                             "train.out=a~/b"])
    home = Path.home()
    assert (cfg.run_dir, cfg.ablate.out) == (str(home / "runs/a"), str(home / "abl"))
    assert cfg.data.dev[0].path == str(home / "dev.jsonl") and cfg.train.out == "a~/b"


def test_recall_cutoffs_are_checked() -> None:
    # an empty or negative list used to pass here and crash the retrieval_eval stage
    with pytest.raises(ConfigError) as err:
        load_config(None, ["retrieval.recall_at=[]"])
    assert "retrieval.recall_at: is empty; give at least one cut-off from 1 to 1000" in str(err.value)
    with pytest.raises(ConfigError, match=r"\[-5, 0\] are outside 1 to 1000"):
        load_config(None, ["retrieval.recall_at=[-5, 0, 4]"])
    with pytest.raises(ConfigError, match="holds true/false"):
        load_config(None, ["retrieval.recall_at=[true]"])
    assert load_config(None, ["retrieval.recall_at=[10, 2, 2]"]).retrieval.recall_at == [2, 10]


def test_cross_field_rules() -> None:
    with pytest.raises(ConfigError, match="both set"):
        load_config(None, ["index.dataset=a.jsonl", "index.corpus=b.jsonl"])
    with pytest.raises(ConfigError, match="repeats dataset names"):
        load_config(None, ["data.dev=[{name: a, path: x}, {name: a, path: y}]"])


def test_infinite_nan_and_all_zero_numbers_are_refused() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.lr=.inf", "train.warmup_ratio=.nan"])
    assert "train.lr" in str(err.value) and "train.warmup_ratio" in str(err.value)
    for weights in ("[1, 1, .nan]", "[1, 1, .inf]", "[0, 0, 0]"):
        with pytest.raises(ConfigError, match="loss.weights|finite"):
            load_config(None, ["train.loss.mode=uniform", f"train.loss.weights={weights}"])


def test_parse_overrides_values() -> None:
    tree, problems = parse_overrides(["a.b=1", "a.c=true", "d=null", "e=text with spaces"])
    assert problems == []
    assert tree == {"a": {"b": 1, "c": True}, "d": None, "e": "text with spaces"}


def test_config_files_that_are_not_utf8_repeat_a_key_or_are_a_directory(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"# r\xe9sum\xe9\ntrain:\n  lr: 0.001\n")
    dup = tmp_path / "dup.yaml"
    dup.write_text("train:\n  lr: 0.5\ntrain:\n  epochs: 3\n")
    for path, expected in ((latin1, "is not UTF-8 text"), (dup, "key 'train' appears twice"),
                           (tmp_path, "is a directory")):
        with pytest.raises(ConfigError) as err:
            load_config(path, [])
        assert expected in str(err.value)


def test_true_or_false_is_not_a_number() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.lr=true", "train.epochs=false", "reasoning.num_demos=true", "train.use_gpu=false",
                           "index.distributed=true"])
    assert sorted(p.split(":")[0] for p in err.value.problems) == ["reasoning.num_demos", "train.epochs", "train.lr"]
    assert all("is true/false; write a number" in p for p in err.value.problems)
    # the same inside a list of numbers
    with pytest.raises(ConfigError) as err:
        load_config(None, ["retrieval.recall_at=[2, true]", "bench.serving.concurrency=[false, 4]"])
    assert sorted(p.split(":")[0] for p in err.value.problems) == ["bench.serving.concurrency", "retrieval.recall_at"]
    assert all("holds true/false; write numbers" in p for p in err.value.problems)


@pytest.mark.parametrize(("levels", "expected"), [
    ("[]", "is empty; give at least one level"),
    ("[0, 4]", "0 below 1"),
    ("[-1, 4]", "-1 below 1"),
    ("[3, 3]", "3 given more than once"),
    ("[1, 5000]", "5000 above 1024"),
])
def test_serving_bench_levels_are_distinct_positive_and_given(levels: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"bench.serving.concurrency={levels}"])
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith("bench.serving.concurrency:")
    assert expected in err.value.problems[0]
    assert load_config(None, ["bench.serving.concurrency=[16, 1]"]).bench.serving.concurrency == [16, 1]


@pytest.mark.parametrize("key", ["bench.serving.model", "bench.generation.model"])
def test_a_blank_bench_model_is_refused_not_taken_for_the_tiny_llama(key: str) -> None:
    for blank in ('""', '"  "'):
        with pytest.raises(ConfigError) as err:
            load_config(None, [f"{key}={blank}"])
        assert err.value.problems[0].startswith(f"{key}: is blank; give a model directory or 'smollm2'")
    assert getattr(load_config(None, [f"{key}=null"]).bench, key.split(".")[1]).model is None


@pytest.mark.parametrize("prefix", ["v1", "/api/", "/a{b}", "/a b"])
def test_a_route_prefix_serve_would_refuse_is_a_config_error(prefix: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"serve.route_prefix={prefix}"])
    assert err.value.problems[0].startswith("serve.route_prefix: must start with '/'")
    assert load_config(None, ["serve.route_prefix=/steper"]).serve.route_prefix == "/steper"
