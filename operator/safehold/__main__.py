import sys

from safehold.cli.main import main

sys.exit(main())
