"""Build the "flow in a PCA-16 latent" comparison model for `benchmarks/quality.py`.

    python examples/train_toyworld_bundle.py --config configs/toyworld_pca16.json --no-install
    python benchmarks/pca16_model.py --pca-run runs/toyworld_pca/model --out runs/toyworld_pca/combined
    python benchmarks/quality.py --model runs/toyworld_pca/combined --out runs/toyworld_pca/quality

The PCA run uses the same encoder, data and forecaster settings as the bundled model, with
a PCA-16 compressor instead of the FeatureVAE (and no regression baseline or probes).
PCA reconstructs features in the encoder's space, so the bundled model's probe heads
decode its forecasts: the comparison isolates the latent space.
"""

from __future__ import annotations

import argparse

from featureflow.world import WorldModel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pca-run", required=True, help="model directory written by the PCA-16 pipeline run")
    ap.add_argument("--base", default="toyworld", help="model whose encoder and probe heads are reused")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    base = WorldModel.from_pretrained(args.base)
    pca = WorldModel.from_pretrained(args.pca_run)
    if pca.encoder.config != base.encoder.config:
        raise ValueError("the PCA run must use the same encoder configuration as the base model")
    model = WorldModel(base.encoder, pca.compressor, pca.forecaster, dict(base.probes.items()))
    model.metadata = dict(base.metadata)
    model.save_pretrained(args.out)
    print(f"wrote {args.out}: base encoder + probes, PCA-16 compressor + its flow forecaster")


if __name__ == "__main__":
    main()
