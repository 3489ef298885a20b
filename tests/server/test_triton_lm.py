"""A trained lm export (``backend "tiny_lm"``, training/workloads/lm/export.py) under the real ``tritonserver``
(nvidia-pytriton wheel, CPU) as the decoupled python-backend model ``tailmark export --triton-repo R --lm DIR``
writes: its stream equals ``complete()`` token for token, tailmark's own server on the same export answers the
same, and ``tailmark run --transport grpc-stream`` measures it. Triton's venv needs torch for it, installed there
on first use (deploy/triton/launch.py ``ensure_torch``: ~40 s of CPU); where that or Triton cannot run, the
tests skip and say why.
"""

from __future__ import annotations

import codecs

import pytest
import tritonclient.grpc as grpcclient

from support.runcli import results, scenario, tailmark
from support.serve import ServerProcess
from support.triton_stream import Stream, export_cli, skip_without_triton
from tailmark.deploy.triton.launch import TritonProcess, TritonUnavailable, ensure_torch

LM_ARCHITECTURE = {"d_model": 64, "nhead": 4, "layers": 2, "ff": 256, "context": 128}


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    """What a user's ``tailmark export --triton-repo R --lm EXPORT`` writes (synth-llm among it), EXPORT being an
    lm export as ``tailmark train lm --export-to`` lays it out (seeded random weights: decoding is the point)."""
    import torch

    from tailmark.models.tiny_lm import TinyLM
    from tailmark.training.workloads.lm.export import config_text

    root = tmp_path_factory.mktemp("triton-lm")
    lm = root / "lm-export" / "lm"
    (lm / "1").mkdir(parents=True)
    torch.manual_seed(3)
    torch.save(TinyLM(**LM_ARCHITECTURE).state_dict(), lm / "1" / "model.pt")
    (lm / "config.pbtxt").write_text(config_text("lm", LM_ARCHITECTURE))
    done = export_cli("--triton-repo", str(root / "repo"), "--lm", str(lm))
    assert done.returncode == 0, done.stderr
    assert "synth-llm (Triton)" in done.stdout and "repo/lm (Triton)" in done.stdout
    return root


@pytest.fixture(scope="module")
def triton_lm(repository):
    """Triton serving the export's lm, with torch added to its venv (first use: ~40 s of CPU to install), and the
    synth-llm the same export wrote (its tests are in test_triton_generative.py)."""
    skip_without_triton()
    try:
        ensure_torch()
    except TritonUnavailable as exc:
        pytest.skip(str(exc))
    only = ("--model-control-mode", "explicit", "--load-model", "lm", "--load-model", "synth-llm")
    with TritonProcess(repository / "repo", log_path=repository / "tritonserver-lm.log", extra=only) as process:
        yield process


@pytest.fixture
def lm_stream(triton_lm):
    opened = Stream(triton_lm.target)
    yield opened
    opened.close()


def test_the_export_cli_wrote_decoupled_python_models_triton_loads(triton_lm):
    with grpcclient.InferenceServerClient(triton_lm.target) as client:
        assert client.is_model_ready("lm") and client.is_model_ready("synth-llm")
        assert not client.is_model_ready("digits_cnn")  # exported beside them, not loaded here
        config = client.get_model_config("lm", as_json=True)["config"]
    assert config["backend"] == "python" and config["model_transaction_policy"]["decoupled"] is True
    assert config["parameters"]["context"]["string_value"] == "128"  # the architecture kept


@pytest.fixture
def one_torch_thread():
    """The in-process reference decodes on one thread: on a busy 2-core host two made it ~10x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    ("prompt", "max_tokens"),
    [
        ("def __init__(self, ", 8),  # 19 bytes + 8
        ("import os\n" + "class Reader:\n    def read(self, path):\n" * 3, 40),  # 130 bytes cut to 128: 1 token
        ("x = 1\n" * 20, 40),  # 120 bytes: the context fills after 9 tokens
        ("x = \u00e9t\u00e9", 5),  # multi-byte characters in the prompt
    ],
)
def test_the_lm_streams_completes_greedy_bytes_token_for_token(
    lm_stream, repository, one_torch_thread, prompt, max_tokens
):
    """One response per greedy byte token (its text: the byte through an incremental UTF-8 decoder), joining to
    ``complete()``; without stream, one response with the same text."""
    from tailmark.models.tiny_lm import encode
    from tailmark.training.workloads.lm.export import complete, load_exported

    model = load_exported(repository / "lm-export" / "lm")
    tokens = model.greedy_decode_cached(encode(prompt)[-model.context :], max_tokens)
    assert len(tokens) == min(max_tokens, model.context + 1 - min(len(prompt.encode()), model.context))
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pieces = [decoder.decode(bytes([t]), final=i == len(tokens) - 1).encode() for i, t in enumerate(tokens)]
    responses = lm_stream.generate("lm", prompt.encode(), max_tokens=max_tokens, stream=True)
    assert [text for _, text, _ in responses] == pieces
    assert [final for _, _, final in responses] == [False] * (len(tokens) - 1) + [True]
    assert b"".join(pieces).decode() == complete(model, prompt, max_tokens)
    whole = lm_stream.generate("lm", prompt.encode(), max_tokens=max_tokens)
    assert [text for _, text, _ in whole] == [complete(model, prompt, max_tokens).encode()]


@pytest.fixture(scope="module")
def tailmark_lm(repository):
    """tailmark's own server on the same lm export (its tiny_lm backend)."""
    with ServerProcess(repository / "lm-export") as process:
        yield process


def test_the_lm_answers_equal_tailmark_servers_for_the_same_export(lm_stream, tailmark_lm):
    """Both servers, the same export, the same ModelStreamInfer request: the same token responses, text for text."""
    ours = Stream(tailmark_lm.target)
    try:
        for prompt in ("def __init__(self, ", "for i in range(10):\n    "):
            theirs = lm_stream.generate("lm", prompt.encode(), max_tokens=20, stream=True)
            mine = ours.generate("lm", prompt.encode(), max_tokens=20, stream=True)
            # (an empty final response, which tailmark's lm backend sends after the last token, is no token)
            texts = [[t for _, t, _ in answer if t is not None] for answer in (theirs, mine)]
            assert texts[0] == texts[1] and len(theirs) == 20
    finally:
        ours.close()


def test_lm_export_usage_errors_are_one_line(tmp_path):
    done = export_cli("--output", str(tmp_path / "o"), "--lm", str(tmp_path))
    assert done.returncode == 2 and "give --triton-repo" in done.stderr
    done = export_cli("--triton-repo", str(tmp_path / "t"), "--lm", str(tmp_path / "missing"))
    assert done.returncode == 2 and "config.pbtxt" in done.stderr and "Traceback" not in done.stderr


def test_tailmark_run_over_grpc_stream_measures_the_lm_under_triton(triton_lm, tmp_path):
    """The same client against the trained-lm model: every answer streamed with no error, the served token counts
    reported by the model (12 bytes out each), a gap between every two responses that carry text."""
    out = tmp_path / "run"
    run = tailmark(
        "run", "--target", triton_lm.target, "--transport", "grpc-stream", "--model", "lm", "--scenario",
        "concurrency", "--concurrency", "2", "--input-tokens", "8", "--output-tokens", "12", "--duration", "1",
        "--warmup", "0", "--min-queries", "10", "--no-calibration", "--no-progress", "--out", str(out), timeout_s=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    everything = scenario(results(out), "concurrency")["classes"]["all"]
    assert everything["error_count"] == 0, everything["errors"]
    tokens = everything["tokens"]
    assert tokens["requests"] >= 10 and tokens["without_text"] == 0
    latency = tokens["latency_ms"]
    assert latency["ttft"]["count"] == tokens["requests"]
    assert tokens["token_source"]["output"] == {"usage": tokens["requests"]}
    assert tokens["output_tokens"]["p50"] == 12 == tokens["output_tokens"]["max"]
    assert 0 < latency["itl"]["count"] <= (12 - 1) * tokens["requests"], latency["itl"]  # "" texts are no chunk
