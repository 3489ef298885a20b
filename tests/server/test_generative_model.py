"""The synthetic LLM's model pieces without a server: config parameters (defaults, bad values), the tokenizer's
counts, the output-length and step-time distributions (seeded draws against their configured means), and that
a bad config leaves the model UNAVAILABLE in a real repository while the rest loads."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from tailmark.server.config import ConfigError, parse_config
from tailmark.server.default_repository import SYNTHETIC_CONFIGS, write_model
from tailmark.server.generative.engine import Engine
from tailmark.server.generative.settings import GenerativeSettings
from tailmark.server.generative.tokenizer import VOCABULARY, count_tokens, text_seed, token_texts
from tailmark.server.repository import Repository
from tailmark.server.stats import ModelStats

HEAD = SYNTHETIC_CONFIGS["synth-llm"].split("parameters", 1)[0]


def _settings(**parameters) -> GenerativeSettings:
    extra = "".join(f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n' for k, v in parameters.items())
    return GenerativeSettings.from_config(parse_config(HEAD + extra, name="m"))


def test_synth_llm_defaults_are_the_documented_ones():
    settings = GenerativeSettings.from_config(parse_config(SYNTHETIC_CONFIGS["synth-llm"], name="synth-llm"))
    assert settings == GenerativeSettings()  # the config spells out the class defaults
    assert (settings.prefill_ms(1, 1000), settings.decode_ms(1), settings.decode_ms(8)) == (70.0, 5.5, 9.0)
    assert settings.prefill_ms(0, 0) == 0 and settings.decode_ms(0) == 0


@pytest.mark.parametrize(
    ("parameters", "says"),
    [
        ({"decode_base_ms": "fast"}, "is not a number"),
        ({"max_num_seqs": "2.5"}, "whole number"),
        ({"prefill_base_ms": "-1"}, "must be >= 0"),
        ({"max_model_len": "0"}, "must be >= 1"),
        ({"output_length": "zipf"}, "one of max_tokens"),
    ],
)
def test_bad_parameters_are_refused_with_the_reason(parameters, says):
    with pytest.raises(ConfigError, match=says):
        _settings(**parameters)


def test_a_bad_config_leaves_that_model_unavailable_and_the_rest_serves(tmp_path):
    write_model(tmp_path, "good", SYNTHETIC_CONFIGS["synth-llm"])
    write_model(tmp_path, "bad", HEAD + 'parameters { key: "decode_base_ms" value: { string_value: "x" } }\n')
    repository = Repository(tmp_path)
    repository.load_all()
    assert repository.models["good"].ready
    assert "decode_base_ms='x' is not a number" in repository.models["bad"].reason


def test_token_counts():
    assert count_tokens("Hello, world!") == 6  # Hell o , worl d !
    assert count_tokens("") == 0 and count_tokens("   \n\t") == 0
    assert count_tokens("a b c") == 3 and count_tokens("abcdefghi") == 3  # four characters a token
    assert count_tokens("naïve café") == 3  # naïv e café: any script's letters are word characters
    text = "".join(token_texts(text_seed(0, 7, ""), 50))
    assert count_tokens(text) == 50 == len(text.split())  # generated text counts back to its length
    assert len(VOCABULARY) == len(set(VOCABULARY)) == 980


@pytest.mark.parametrize(("kind", "mean"), [("uniform", 50.5), ("exponential", 20.5), ("lognormal", 20.0)])
def test_output_lengths_follow_the_configured_distribution(kind, mean):
    engine = Engine(_settings(output_length=kind, output_mean_tokens=20, output_sigma=0.5), ModelStats("m", "1"))
    rng = np.random.default_rng(0)
    lengths = [engine.output_length(rng, 100, ignore_eos=False) for _ in range(4000)]
    assert min(lengths) >= 1 and max(lengths) <= 100
    assert statistics.fmean(lengths) == pytest.approx(mean, rel=0.06)  # exponential: ceil adds ~0.5
    assert {engine.output_length(rng, 100, ignore_eos=True) for _ in range(50)} == {100}
    assert engine.output_length(rng, 1, ignore_eos=False) == 1


def test_timing_sigma_scales_steps_by_a_mean_one_lognormal():
    engine = Engine(_settings(decode_base_ms=10, decode_per_sequence_ms=0, timing_sigma=0.3), ModelStats("m", "1"))
    steps = [engine._step_ms([], decoding=1) for _ in range(5000)]
    assert statistics.fmean(steps) == pytest.approx(10, rel=0.02)
    assert statistics.stdev(math.log(s) for s in steps) == pytest.approx(0.3, rel=0.05)
    exact = Engine(_settings(decode_base_ms=10, decode_per_sequence_ms=0), ModelStats("m", "1"))
    assert {exact._step_ms([], decoding=1) for _ in range(10)} == {10.0}
