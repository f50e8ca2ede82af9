"""PyInstaller's entry script: the frozen ``avatar-studio`` executable runs exactly the console script.

Why a file instead of pointing PyInstaller at ``avatar_studio/cli.py``: run as ``__main__`` that module
would be imported twice (once as ``__main__``, once as ``avatar_studio.cli`` by its own lazy imports).
"""

import sys

from avatar_studio.cli import main

if __name__ == "__main__":
    sys.exit(main())
