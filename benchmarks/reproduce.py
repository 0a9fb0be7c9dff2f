"""Re-run two headline results and compare them with the committed rows.

    python benchmarks/reproduce.py [--skip-flat-llm]

1. `shapesearch image` (bundled astronaut, ε = 0.1, seed 0, the CLI defaults) against the
   "ours" astronaut row of results/image_search.jsonl (shape, CR).
2. FLAT-LLM at ratio 0.2 on SmolLM2-135M, measured exactly as benchmarks/flat_llm.py does
   (32 × 512 calibration tokens, perplexity on 30 held-out 512-token windows), against the
   flat-llm @ 0.2 row of results/flat_llm.jsonl.

Prints one line per check with both values; exits 1 if a result differs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

from _report import RESULTS, load_rows


def astronaut() -> bool:
    row = next(r for r in load_rows(RESULTS / "image_search.jsonl")
               if r.get("image") == "astronaut" and r.get("method") == "ours" and r.get("eps") == 0.1)
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, "-m", "shapesearch.cli", "image", "--out", f"{tmp}/run", "--json"],
                             check=True, capture_output=True, text=True).stdout
    now = json.loads(out)
    same = now["shape"]["text"] == row["shape"] and abs(now["cr"] - row["cr"]) <= 1e-9 * row["cr"]
    print(f"astronaut ε=0.1 seed 0: committed {row['shape']} CR {row['cr']:.4f}; "
          f"now {now['shape']['text']} CR {now['cr']:.4f} -> {'same' if same else 'DIFFERENT'}")
    return same


def flat_llm() -> bool:
    import compressors
    from compressors.corpus import calibration_windows, wikipedia
    from compressors.lm_metrics import perplexity

    row = next(r for r in load_rows(RESULTS / "flat_llm.jsonl") if r["method"] == "flat-llm" and r["ratio"] == 0.2)
    model, tok = compressors.load_model("smollm2")
    calib = calibration_windows(tok, wikipedia("calibration"), 32, 512)
    compressors.compress(model, compressors.FlatLLMConfig(0.2), calibration=calib)
    now = perplexity(model, tok, wikipedia("evaluation"), window=512, max_windows=row["windows"])["perplexity"]
    # the same arithmetic on the same CPU repeats to the last digit; across CPUs allow rounding
    same = abs(now - row["perplexity"]) <= 1e-4 * row["perplexity"]
    print(f"flat-llm @ 0.2 perplexity: committed {row['perplexity']!r}; now {now!r} -> "
          f"{'same' if same else 'DIFFERENT'}")
    return same


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skip-flat-llm", action="store_true", help="only the image search (about 20 s)")
    args = p.parse_args()
    ok = astronaut()
    if not args.skip_flat_llm:
        ok = flat_llm() and ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
