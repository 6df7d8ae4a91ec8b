import sys

from saveos_agent.cli import main

sys.exit(main())
