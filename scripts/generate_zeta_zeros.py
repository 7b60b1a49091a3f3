"""Compute the imaginary parts γ_n of the first N nontrivial zeros of ζ(1/2 + it) with mpmath.

Writes the table shipped inside the package (``src/breath/layers/zeta_zeros.txt``), one zero per
line with 30 significant digits. Run once; the library reads the table and never needs mpmath.

    python scripts/generate_zeta_zeros.py --count 1024
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mpmath
from tqdm import tqdm

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "breath" / "layers" / "zeta_zeros.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1024, help="number of zeros (default 1024)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    mpmath.mp.dps = 40
    lines = [
        "# Imaginary parts of the first nontrivial zeros of the Riemann zeta function,",
        f"# gamma_1 .. gamma_{args.count}, computed by scripts/generate_zeta_zeros.py (mpmath.zetazero).",
    ]
    for n in tqdm(range(1, args.count + 1), desc="zeta zeros", unit="zero"):
        lines.append(mpmath.nstr(mpmath.zetazero(n).imag, 30, strip_zeros=False))
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.count} zeros to {args.out}")


if __name__ == "__main__":
    main()
