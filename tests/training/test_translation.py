"""The translation workload on real data: Debian's dict-de-en read by the loader, BLEU by sacrebleu, a test-sized
run to a looser target under the harness, and its log through the stock MLPerf checker.

CI installs dict-de-en through ./dev; without it the tests that need the dictionary skip and say so.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import shutil

import pytest
import sacrebleu
import sacrebleu.metrics

from tailmark.training.checker import CONFIG_DIR, check_log
from tailmark.training.context import RunContext
from tailmark.training.harness import Submission, run_once
from tailmark.training.mlperf_log import RunLog
from tailmark.training.workload import DataMissing, with_overrides
from tailmark.training.workloads import workload_class
from tailmark.training.workloads.translation import dictd
from tailmark.training.workloads.translation.text import corpus_bleu, decode, encode

needs_dictionary = pytest.mark.skipif(
    not dictd.dict_path().is_file(), reason=f"dict-de-en is not installed ({dictd.INSTALL}; ./dev does it as root)"
)

# Small enough to converge in about 25 s of one core (2 epochs of 100 steps, plus ~7 s reading the dictionary):
# short phrases, a faster warm-up, and a target that only says "it has started to translate" (an untrained model
# scores 0.00); the reference target takes minutes (training/README.md gives the measured time).
TEST_SIZED = {
    "max_chars": "12",
    "max_words": "2",
    "held_out": "300",
    "steps_per_epoch": "100",
    "learning_rate": "3e-3",
    "warmup_steps": "100",
}
TEST_TARGET = 0.5


@pytest.fixture(scope="module")
def default_pairs():
    hp = workload_class("translation").default_hparams()
    return dictd.load_pairs(dictd.dict_path(), hp.max_chars, hp.max_words, hp.held_out)


@needs_dictionary
def test_loader_reads_the_debian_package(default_pairs):
    cls = workload_class("translation")
    cls(cls.default_hparams()).verify_data()  # the installed file is the pinned dict-de-en 1.9-6
    train, held_out = default_pairs.train, default_pairs.held_out
    assert len(held_out) == 1000 and len(train) > 200_000
    everything = dict(train) | dict(held_out)
    assert not {s for s, _ in train} & {s for s, _ in held_out}  # no German source on both sides
    # entries as the dictionary has them: a compound, a phrase, a Ding line whose German and English alternatives
    # are aligned one to one ("A; Ais; As | A; A sharp; A flat"), and two German synonyms of one English word
    assert everything["Aalbestand"] == "eel stock"
    assert everything["Aal in Aspik"] == "Jellied Eel"
    assert everything["Ais"] == "A sharp" and everything["As"] == "A flat"
    assert everything["Aale"] == everything["Aalartige"] == "eels"
    # bracketed notes are gone ("Eel (on a menu)"), and every kept phrase fits the limits and the fixed alphabet
    assert everything["Aal"] == "Eel"
    hp = cls.default_hparams()
    for source, target in [*train[:5000], *held_out]:
        assert len(source) <= hp.max_chars and len(target) <= hp.max_chars and len(target.split()) <= hp.max_words
        assert set(source + target) <= set(dictd.ALPHABET)

    # the split depends on nothing but the data: the held-out sources are the 1,000 whose sha256 sorts first
    def rank(source):
        return hashlib.sha256(source.encode()).digest()

    assert max(rank(s) for s, _ in held_out) < min(rank(s) for s, _ in train)


def test_missing_package_is_one_clear_error(tmp_path, monkeypatch, cli):
    monkeypatch.setenv(dictd.DIR_ENV, str(tmp_path))
    cls = workload_class("translation")
    with pytest.raises(DataMissing, match="apt-get install dict-de-en"):
        cls(cls.default_hparams()).data_files()
    done = cli("train", "translation", "--runs", "1", "--output", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"tailmark train: German-English dictionary not found at {tmp_path / dictd.DICT_FILE}: "
        "install it with `apt-get install dict-de-en`"
    ]
    assert not (tmp_path / "out").exists()


def test_characters_round_trip():
    phrases = ["Aalbestand", "der Aachener Dom", "Süßwasseraale", "rock 'n' roll", ""]
    ids = encode(phrases, 21, eos=True)
    assert ids.shape == (5, 21) and decode(ids) == phrases
    with pytest.raises(ValueError, match="longer than 20"):
        encode(["x" * 21], 21, eos=True)


def sacrebleu_bleu2(hypotheses, references) -> float:
    """sacrebleu's own corpus BLEU up to bigrams, through its public class, with every other setting its default."""
    return sacrebleu.metrics.BLEU(max_ngram_order=2).corpus_score(hypotheses, [references]).score


def test_bleu_is_sacrebleus_corpus_bleu():
    references = ["the Aachen Cathedral", "eel stock", "to layer a plant", "fire point", "in my reckoning"]
    hypotheses = ["the Aachen cathedral", "eel stocks", "to layer a plant", "fire", "in my opinion"]
    expected = sacrebleu_bleu2(hypotheses, references)
    assert 0.0 < expected < 100.0
    assert corpus_bleu(hypotheses, references) == expected
    # and that is BLEU-2 as defined: brevity penalty times the geometric mean of the 1- and 2-gram precisions,
    # counted over the corpus (13a tokens, case-sensitive): 10/13 unigrams and 5/8 bigrams match, 13 of 14 tokens
    assert expected == pytest.approx(math.exp(1 - 14 / 13) * math.sqrt(10 / 13 * 5 / 8) * 100)
    assert corpus_bleu(references, references) == pytest.approx(100.0)


@needs_dictionary
def test_test_sized_run_reaches_its_target_and_passes_the_checker(tmp_path):
    workload, closed = with_overrides(workload_class("translation"), TEST_SIZED)
    assert not closed  # the data and model sizes are not tunable: an open-division run
    workload.spec = dataclasses.replace(workload.spec, target=TEST_TARGET, max_epochs=8)
    log_path = tmp_path / "result_0.txt"
    with RunLog(log_path) as log:
        outcome, trainer = run_once(workload, RunContext(seed=5), log, submission=Submission(system="testbox"))
    assert outcome.converged and outcome.accuracy >= TEST_TARGET, outcome.evals
    assert all(point.accuracy < TEST_TARGET for point in outcome.evals[:-1])
    # the harness's figure is sacrebleu's own corpus BLEU of the model's greedy translations
    hypotheses = trainer.translate(trainer.eval_src)
    references = [t for _, t in trainer.pairs.held_out]
    assert outcome.accuracy == sacrebleu_bleu2(hypotheses, references)
    # the stock checker, with the workload's configuration but the test's target
    config = (CONFIG_DIR / "transformer_de_en.yaml").read_text()
    reference_check = f">= {workload_class('translation').spec.target:.2f} "
    assert reference_check in config
    (tmp_path / "cfg").mkdir()
    shutil.copy(CONFIG_DIR / "common.yaml", tmp_path / "cfg" / "common.yaml")
    (tmp_path / "cfg" / "transformer_de_en.yaml").write_text(config.replace(reference_check, f">= {TEST_TARGET:.2f} "))
    verdict = check_log(log_path, "transformer_de_en", config=tmp_path / "cfg" / "transformer_de_en.yaml")
    assert verdict.passed, verdict.output
