import sys

from fewframes.cli import main

sys.exit(main())
