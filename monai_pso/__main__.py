"""``python -m monai_pso`` runs the ``monai-pso`` command line."""

from monai_pso.cli.main import main

main()
