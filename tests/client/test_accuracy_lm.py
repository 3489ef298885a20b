"""``tailmark accuracy --lm``: a briefly trained TinyLM, exported with its held-out figure, served by a real server
and measured over the OpenAI route by the real CLI: VALID when the served next-byte accuracy matches the export's,
INVALID with the cause otherwise, one clear error when there is nothing to compare with."""

from __future__ import annotations

import json

import pytest
import torch

from support.runcli import tailmark
from support.serve import ServerProcess
from tailmark.client.accuracy_lm import held_out_windows
from tailmark.models.tiny_lm import TinyLM
from tailmark.training.workloads.lm import SIZES, eval_starts, windows_at
from tailmark.training.workloads.lm.corpus import corpus_dir, read_corpus
from tailmark.training.workloads.lm.export import write_export

ARCHITECTURE = {"d_model": 32, "nhead": 4, "layers": 2, "ff": 128, "context": 16}
WINDOWS = 12  # 12 x 16 = 192 positions, one request each


def briefly_trained(steps: int = 120) -> TinyLM:
    """A few seconds of AdamW on the training modules: far from the target, far above chance (~0.3)."""
    torch.manual_seed(0)
    model = TinyLM(**ARCHITECTURE)
    stream = torch.frombuffer(bytearray(read_corpus(corpus_dir()).train), dtype=torch.uint8).long()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = windows_at(stream, torch.randint(0, len(stream) - 17, (32,), generator=generator), 17)
        logits = model(batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), batch[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm-accuracy")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two OpenMP threads on a busy two-core host are many times slower
    try:
        model = briefly_trained()
        write_export(model, root / "lm", ARCHITECTURE, eval_windows=WINDOWS)
        write_export(model, root / "lm-no-figure", ARCHITECTURE)  # as an export without the corpus installed
    finally:
        torch.set_num_threads(threads)
    with ServerProcess(root, "--http-port", "0") as process:
        yield f"http://{process.rest_address}", root


def test_the_clients_windows_are_the_harness_windows():
    held = read_corpus(corpus_dir()).held_out
    for size in SIZES.values():
        stream = torch.frombuffer(bytearray(held), dtype=torch.uint8).long()
        harness = windows_at(stream, eval_starts(len(stream), size.context, size.eval_windows), size.context + 1)
        assert [bytes(w.tolist()) for w in harness] == held_out_windows(held, size.context, size.eval_windows)


def test_the_served_model_scores_its_trained_figure_over_the_wire(served, tmp_path):
    target, root = served
    config = (root / "lm" / "config.pbtxt").read_text()
    trained = float(config.split('key: "held_out_next_byte_acc"')[1].split('string_value: "')[1].split('"')[0])
    assert 0.2 < trained < 0.6  # a model that learnt something, so agreeing with it means something
    run = tailmark(
        "accuracy", "--lm", "--transport", "openai", "--target", target, "--model", "lm",
        "--out", str(tmp_path / "lm.json"),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr + run.stdout
    result = json.loads((tmp_path / "lm.json").read_text())
    assert result["verdict"] == "VALID" and result["cause"] is None and result["errors"] == {}
    assert result["positions"] == WINDOWS * 16 and result["windows"] == WINDOWS and result["context"] == 16
    assert result["expected"] == trained and abs(result["accuracy"] - trained) <= 0.005
    assert f"lm: next-byte accuracy {result['accuracy']:.4f} over the wire" in run.stdout and "VALID" in run.stdout

    wrong = tailmark(
        "accuracy", "--lm", "--transport", "openai", "--target", target, "--model", "lm", "--expected", "0.9",
    )  # fmt: skip
    assert wrong.returncode == 3, wrong.stderr
    assert f"INVALID: served {result['accuracy']:.4f} differs from the trained 0.9000" in wrong.stdout


def test_nothing_to_compare_with_or_no_such_model_is_one_clear_error(served):
    target, _ = served
    bare = tailmark("accuracy", "--lm", "--transport", "openai", "--target", target, "--model", "lm-no-figure")
    assert bare.returncode == 2 and "records no held-out figure" in bare.stderr and "--expected" in bare.stderr
    given = tailmark(
        "accuracy", "--lm", "--transport", "openai", "--target", target, "--model", "lm-no-figure",
        "--windows", "2", "--expected", "0.3", "--tolerance", "1",
    )  # fmt: skip
    assert given.returncode == 0 and "/32 positions of 2 held-out windows)" in given.stdout, given.stderr
    unknown = tailmark("accuracy", "--lm", "--transport", "openai", "--target", target, "--model", "nope")
    assert unknown.returncode == 2 and "does not serve model 'nope'" in unknown.stderr
    grpc = tailmark("accuracy", "--lm", "--target", "127.0.0.1:1", "--model", "lm")
    assert grpc.returncode == 2 and "give --transport openai" in grpc.stderr
