"""``python -m bundler`` is ``bundle``."""

from bundler.cli import main

if __name__ == "__main__":
    main()
