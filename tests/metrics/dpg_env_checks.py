"""dpgbench's mPLUG backend, checked inside .venv-dpg (made by scripts/make_dpg_env.sh; launched
by tests/metrics/test_dpgbench.py; the main run does not collect this file: its name does not
start with ``test_``).

A tiny mPLUG-VQA model is published in the layout of ``damo/mplug_visual-question-answering_
coco_large_en`` -- ``configuration.json`` (modelscope's task/model/pipeline types),
``config.yaml`` (MPlugConfig: ViT-L-14 vision, ``vision_width`` 1024, so the large model's
``visn_fc`` projection is used), ``config_bert.json`` (BERT encoder/fusion/decoder layers),
a BERT ``vocab.txt`` with BERT's special-token ids ([CLS]=101, [SEP]=102: mPLUG's beam search
starts and ends on them) and ``pytorch_model.bin`` -- with 1 layer everywhere. Its weights are
drawn from a fixed numpy stream over the tensors that modelscope's own ``MPlug`` builds, and
its answer head is limited to "yes" / "no" then [SEP], so it answers yes or no depending on
the image and the question. modelscope's own ``pipeline(Tasks.visual_question_answering,
model=folder)`` loads it, as the metric does, and is the reference. Nothing is downloaded.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import hashlib  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from cdm_bench.errors import MissingDependencyError  # noqa: E402  (cdm_bench first: its torchvision hook)
from cdm_bench.evaluate import evaluate  # noqa: E402
from cdm_bench.generate import generate  # noqa: E402
from cdm_bench.metric import missing_packages  # noqa: E402
from cdm_bench.prompts import PROMPT_SOURCES, load_prompt_set  # noqa: E402
from cdm_bench.registry import METRICS  # noqa: E402
from metrics.dpgbench import MPLUG_ID, DPGBench, MPLUGBackend, dpg_score  # noqa: E402

modelscope = pytest.importorskip("modelscope")
# a model this small runs fastest on one thread (measured: 0.02 s per answer; 0.2 s on two
# threads while the other core is busy)
torch.set_num_threads(1)

# BERT's layout: [PAD]=0, [unused0..98], [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103, then words
SPECIAL = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["yes", "no", "is", "are", "there", "a", "an", "the", "it", "two", "cat", "dog", "dogs", "box", "tree",
         "park", "night", "red", "blue", "wooden", "on", "in", "?"]
VOCAB = SPECIAL + WORDS
YES_NO_GAP = 30.0   # answer-head bias: [SEP] over yes/no over the rest (yes/no then [SEP], nothing else)
YES_NO_SCALE = 10.0  # the yes/no rows of the answer head: image and question move the answer
IMAGE_SCALE = 0.2    # the image features' LayerNorm: image and question both move the answer
YES_SHIFT = -17.9    # extra bias on "yes" (calibrated on torch 2.13.0 CPU: about half the answers are "yes")

# a small DPG-Bench CSV in ELLA's columns: (item_id, proposition_id, dependency, broad, detailed, tuple, question)
TEXT = {"p1": "a red cat on a blue box", "p2": "two dogs in a park at night", "p3": "a wooden tree"}
QUESTIONS = [
    ("p1", 1, "0", "entity", "whole", "entity - whole (cat)", "Is there a cat?"),
    ("p1", 2, "0", "entity", "whole", "entity - whole (box)", "Is there a box?"),
    ("p1", 3, "1", "attribute", "color", "attribute - color (cat, red)", "Is the cat red?"),
    ("p1", 4, "1,2", "relation", "spatial", "relation - spatial (cat, box, on)", "Is the cat on the box?"),
    ("p2", 1, "0", "entity", "whole", "entity - whole (dogs)", "Are there dogs?"),
    ("p2", 2, "1", "other", "count", "other - count (dogs, ==2)", "Are there two dogs?"),
    ("p2", 3, "0", "global", "time", "global - time (night)", "Is it night?"),
    ("p3", 1, "0", "entity", "whole", "entity - whole (tree)", "Is there a tree?"),
    ("p3", 2, "1", "attribute", "texture", "attribute - texture (tree, wooden)", "Is the tree wooden?"),
]


# -- the tiny model in the published layout ---------------------------------------------------------
def write_configs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    (folder / "configuration.json").write_text(json.dumps({
        "framework": "pytorch", "task": "visual-question-answering", "model": {"type": "mplug"},
        "pipeline": {"type": "visual-question-answering"}, "preprocessor": {"type": "mplug-tasks-preprocessor"}}))
    (folder / "config.yaml").write_text(yaml.safe_dump({
        "bert_config": "config_bert.json", "image_res": 28, "vision_width": 1024, "distill": False,
        "clip_name": "ViT-L-14", "eos": "[SEP]", "min_length": 1, "max_length": 10, "beam_size": 2,
        "clip_embed_dim": 32, "clip_image_resolution": 28, "clip_vision_layers": 1, "clip_vision_width": 1024,
        "clip_vision_patch_size": 14, "clip_context_length": 8, "clip_vocab_size": 64,
        "clip_transformer_width": 32, "clip_transformer_heads": 2, "clip_transformer_layers": 1}))
    (folder / "config_bert.json").write_text(json.dumps({
        "architectures": ["BertForMaskedLM"], "model_type": "bert", "vocab_size": len(VOCAB), "hidden_size": 32,
        "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 1, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02,
        "layer_norm_eps": 1e-12, "max_position_embeddings": 64, "type_vocab_size": 2, "pad_token_id": 0,
        "encoder_width": 32, "text_encoder_layers": 1, "fusion_layers": 1, "text_decode_layers": 1,
        "use_cache": False}))
    return folder


def seeded_state(model) -> dict:
    """Every float tensor from a fixed numpy stream (matrices ~1/sqrt(fan_in), norms ~1; tied
    tensors drawn once), so the answers depend on the image and the question, not on torch's
    init code; the image features are scaled by IMAGE_SCALE, so the question matters as much as
    the image. The answer head allows "yes" / "no" and then [SEP] only, its yes/no rows scaled
    by YES_NO_SCALE and "yes" shifted by YES_SHIFT (about half the answers are "yes")."""
    rng, ids, state, tied = np.random.default_rng(0), {t: i for i, t in enumerate(VOCAB)}, {}, {}
    for k, v in model.state_dict().items():
        if not v.is_floating_point() or v.ndim == 0:
            state[k] = v.clone()
            continue
        if v.data_ptr() in tied:  # the decoder's output matrix is its input embedding
            state[k] = state[tied[v.data_ptr()]]
            continue
        tied[v.data_ptr()] = k
        if v.ndim >= 2:
            a = rng.normal(0.0, 1.0 / np.sqrt(np.prod(v.shape[1:])), v.shape)
        else:
            norm_weight = k.endswith("weight") and ("norm" in k.lower() or ".ln_" in k)
            a = rng.normal(0.0, 0.1, v.shape) + (1.0 if norm_weight else 0.0)
        state[k] = torch.from_numpy(a.astype(np.float32))
    for k in ("visn_layer_norm.weight", "visn_layer_norm.bias"):
        state[k] = state[k] * IMAGE_SCALE
    head = state["text_decoder.cls.predictions.decoder.weight"]
    assert head is state["text_decoder.bert.embeddings.word_embeddings.weight"]
    head[[ids["yes"], ids["no"]]] *= YES_NO_SCALE
    bias = torch.full((len(VOCAB),), -YES_NO_GAP)
    bias[ids["yes"]], bias[ids["no"]], bias[ids["[SEP]"]] = YES_SHIFT, 0.0, YES_NO_GAP
    state["text_decoder.cls.predictions.bias"] = state["text_decoder.cls.predictions.decoder.bias"] = bias
    return state


@pytest.fixture(scope="module")
def mplug_dir(tmp_path_factory):
    """The tiny model: modelscope's own MPlug builds the tensors, pytorch_model.bin holds them."""
    from modelscope.models.multi_modal.mplug import MPlug

    folder = write_configs(tmp_path_factory.mktemp("mplug") / "mplug_vqa_tiny")
    model = MPlug.from_pretrained(str(folder), load_checkpoint=False)
    assert type(model).__name__ == "MPlugForVisualQuestionAnswering" and model.large  # the large model's visn_fc
    assert len(model.tokenizer) == len(VOCAB), f"tokenizer has {len(model.tokenizer)} tokens, not {len(VOCAB)}"
    torch.save(seeded_state(model), folder / "pytorch_model.bin")
    return folder


@pytest.fixture(scope="module")
def reference(mplug_dir):
    """modelscope's own VQA pipeline on the tiny folder: (PIL image, question) -> answer."""
    from modelscope.pipelines import pipeline
    from modelscope.utils.constant import Tasks

    pipe = pipeline(Tasks.visual_question_answering, model=str(mplug_dir), device="cpu")
    return lambda image, question: str(pipe({"image": image, "question": question})["text"])


# -- prompts, runs ------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def _register():
    from cdm_bench.dpg_source import DPGBenchSource

    PROMPT_SOURCES.register("dpg", DPGBenchSource, overwrite=True)
    METRICS.register("dpgbench", DPGBench, overwrite=True)


@pytest.fixture
def prompts(tmp_path):
    import csv

    from cdm_bench.dpg_source import DPG_COLUMNS

    data = tmp_path / "dpg_bench.csv"
    with open(data, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(DPG_COLUMNS)
        for item, pid, dep, broad, detailed, tup, q in QUESTIONS:
            row = {"item_id": item, "text": TEXT[item], "keywords": "dense", "proposition_id": pid,
                   "dependency": dep, "category_broad": broad, "category_detailed": detailed, "tuple": tup,
                   "question_natural_language": q}
            w.writerow([row[c] for c in DPG_COLUMNS])
    spec = tmp_path / "dpg-bench.yaml"
    spec.write_text(yaml.safe_dump({"name": "dpg-bench", "version": "t", "description": "test", "license": "x",
                                    "count": 3, "default_metrics": ["dpgbench"],
                                    "source": {"type": "dpg", "path": data.name,
                                               "sha256": hashlib.sha256(data.read_bytes()).hexdigest()}}))
    return load_prompt_set(spec)


def mplug_spec(mplug_dir, tmp_path, **opts) -> dict:
    return {"name": "dpgbench", "backend": "mplug", "backend_options": {"model": str(mplug_dir)},
            "answers_dir": str(tmp_path / "answers"), **opts}


def run_images(run):
    from PIL import Image

    from cdm_bench.rundir import RunDir

    records = RunDir(run).read_manifest()
    return records, [Image.fromarray(a) for a in RunDir(run).load_images(records)]


# -- the checks -------------------------------------------------------------------------------------------
def test_the_package_check_reports_only_the_missing_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert missing_packages(MPLUGBackend.requires) == []  # every module set-up imports, imported as it does
    # ... and what `pipeline(Tasks.visual_question_answering, ...)` imports beyond `requires`: the VQA
    # pipeline module (modelscope's OFA code: fairseq, torchaudio, librosa, cv2, ...) and the
    # configuration.json reader (simplejson, sortedcontainers)
    assert missing_packages(["modelscope.pipelines.multi_modal.visual_question_answering_pipeline:"
                             "VisualQuestionAnsweringPipeline", "modelscope.fileio.format.jsonplus"]) == []
    with pytest.raises(MissingDependencyError) as err:
        DPGBench().check()
    msg = str(err.value)
    assert "needs package" not in msg and "\n" not in msg, msg
    assert MPLUG_ID in msg and "not in the local modelscope cache" in msg and "snapshot_download" in msg, msg
    with pytest.raises(MissingDependencyError, match=r"needs the mPLUG model folder .* \(not found") as err:
        DPGBench(backend_options={"model": str(tmp_path / "nowhere")}).check()
    assert "needs package" not in str(err.value)


def test_the_backend_answers_as_modelscopes_own_pipeline(mplug_dir, reference, tmp_path, prompts):
    run = generate({"generator": "dummy", "name": "d"}, prompts, tmp_path / "run", 2, progress=False)
    records, images = run_images(run)
    pairs = [(im, q["question"]) for r, im in zip(records, images) for q in r["questions"]]
    backend = MPLUGBackend(model=str(mplug_dir))
    backend.setup()
    try:
        ours = backend.answer([p[0] for p in pairs], [p[1] for p in pairs])
    finally:
        backend.teardown()
    want = [reference(im, q) for im, q in pairs]
    print(f"\nanswers: {ours}")
    assert ours == want
    assert set(ours) == {"yes", "no"}  # both answers occur, so the agreement (and the scores) mean something
    by_image = [tuple(a for (im, _), a in zip(pairs, ours) if im is image) for image in images]
    assert len(set(by_image)) > 1  # the answers depend on the image
    assert any(len(set(a)) > 1 for a in by_image)  # ... and on the question


def test_evaluate_end_to_end_with_l1_l2(mplug_dir, reference, tmp_path, prompts):
    import pandas as pd

    run = generate({"generator": "dummy", "name": "d"}, prompts, tmp_path / "run", 2, progress=False)
    res = evaluate(run, [mplug_spec(mplug_dir, tmp_path)], batch_size=2, chunk_size=4,
                   progress=False)["metrics"]["dpgbench"]
    assert res["status"] == "ok", res
    records, images = run_images(run)
    # the reference: modelscope's own pipeline on the same images, then ELLA's rules (dpg_score,
    # checked against hand-computed values in test_dpgbench.py)
    answers = [[reference(im, q["question"]) for q in r["questions"]] for r, im in zip(records, images)]
    want = [dpg_score(a, r["questions"]) for a, r in zip(answers, records)]
    got = pd.read_parquet(run / "scores.parquet")["dpgbench"].tolist()
    print(f"\nanswers: {answers}\nscores: {got}, value {res['value']}")
    assert got == pytest.approx(want, abs=1e-12)
    assert 0 < res["value"] < 100 and len(set(got)) > 1
    assert res["value"] == pytest.approx(100 * np.mean(want), abs=1e-9)
    l2 = {}
    for a, r in zip(answers, records):
        for ans, q in zip(a, r["questions"]):
            l2.setdefault(q["tuple"].split("(")[0].strip(), []).append(float(ans == "yes"))
    assert {k: v for k, v in res["values"].items() if k.startswith("L2/")} == pytest.approx(
        {f"L2/{k}": 100 * np.mean(v) for k, v in l2.items()}, abs=1e-9)
    assert {k.split("/")[0] for k in res["values"]} == {"L1", "L2"}
    assert res["backend"]["name"] == "mplug" and res["backend"]["model"] == str(mplug_dir)
    assert res["backend"]["model_fingerprint"]  # the local model's content is part of the identity


def test_a_folder_without_weights_is_refused_by_check(mplug_dir, tmp_path):
    """check() looks for every file of the model folder: one without its weights is refused
    before anything is scored, in one line naming what a folder must hold."""
    import shutil

    from cdm_bench.errors import MissingDependencyError

    bare = tmp_path / "no-weights"
    shutil.copytree(mplug_dir, bare, ignore=shutil.ignore_patterns("pytorch_model.bin"))
    m = DPGBench(backend_options={"model": str(bare)})
    with pytest.raises(MissingDependencyError, match="without all of .*pytorch_model.bin"):
        m.check()
