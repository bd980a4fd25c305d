"""``python -m otlearn ...`` is the ``otlearn`` command (see :mod:`otlearn.cli`)."""
from otlearn.cli import main

if __name__ == "__main__":
    main()
