import sys

from psgvlm.cli import main

sys.exit(main())
