import sys

from dynofa.cli import main

sys.exit(main())
