"""A synthetic LLM's timing and length model, read once from its config.pbtxt ``parameters``.

All keys are optional (defaults below); values are strings, as Triton's parameters are. One step of the
scheduler takes

    step_ms = prefill_base_ms + prefill_per_input_token_ms * (input tokens of the sequences admitted in the step)
            + decode_base_ms + decode_per_sequence_ms * decoding

(the prefill part only when the step admits a sequence, the decode part only when one is decoding), so a lone
request's time to first token is its prefill, every later token takes the decode step of the sequences in
flight, and prefills that arrive together share one step, as a real server batches them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from tailmark.protos import model_config_pb2 as mc
from tailmark.server.config import ConfigError, parameter

OUTPUT_LENGTHS = ("max_tokens", "uniform", "exponential", "lognormal")


@dataclass(frozen=True, slots=True)
class GenerativeSettings:
    # --- prefill: the step that yields a sequence's first token ---
    prefill_base_ms: float = 20.0
    prefill_per_input_token_ms: float = 0.05
    # --- decode: every later token ---
    decode_base_ms: float = 5.0
    decode_per_sequence_ms: float = 0.5
    timing_sigma: float = 0.0  # 0: exact; else each step's time is scaled by a lognormal draw of mean 1
    # --- capacity ---
    max_num_seqs: int = 64  # sequences stepped together; later arrivals wait for a slot
    max_model_len: int = 8192  # input + output tokens a request may ask for
    default_max_tokens: int = 64  # when the request gives no max_tokens
    # --- output length when the request does not set ignore_eos ---
    output_length: str = "max_tokens"  # max_tokens | uniform | exponential | lognormal
    output_mean_tokens: float = 32.0  # mean of exponential/lognormal (clipped to 1..max_tokens)
    output_sigma: float = 0.5  # lognormal shape
    # --- a server stall, to show coordinated omission in token latencies ---
    stall_ms: float = 0.0
    stall_after_requests: int = 0  # the step that admits request number N (from 1) takes stall_ms longer
    # --- seeds ---
    seed: int = 0  # text and lengths of requests without their own seed; the timing jitter

    @classmethod
    def from_config(cls, config: mc.ModelConfig) -> GenerativeSettings:
        source = f"model {config.name!r}"
        values = {}
        for field in fields(cls):
            name, default = field.name, field.default
            text = parameter(config, name, "")
            if not text:
                continue
            if isinstance(default, str):
                values[name] = text
                continue
            try:
                number = float(text)
            except ValueError:
                raise ConfigError(f"{source}: parameter {name}={text!r} is not a number") from None
            if isinstance(default, int):
                if not number.is_integer():
                    raise ConfigError(f"{source}: parameter {name}={text!r} must be a whole number")
                number = int(number)
            values[name] = number
        settings = cls(**values)
        settings.check(source)
        return settings

    def check(self, source: str) -> None:
        for name in (
            "prefill_base_ms",
            "prefill_per_input_token_ms",
            "decode_base_ms",
            "decode_per_sequence_ms",
            "timing_sigma",
            "stall_ms",
            "stall_after_requests",
            "output_sigma",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{source}: {name}={getattr(self, name)}; must be >= 0")
        for name in ("max_num_seqs", "max_model_len", "default_max_tokens", "output_mean_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{source}: {name}={getattr(self, name)}; must be >= 1")
        if self.output_length not in OUTPUT_LENGTHS:
            raise ConfigError(f"{source}: output_length={self.output_length!r}; one of {', '.join(OUTPUT_LENGTHS)}")

    def prefill_ms(self, admitted: int, input_tokens: int) -> float:
        """One step's prefill of ``admitted`` sequences holding ``input_tokens`` in all."""
        return self.prefill_base_ms + self.prefill_per_input_token_ms * input_tokens if admitted else 0.0

    def decode_ms(self, decoding: int) -> float:
        return self.decode_base_ms + self.decode_per_sequence_ms * decoding if decoding else 0.0
