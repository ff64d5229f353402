"""Build a "flow in another latent space" comparison model for `benchmarks/quality.py`.

PCA-16 latent (one forecaster, so ``featureflow train`` rather than the bundle script)::

    featureflow train --config configs/toyworld_pca16.json
    python benchmarks/pca16_model.py --pca-run runs/toyworld_pca/model --out runs/toyworld_pca/combined
    python benchmarks/quality.py --model runs/toyworld_pca/combined --out runs/toyworld_pca/quality
    cp runs/toyworld_pca/quality/quality.json docs/benchmarks/quality_pca16.json

Raw features (no compression): the same with ``configs/toyworld_raw.json``,
``runs/toyworld_raw`` and ``docs/benchmarks/quality_raw.json``. Then
``python benchmarks/run_all.py --render-only`` adds them to ``docs/benchmarks.md``.

Each run uses the same encoder, data and forecaster settings as the bundled model with
another compressor instead of the FeatureVAE (and no regression baseline or probes). The
compressor reconstructs features in the encoder's space, so the bundled model's probe
heads decode its forecasts: the comparison isolates the latent space. The encoder and
feature stages are those of the bundle's config; copying the bundle run's ``encoder/`` and
``features/`` directories into the new workdir first skips their 20 minutes (the pipeline
reuses a finished stage).
"""

from __future__ import annotations

import argparse

from featureflow.world import WorldModel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pca-run", required=True, help="model directory written by the PCA-16 (or raw-feature) pipeline run")
    ap.add_argument("--base", default="toyworld", help="model whose encoder and probe heads are reused")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    base = WorldModel.from_pretrained(args.base)
    pca = WorldModel.from_pretrained(args.pca_run)
    if pca.encoder.config != base.encoder.config:
        raise ValueError("the comparison run must use the same encoder configuration as the base model")
    model = WorldModel(base.encoder, pca.compressor, pca.forecaster, dict(base.probes.items()))
    model.metadata = dict(base.metadata)
    model.save_pretrained(args.out)
    print(f"wrote {args.out}: base encoder + probes, {type(pca.compressor).__name__} compressor + its flow forecaster")


if __name__ == "__main__":
    main()
