"""Config loading: defaults, TOML over them, overrides last; unknown keys and wrong types are errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from onerec.config import ConfigError, apply_overrides, from_dict, load_section, parse_override, to_dict


@dataclasses.dataclass
class Inner:
    width: int = 4


@dataclasses.dataclass
class Example:
    lr: float = 1e-3
    steps: int = 10
    name: str = "x"
    flag: bool = False
    dims: list[int] = dataclasses.field(default_factory=lambda: [1, 2])
    mode: str | None = None
    inner: Inner = dataclasses.field(default_factory=Inner)

    def __post_init__(self) -> None:
        if self.steps <= 0:
            raise ConfigError(f"steps must be > 0, got {self.steps}")


def test_toml_then_overrides(tmp_path: Path) -> None:
    """The TOML file overrides defaults and --set overrides the file."""
    path = tmp_path / "c.toml"
    path.write_text('[stage]\nlr = 0.5\nname = "file"\n[stage.inner]\nwidth = 8\n[other]\nzzz = 1\n')
    cfg = load_section(Example, "stage", path, ["stage.steps=7", "model.q=2", "stage.inner.width=16"])
    assert (cfg.lr, cfg.steps, cfg.name, cfg.inner.width) == (0.5, 7, "file", 16)
    assert cfg.dims == [1, 2], "untouched default changed"


def test_override_of_unknown_section_is_error() -> None:
    """A typo in an override's section is refused, not silently ignored as another stage's override."""
    with pytest.raises(ConfigError, match="unknown section 'modle'"):
        load_section(Example, "stage", None, ["stage.steps=7", "modle.d_model=64"])
    # another stage's section is left to that stage
    assert load_section(Example, "stage", None, ["train.lr=0.1"]).lr == Example().lr


def test_unknown_key_is_error() -> None:
    with pytest.raises(ConfigError, match="unknown config key stage.stepz"):
        from_dict(Example, {"stepz": 3}, "stage")


@pytest.mark.parametrize(
    "data",
    [{"steps": "3"}, {"steps": 2.5}, {"flag": 1}, {"dims": [1, "a"]}, {"lr": "fast"}, {"inner": 3}],
)
def test_wrong_type_is_error(data: dict) -> None:
    with pytest.raises(ConfigError):
        from_dict(Example, data, "stage")


def test_int_promotes_to_float_and_post_init_validates() -> None:
    assert from_dict(Example, {"lr": 1}).lr == 1.0
    with pytest.raises(ConfigError, match="steps must be > 0"):
        from_dict(Example, {"steps": 0})


def test_override_parsing() -> None:
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("--a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("a.path=runs/x") == (["a", "path"], "runs/x")
    assert parse_override("data.test_start=2022-05-06") == (["data", "test_start"], "2022-05-06"), "dates stay strings"
    with pytest.raises(ConfigError):
        parse_override("novalue")
    assert apply_overrides({"a": {"b": 1}}, ["a.c=true"]) == {"a": {"b": 1, "c": True}}


def test_round_trip_through_dict() -> None:
    cfg = Example(lr=0.1, inner=Inner(width=3))
    assert from_dict(Example, to_dict(cfg)) == cfg
