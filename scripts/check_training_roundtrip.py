"""Checks that models trained by repro load in Hugging Face transformers and
sentence-transformers and compute what repro computes.

Given a cross-encoder directory (from `repro dev train-ce` or `repro::train::train_cross_encoder`)
and a dual-encoder directory (from `repro dev train-de` or `train_dual_encoder`), this script

* loads the cross encoder with `transformers.AutoModelForSequenceClassification` and compares
  its logits on a few fixed (query, document) pairs with `repro dev score`;
* loads the dual encoder with `sentence_transformers.SentenceTransformer` (from the
  `modules.json` repro wrote) and compares its embeddings of a few fixed texts with
  `repro dev embed`;

prints the maximum absolute differences as JSON and exits non-zero when one exceeds the
tolerance. Run from the repository root:

    python scripts/check_training_roundtrip.py --repro target/debug/repro --ce CE_DIR --de DE_DIR
"""

import argparse
import json
import subprocess
import sys

import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoModelForSequenceClassification, AutoTokenizer

TEXTS = [
    "0-dimensional biomaterials show inductive properties.",
    "The Cranfield experiments measured the effect of index language devices on retrieval.",
    "Naïve café owners' résumés — über-long hyphenated-words, numbers 3.14159 & symbols!",
    "Short.",
]

PAIRS = [
    ("what do biomaterials induce?", TEXTS[0]),
    ("index language devices", TEXTS[1]),
    ("index language devices", TEXTS[0]),
    ("short", TEXTS[3]),
]

MAX_LEN = 256


def repro_json(repro, *args):
    out = subprocess.run([repro, "dev", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def check_cross_encoder(repro, directory):
    args = ["score", "--model", directory, "--max-len", str(MAX_LEN)]
    for query, document in PAIRS:
        args += ["--query", query, "--document", document]
    ours = torch.tensor(repro_json(repro, *args)["scores"])
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    assert model.config.num_labels == 1, model.config.num_labels
    batch = tokenizer(
        [q for q, _ in PAIRS],
        [d for _, d in PAIRS],
        padding=True,
        truncation=True,
        max_length=MAX_LEN,
        return_tensors="pt",
    )
    with torch.no_grad():
        theirs = model(**batch).logits[:, 0]
    return ours, theirs


def check_dual_encoder(repro, directory):
    args = ["embed", "--model", directory, "--max-len", str(MAX_LEN)]
    for text in TEXTS:
        args += ["--text", text]
    ours = torch.tensor(repro_json(repro, *args)["embeddings"])
    model = SentenceTransformer(directory, device="cpu")
    modules = [type(module).__name__ for module in model]
    assert modules == ["Transformer", "Pooling"], modules
    theirs = model.encode(TEXTS, convert_to_tensor=True, normalize_embeddings=False)
    return ours, theirs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repro", default="target/debug/repro")
    parser.add_argument("--ce", help="cross-encoder directory trained by repro")
    parser.add_argument("--de", help="dual-encoder directory trained by repro")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    options = parser.parse_args()
    report = {}
    if options.ce:
        ours, theirs = check_cross_encoder(options.repro, options.ce)
        report["cross_encoder"] = {
            "max_abs_diff": float((ours - theirs).abs().max()),
            "max_abs_value": float(theirs.abs().max()),
            "repro": [round(float(v), 6) for v in ours],
            "transformers": [round(float(v), 6) for v in theirs],
        }
    if options.de:
        ours, theirs = check_dual_encoder(options.repro, options.de)
        report["dual_encoder"] = {
            "max_abs_diff": float((ours - theirs).abs().max()),
            "max_abs_value": float(theirs.abs().max()),
            "min_cosine": float(torch.nn.functional.cosine_similarity(ours, theirs).min()),
        }
    print(json.dumps(report, indent=2))
    worst = max(part["max_abs_diff"] for part in report.values()) if report else 0.0
    return 0 if worst <= options.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
