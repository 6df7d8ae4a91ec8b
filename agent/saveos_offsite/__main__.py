import sys

from saveos_offsite.cli import main

sys.exit(main())
