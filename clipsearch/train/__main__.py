"""``python -m clipsearch.train RECIPE.toml [--set k=v ...] [--out DIR] [--resume]``, which
is what ``torchrun --nproc-per-node N -m clipsearch.train RECIPE.toml`` runs on each rank."""

from clipsearch.cli.train import standalone

standalone()
