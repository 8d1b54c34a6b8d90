"""``python -m groupsnn`` is the ``groupsnn`` command (handy under ``torchrun -m groupsnn``)."""
import sys

from .cli import main

sys.exit(main())
