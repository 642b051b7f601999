"""`python -m nlakit ...`, the form torchrun launches: ``torchrun --nproc-per-node N -m nlakit train all ...``."""

from nlakit.cli import main

main()
