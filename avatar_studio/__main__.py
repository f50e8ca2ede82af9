"""Allow ``python -m avatar_studio`` as a synonym of the ``avatar-studio`` command."""

from avatar_studio.cli import main

raise SystemExit(main())
