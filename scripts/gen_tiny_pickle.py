"""A tiny random BERT saved as `pytorch_model.bin`, with transformers' outputs for it.

repro reads PyTorch pickles as well as safetensors; this fixture (about 60 KB of random
weights, no trained model) lets the test suite check that path against transformers without
torch at test time. Writes tests/fixtures/tiny_pickle/{config.json,vocab.txt,
pytorch_model.bin,expected.json}.

    pip install torch transformers
    python scripts/gen_tiny_pickle.py
"""

import json
import pathlib

import torch
from transformers import BertConfig, BertModel

OUT = pathlib.Path("tests/fixtures/tiny_pickle")
# The same vocabulary as repro::model::random::TINY_VOCAB.
VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "a", "the", "of", "and", "in", "is",
    "cat", "dog", "sat", "on", "mat", "cells", "protein", "gene", "cancer", "risk", "study",
    "air", "flow", "wing", "shock", "wave", "heat", "pressure", "boundary", "layer", "##s",
    "##ing", "##ed", "what", "how", "does", "effect", "high", "low", "speed", "model",
]
SENTENCES = ["the cat sat on the mat", "shock waves in the boundary layer of a wing"]


def wordpiece(sentence):
    """BERT's greedy longest-match-first WordPiece, enough for these lower-case sentences."""
    ids = [VOCAB.index("[CLS]")]
    for word in sentence.split():
        start = 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in VOCAB:
                    ids.append(VOCAB.index(piece))
                    start = end
                    break
            else:
                ids.append(VOCAB.index("[UNK]"))
                break
    return ids + [VOCAB.index("[SEP]")]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(42)
    config = BertConfig(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, initializer_range=0.2,
    )
    model = BertModel(config, add_pooling_layer=False).eval()
    (OUT / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    config.save_pretrained(OUT)
    # The legacy (non-zip) pickle format is what old checkpoints use; the zip format is
    # torch.save's default. Save the default, as current transformers does.
    torch.save(model.state_dict(), OUT / "pytorch_model.bin")
    rows = [wordpiece(sentence) for sentence in SENTENCES]
    width = max(len(row) for row in rows)
    input_ids = torch.tensor([row + [0] * (width - len(row)) for row in rows])
    attention_mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    expected = {
        "sentences": SENTENCES,
        "ids": input_ids.tolist(),
        "last_hidden_first_row": [
            [round(float(v), 6) for v in row] for row in out.hidden_states[-1][0]
        ],
    }
    (OUT / "expected.json").write_text(json.dumps(expected) + "\n")
    for path in sorted(OUT.iterdir()):
        print(path, path.stat().st_size)


if __name__ == "__main__":
    main()
