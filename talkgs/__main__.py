import sys

from talkgs.cli import main

sys.exit(main())
