"""``python -m focalmix``: the same as the ``focalmix`` command."""

from focalmix.cli import main

if __name__ == "__main__":
    main()
